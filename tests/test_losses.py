import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csgis.config import LossConfig
from csgis.losses import (CSGISLoss, dtv_loss, edge_loss, gradient_prior, gram, gray_l1, l1_loss,
                          multiscale_ssim_loss, ratio_contrastive, segmentation_loss, select_negatives,
                          ssim, triplet_contrastive)
from csgis.models.vgg import VGGFeatures


@pytest.fixture(scope="module")
def vgg():
    """The two taps of the triplet loss (deeper layers cost time on a busy CPU)."""
    torch.manual_seed(0)
    return VGGFeatures(layers=("relu1_2", "relu2_2"), weights="random")


@pytest.fixture(scope="module")
def vgg_full():
    torch.manual_seed(0)
    return VGGFeatures(weights="random")


def _images(seed, shape=(2, 3, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


def _output(prediction, coarse=None, edge_logits=None):
    coarse = prediction * 0.9 if coarse is None else coarse
    if edge_logits is None:
        edge_logits = torch.zeros(prediction.shape[0], 1, *prediction.shape[-2:])
    return SimpleNamespace(edge_logits=edge_logits, coarse=coarse, residual=prediction - coarse,
                           prediction=prediction)


def _batch(seed=0, shape=(2, 3, 16, 16)):
    b, _, h, w = shape
    gt = _images(seed, shape)
    label = torch.randint(0, 4, (b, h, w), generator=torch.Generator().manual_seed(seed))
    label[:, 0, :] = 255
    return {"input": (gt + 0.3 * _images(seed + 1, shape)).clamp(0, 1), "gt": gt,
            "over_smoothed": F.avg_pool2d(gt, 5, 1, 2), "edge": (_images(seed + 2, (b, 1, h, w)) > 0.7).float(),
            "seg": label}


def _reference_ssim(x, y):
    """The authors' form: one 11x11 2-D window, zero padding 5, groups = channels."""
    g = torch.tensor([math.exp(-(i - 5) ** 2 / (2 * 1.5 ** 2)) for i in range(11)], dtype=torch.float64)
    g = g / g.sum()
    window = torch.outer(g, g).expand(x.shape[1], 1, 11, 11).to(x.dtype)
    f = lambda t: F.conv2d(t, window, padding=5, groups=x.shape[1])
    mu_x, mu_y = f(x), f(y)
    var_x, var_y, cov = f(x * x) - mu_x ** 2, f(y * y) - mu_y ** 2, f(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return (((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))).mean()


def test_l1_and_ssim_losses_vanish_on_identical_images():
    x = _images(0)
    y = _images(1)
    assert l1_loss(x, x).item() == 0.0
    assert l1_loss(x, y).item() == pytest.approx((x - y).abs().mean().item())
    assert multiscale_ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert multiscale_ssim_loss(x, y).item() > 0.5
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_equals_the_two_dimensional_window_form():
    x, y = _images(2, (1, 3, 20, 17)).double(), _images(3, (1, 3, 20, 17)).double()
    assert ssim(x, y).dtype == torch.float64
    assert ssim(x, y).item() == pytest.approx(_reference_ssim(x, y).item(), abs=1e-12)
    # Four scales: full, then 2x2 max-pools (20x17 -> 10x8 -> 5x4 -> 2x2).
    expected, a, b = 0.0, x, y
    for _ in range(4):
        expected += _reference_ssim(a, b).item()
        a, b = F.max_pool2d(a, 2), F.max_pool2d(b, 2)
    assert multiscale_ssim_loss(x, y).item() == pytest.approx(4 - expected, abs=1e-12)


def test_edge_loss_matches_hand_computation():
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.5, -0.5, -2.0, 0.25],
                           [3.0, 1.0, -1.5, -0.75], [0.0, 0.1, -0.2, 2.5]]).view(1, 1, 4, 4)
    label = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float32).view(1, 1, 4, 4)
    n, n_pos = 16, 4
    expected = 0.0
    for i in range(4):
        for j in range(4):
            z, t = float(logits[0, 0, i, j]), float(label[0, 0, i, j])
            p = 1.0 / (1.0 + math.exp(-z))
            weight = (n - n_pos) / n if t == 1 else n_pos / n
            expected += -weight * (t * math.log(p) + (1 - t) * math.log(1 - p))
    assert edge_loss(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_prior_matches_loops_with_wraparound():
    x = _images(4, (2, 3, 3, 4)).double()
    mask = (_images(5, (2, 1, 3, 4)) > 0.4).double()
    b, c, h, w = x.shape
    vertical = horizontal = 0.0
    for n in range(b):
        for k in range(c):
            for i in range(h):
                for j in range(w):
                    m = float(mask[n, 0, i, j])
                    vertical += m * float(x[n, k, (i + 1) % h, j] - x[n, k, i, j]) ** 2
                    horizontal += m * float(x[n, k, i, (j + 1) % w] - x[n, k, i, j]) ** 2
    expected = (vertical / (c * (h - 1) * w) + horizontal / (c * h * (w - 1))) / b
    assert gradient_prior(x, mask).item() == pytest.approx(expected, rel=1e-6)
    out = _output(x.float(), coarse=x.float() * 0.5)
    edge = 1 - mask.float()
    assert dtv_loss(out, edge, 10.0).item() == pytest.approx(
        10 * gradient_prior(x * 0.5, mask).item() + expected, rel=1e-5)


def test_gram_matches_einsum():
    f = _images(6, (2, 5, 4, 3))
    expected = torch.einsum("bchw,bdhw->bcd", f, f) / (5 * 4 * 3)
    assert torch.allclose(gram(f), expected, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gram(f.bfloat16()).dtype == torch.float32


def _gram_distance_numpy(vgg, a, b):
    total = 0.0
    features_a, features_b = vgg(a), vgg(b)
    for name in ("relu1_2", "relu2_2"):
        fa, fb = features_a[name].double().numpy(), features_b[name].double().numpy()
        _, c, h, w = fa.shape
        ga = np.einsum("bchw,bdhw->bcd", fa, fa) / (c * h * w)
        gb = np.einsum("bchw,bdhw->bcd", fb, fb) / (c * h * w)
        total += float(((ga - gb) ** 2).sum())
    return total


def test_gram_normalize_makes_the_random_vgg_term_relative(vgg):
    """Raw Gram distances of a random VGG16 are tiny, so the hinge sits at its margin (the demo's
    logged contrastive_vgg); divided by |G(gt)|^2 per tap they are relative and the term moves."""
    gt = _images(7)
    pred = (gt + 0.1 * _images(8)).clamp(0, 1)
    neg = torch.full_like(gt, 0.5)
    raw = _gram_distance_numpy(vgg, pred, gt)
    assert raw < 1e-3  # far below the paper's k2 = 0.04
    _, parts = triplet_contrastive(pred, gt, neg, vgg, k2=0.04)
    assert parts["contrastive_vgg"].item() == pytest.approx(0.04, abs=1e-3)
    expected = 0.0
    for name in ("relu1_2", "relu2_2"):
        fp, fg, fn = (vgg(x)[name].double().numpy() for x in (pred, gt, neg))
        _, c, h, w = fp.shape
        gp, gg, gn = (np.einsum("bchw,bdhw->bcd", f, f) / (c * h * w) for f in (fp, fg, fn))
        expected += (((gp - gg) ** 2).sum() - ((gp - gn) ** 2).sum()) / (gg ** 2).sum()
    _, parts = triplet_contrastive(pred, gt, neg, vgg, k2=0.04, gram_normalize=True)
    assert parts["contrastive_vgg"].item() == pytest.approx(max(expected + 0.04, 0.0), rel=1e-4, abs=1e-7)
    assert abs(expected) > 100 * raw  # relative distances are of another order


def test_triplet_hinges_active_and_inactive(vgg):
    gt = _images(7)
    pred = (gt + 0.1 * _images(8)).clamp(0, 1)
    far, near = torch.zeros_like(gt), (pred + 0.02).clamp(0, 1)

    def gray_distance(a, b):
        return float(np.abs(a.numpy().mean(axis=1) - b.numpy().mean(axis=1)).mean())

    g_pos = _gram_distance_numpy(vgg, pred, gt)
    for neg in (far, near):
        d_pos, d_neg = gray_distance(pred, gt), gray_distance(pred, neg)
        g_neg = _gram_distance_numpy(vgg, pred, neg)
        delta = g_pos - g_neg
        for k2 in (-delta + 0.5 * abs(delta) + 1e-4, -delta - 0.5 * abs(delta) - 1e-4):
            loss, parts = triplet_contrastive(pred, gt, neg, vgg, k1=0.3, k2=k2)
            expected_pixel = max(d_pos - d_neg + 0.3, 0.0)
            expected_vgg = max(g_pos - g_neg + k2, 0.0)
            assert parts["contrastive_pixel"].item() == pytest.approx(expected_pixel, abs=1e-6)
            assert parts["contrastive_vgg"].item() == pytest.approx(expected_vgg, rel=1e-4, abs=1e-9)
            assert loss.item() == pytest.approx(expected_pixel + expected_vgg, rel=1e-4, abs=1e-6)
    # far negative: pixel hinge inactive; near negative: active.
    assert gray_distance(pred, gt) - gray_distance(pred, far) + 0.3 < 0
    assert gray_distance(pred, gt) - gray_distance(pred, near) + 0.3 > 0
    assert gray_l1(pred, gt).item() == pytest.approx(gray_distance(pred, gt), abs=1e-7)


def test_ratio_form_runs_and_decreases_toward_the_positive(vgg_full):
    vgg = vgg_full
    shape = (1, 3, 8, 8)
    gt, neg = _images(10, shape), _images(12, shape)
    start = (neg + 0.05 * _images(11, shape)).clamp(0, 1)    # starts next to the negative
    values = [ratio_contrastive((1 - t) * start + t * gt, gt, neg, vgg).item() for t in (0.0, 0.5, 1.0)]
    assert values[0] > values[1] > values[2]
    assert values[2] == pytest.approx(0.0, abs=1e-6)
    pred = start.clone().requires_grad_(True)
    ratio_contrastive(pred, gt, neg, vgg).backward()
    assert pred.grad.abs().sum().item() > 0


def test_negative_selection_modes():
    batch = _batch(shape=(6, 3, 8, 8))
    over, under = batch["over_smoothed"], batch["input"]
    assert select_negatives(batch, "over")[0] is over
    assert select_negatives(batch, "input")[0] is under
    both = select_negatives(batch, "both")
    assert both[0] is over and both[1] is under

    def picks(seed):
        g = torch.Generator().manual_seed(seed)
        return [select_negatives(batch, "coin", g)[0] is over for _ in range(20)]
    assert picks(3) == picks(3) and 0 < sum(picks(3)) < 20
    expected = [torch.rand((), generator=torch.Generator().manual_seed(3)).item() < 0.5]
    assert picks(3)[:1] == expected

    mixed = select_negatives(batch, "per_sample", torch.Generator().manual_seed(4))[0]
    use_over = torch.rand(6, generator=torch.Generator().manual_seed(4)) < 0.5
    for i in range(6):
        assert torch.equal(mixed[i], over[i] if use_over[i] else under[i])
    with pytest.raises(ValueError, match="bogus"):
        select_negatives(batch, "bogus")


def test_both_negatives_average_the_two_losses(vgg):
    batch = _batch()
    pred = (batch["gt"] + 0.05).clamp(0, 1)
    over_loss, _ = triplet_contrastive(pred, batch["gt"], batch["over_smoothed"], vgg)
    input_loss, _ = triplet_contrastive(pred, batch["gt"], batch["input"], vgg)
    both_loss, _ = triplet_contrastive(pred, batch["gt"], [batch["over_smoothed"], batch["input"]], vgg)
    assert both_loss.item() == pytest.approx((over_loss.item() + input_loss.item()) / 2, rel=1e-5)


def test_segmentation_loss_ignores_255():
    logits = _images(13, (1, 3, 2, 2))
    label = torch.tensor([[[0, 2], [255, 1]]])
    expected = F.cross_entropy(logits[:, :, [0, 0, 1], [0, 1, 1]].transpose(1, 2).reshape(3, 3),
                               torch.tensor([0, 2, 1]))
    assert segmentation_loss(logits, label).item() == pytest.approx(expected.item(), rel=1e-6)
    assert segmentation_loss(logits, torch.full((1, 2, 2), 255)).item() == 0.0


@pytest.mark.parametrize("seg_input", ["prediction", "input"])
def test_segmentation_gradient_reaches_smoother_only_from_prediction(seg_input):
    torch.manual_seed(0)
    smoother = nn.Conv2d(3, 3, 3, padding=1)
    segmenter = nn.Conv2d(3, 4, 1).requires_grad_(False)
    batch = _batch(shape=(2, 3, 8, 8))
    cfg = LossConfig(l1=0, ssim=0, edge=0, contrastive=0, segmentation=1.0, seg_input=seg_input)
    loss = CSGISLoss(cfg, vgg=None, segmenter=segmenter)
    prediction = smoother(batch["input"])
    total, parts = loss(_output(prediction), batch)
    assert set(parts) == {"segmentation", "total"}
    (total + 0.0 * prediction.sum()).backward()  # keep the graph alive when the term ignores it
    gradient = smoother.weight.grad.abs().sum().item()
    if seg_input == "prediction":
        assert gradient > 0
    else:
        assert gradient == 0.0
        assert not total.requires_grad


class CountingVGG(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.layers, self.calls = inner, inner.layers, 0

    def forward(self, x, layers=None):
        self.calls += 1
        return self.inner(x, layers)


def test_total_skips_zero_weight_terms_and_adds_up(vgg):
    batch = _batch()
    out = _output((batch["gt"] + 0.1 * _images(20)).clamp(0, 1), edge_logits=_images(21, (2, 1, 16, 16)) - 0.5)
    counting = CountingVGG(vgg)
    no_contrast = CSGISLoss(LossConfig(contrastive=0, segmentation=0), vgg=counting)
    total, parts = no_contrast(out, batch)
    assert counting.calls == 0
    assert set(parts) == {"l1", "ssim", "edge", "total"}
    expected = (l1_loss(out.coarse, batch["gt"]) + l1_loss(out.prediction, batch["gt"])
                + 0.1 * (multiscale_ssim_loss(out.coarse, batch["gt"]) + multiscale_ssim_loss(out.prediction, batch["gt"]))
                + 0.001 * edge_loss(out.edge_logits, batch["edge"]))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)

    full = CSGISLoss(LossConfig(segmentation=0, dtv=1.0, negatives="over"), vgg=counting)
    total, parts = full(out, batch)
    assert counting.calls == 3                          # pred, positive, one negative
    assert set(parts) == {"l1", "ssim", "edge", "dtv", "contrastive", "contrastive_pixel",
                          "contrastive_vgg", "total"}
    weighted = sum(parts[k] for k in ("l1", "ssim", "edge", "dtv", "contrastive"))
    assert total.item() == pytest.approx(weighted.item(), rel=1e-6)
    assert all(not v.requires_grad for v in parts.values())
    with pytest.raises(ValueError, match="VGG"):
        CSGISLoss(LossConfig(segmentation=0), vgg=None)


def test_total_under_autocast_matches_float32(vgg):
    batch = _batch()
    out = _output((batch["gt"] + 0.1 * _images(22)).clamp(0, 1))
    cfg = LossConfig(segmentation=0, contrastive=0)
    reference, _ = CSGISLoss(cfg)(out, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, parts = CSGISLoss(cfg)(out, batch)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        triplet, _ = CSGISLoss(LossConfig(segmentation=0, negatives="input"), vgg=vgg)(out, batch)
    assert torch.isfinite(triplet)


def test_full_loss_backpropagates_through_the_smoother(vgg):
    from csgis.models.smoother import Smoother
    torch.manual_seed(0)
    smoother = Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1)
    segmenter = nn.Conv2d(3, 4, 1).requires_grad_(False)
    batch = _batch()
    loss = CSGISLoss(LossConfig(dtv=1.0), vgg=vgg, segmenter=segmenter, seed=1)
    total, parts = loss(smoother(batch["input"]), batch)
    total.backward()
    assert set(parts) == {"l1", "ssim", "edge", "dtv", "contrastive", "contrastive_pixel", "contrastive_vgg",
                          "segmentation", "total"}
    gradients = [p.grad for p in smoother.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in gradients)
    assert sum(g.abs().sum().item() for g in gradients) > 0
