"""CSGIS-Net training losses (docs/method.md §3): L1, multi-scale SSIM, edge, DTV, contrastive, segmentation.

Formulas follow the authors' release (defs/losses.py, defs/Myloss.py, defs/pytorch_ssim.py and
the HDC_cons_seg branch of train+cons+seg.py). Every term is computed in float32 (float64 when
given float64) with autocast switched off where precision matters (SSIM, Gram matrices).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from csgis.config import CHOICES, LossConfig
from csgis.data.manifest import IGNORE_INDEX
from csgis.models.segmenter import imagenet_normalize

if TYPE_CHECKING:  # only for annotations; the loss reads attributes, any object with them works
    from csgis.models.smoother import SmootherOutput
    from csgis.models.vgg import VGGFeatures

GRAM_TAPS = ("relu1_2", "relu2_2")                       # triplet VGG term (release: Vgg16, j < 2)
RATIO_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
RATIO_WEIGHTS = (1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
NEGATIVE_MODES = CHOICES["loss.negatives"]


def vgg_taps(contrastive_form: str) -> tuple[str, ...]:
    """The VGG16 layers a contrastive form reads (what a VGGFeatures for this loss must provide)."""
    return {"triplet": GRAM_TAPS, "ratio": RATIO_TAPS}[contrastive_form]


def _no_autocast(x: torch.Tensor):
    """Context that disables autocast on x's device (precision-sensitive sums)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# ----------------------------------------------------------------------------- reconstruction
def l1_loss(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over everything (B,C,H,W) -> scalar."""
    return F.l1_loss(out.float(), gt.float())


def gaussian_window(window: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """1-D normalised Gaussian of `window` taps centred on window // 2 (the 2-D window is its outer product)."""
    offsets = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _gaussian_filter(maps: torch.Tensor, g: torch.Tensor, padding: str) -> torch.Tensor:
    """Depthwise 2-D Gaussian (separable: rows then columns); 'same' zero-pads, 'valid' crops."""
    channels, size = maps.shape[1], g.numel()
    pad = size // 2 if padding == "same" else 0
    # Separable filtering equals the 2-D window with zero padding exactly: zero rows/columns stay zero.
    rows = g.view(1, 1, 1, size).expand(channels, 1, 1, size)
    cols = g.view(1, 1, size, 1).expand(channels, 1, size, 1)
    maps = F.conv2d(maps, rows, padding=(0, pad), groups=channels)
    return F.conv2d(maps, cols, padding=(pad, 0), groups=channels)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0, padding: str = "same") -> torch.Tensor:
    """Gaussian SSIM per channel, mean over everything; x, y (B,C,H,W) -> scalar (see ssim_map)."""
    return ssim_map(x, y, window, sigma, data_range, padding).mean()


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
             data_range: float = 1.0, padding: str = "same") -> torch.Tensor:
    """Gaussian SSIM per channel and pixel; x, y (B,C,H,W) -> (B,C,H',W') (H'=H with 'same').

    padding="same": zero 'same' padding (the authors' pytorch_ssim, docs/method.md §3 and the paper metric);
    padding="valid": only full windows (skimage / BasicSR metric). C1=(0.01 L)^2, C2=(0.03 L)^2,
    population (not sample) variances. float64 inputs are computed in float64, others in float32.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim expects two (B,C,H,W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if padding == "valid" and min(x.shape[-2:]) < window:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than the {window}x{window} SSIM window")
    dtype = _compute_dtype(x, y)
    with _no_autocast(x):
        x, y = x.to(dtype), y.to(dtype)
        channels = x.shape[1]
        g = gaussian_window(window, sigma, dtype=dtype, device=x.device)
        moments = _gaussian_filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), g, padding)
        mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(channels, dim=1)
        var_x = e_xx - mu_x * mu_x
        var_y = e_yy - mu_y * mu_y
        cov_xy = e_xy - mu_x * mu_y
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        return ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
            (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))


def multiscale_ssim_loss(out: torch.Tensor, gt: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """scales - sum_s SSIM(out_s, gt_s), each scale a 2x2 max-pool of the previous; (B,C,H,W) -> scalar in [0, 2*scales]."""
    if min(out.shape[-2:]) < 2 ** (scales - 1):
        raise ValueError(f"multi-scale SSIM with {scales} scales needs images of at least "
                         f"{2 ** (scales - 1)} px, got {tuple(out.shape[-2:])}")
    dtype = _compute_dtype(out, gt)
    with _no_autocast(out):
        out, gt = out.to(dtype), gt.to(dtype)
        total = ssim(out, gt)
        for _ in range(scales - 1):
            out, gt = F.max_pool2d(out, 2, 2), F.max_pool2d(gt, 2, 2)
            total = total + ssim(out, gt)
    return scales - total


# ----------------------------------------------------------------------------- edge and DTV
def edge_loss(edge_logits: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE-with-logits, SUM-reduced; edge_logits, edge (B,1,H,W), edge in {0,1}.

    Positive pixels weigh N_neg/N, negative pixels N_pos/N, counted over the whole batch.
    """
    with _no_autocast(edge_logits):
        logits = edge_logits.float()
        target = (edge >= 0.5).float()
        total = float(target.numel())
        positives = target.sum()
        negatives = total - positives
        weight = torch.where(target > 0, negatives / total, positives / total)
        return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")


def gradient_prior(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked squared forward differences with wrap-around; x (B,C,H,W), mask (B,1,H,W) -> scalar.

    Each direction's masked sum is divided by C*(H-1)*W (vertical) or C*H*(W-1) (horizontal),
    the sum by the batch size, as in the release's GDLoss (the wrap-around row/column is summed
    but not counted).
    """
    with _no_autocast(x):
        x, mask = x.float(), mask.float()
        batch, channels, height, width = x.shape
        # roll(-1)[i] = x[i+1], and the last row/column wraps to the first.
        vertical = (mask * (torch.roll(x, -1, dims=2) - x) ** 2).sum()
        horizontal = (mask * (torch.roll(x, -1, dims=3) - x) ** 2).sum()
        return (vertical / (channels * (height - 1) * width)
                + horizontal / (channels * height * (width - 1))) / batch


def dtv_loss(out: "SmootherOutput", edge: torch.Tensor, coarse_factor: float = 10.0) -> torch.Tensor:
    """coarse_factor * G(coarse, 1-edge) + G(prediction, 1-edge); edge (B,1,H,W) in {0,1} -> scalar."""
    smooth_region = 1.0 - edge.float()
    return coarse_factor * gradient_prior(out.coarse, smooth_region) + gradient_prior(out.prediction, smooth_region)


# ----------------------------------------------------------------------------- contrastive
def gray_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean |gray(x) - gray(y)| over the batch, gray = channel mean; (B,C,H,W) -> scalar."""
    return (x.float().mean(dim=1) - y.float().mean(dim=1)).abs().mean()


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix F F^T / (C H W) in float32; f (B,C,H,W) -> (B,C,C)."""
    batch, channels, height, width = f.shape
    with _no_autocast(f):
        flat = f.to(_compute_dtype(f)).reshape(batch, channels, height * width)
        return torch.bmm(flat, flat.transpose(1, 2)) / (channels * height * width)


def _gram_distance(grams_a: dict, grams_b: dict, scale: dict | None = None) -> torch.Tensor:
    """Sum over taps of the summed squared Gram difference (release: MSELoss(reduction='sum')),
    each tap divided by scale[tap] when given."""
    return sum(((grams_a[name] - grams_b[name]) ** 2).sum() / (1.0 if scale is None else scale[name])
               for name in GRAM_TAPS)


def _as_list(neg: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [neg] if isinstance(neg, torch.Tensor) else list(neg)


def triplet_contrastive(pred: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | Sequence[torch.Tensor],
                        vgg: "VGGFeatures | None", k1: float = 0.3, k2: float = 0.04,
                        gram_normalize: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Triplet hinges (B,3,H,W) -> (pixel + vgg, {"contrastive_pixel", "contrastive_vgg"} detached).

    pixel = max(D(pred,pos) - D(pred,neg) + k1, 0), D = gray_l1;
    vgg = max(G(pred,pos) - G(pred,neg) + k2, 0), G = Gram distance over relu1_2 and relu2_2.
    Each hinge is taken over the whole batch (one scalar, as released). A list of negatives
    averages the loss over them. vgg=None leaves the VGG term out (pixel term only).
    gram_normalize divides each tap's distances by the positive's squared Gram norm |G(pos)|^2,
    so they are relative (order 0.01-1 whatever the VGG weights; not in the paper: a substitute
    for the demo's random VGG16, whose raw Gram distances of ~1e-6 leave the hinge at its margin).
    """
    negatives = _as_list(neg)
    d_pos = gray_l1(pred, pos)
    pixel = sum(torch.relu(d_pos - gray_l1(pred, n) + k1) for n in negatives) / len(negatives)
    if vgg is None:
        vgg_term = torch.zeros((), device=pred.device)
    else:
        pred_grams = {k: gram(v) for k, v in vgg(pred, layers=GRAM_TAPS).items()}
        with torch.no_grad():  # targets: no graph through the positive/negative features
            pos_grams = {k: gram(v) for k, v in vgg(pos, layers=GRAM_TAPS).items()}
            neg_grams = [{k: gram(v) for k, v in vgg(n, layers=GRAM_TAPS).items()} for n in negatives]
        scale = {k: (g ** 2).sum().clamp_min(1e-12) for k, g in pos_grams.items()} if gram_normalize else None
        g_pos = _gram_distance(pred_grams, pos_grams, scale)
        vgg_term = sum(torch.relu(g_pos - _gram_distance(pred_grams, ng, scale) + k2)
                       for ng in neg_grams) / len(negatives)
    return pixel + vgg_term, {"contrastive_pixel": pixel.detach(), "contrastive_vgg": vgg_term.detach()}


def ratio_contrastive(pred: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | Sequence[torch.Tensor],
                      vgg: "VGGFeatures") -> torch.Tensor:
    """sum_i w_i L1(V_i(pred), V_i(pos)) / (L1(V_i(pred), V_i(neg)) + 1e-7) over relu1_2..relu4_3 -> scalar.

    w = 1/16, 1/8, 1/4, 1 (the release's ContrastLoss, whose misspelt `self.weights` crashes).
    A list of negatives averages the loss over them.
    """
    negatives = _as_list(neg)
    pred_features = vgg(pred, layers=RATIO_TAPS)
    with torch.no_grad():
        pos_features = vgg(pos, layers=RATIO_TAPS)
        neg_features = [vgg(n, layers=RATIO_TAPS) for n in negatives]
    total = torch.zeros((), device=pred.device)
    for weight, name in zip(RATIO_WEIGHTS, RATIO_TAPS):
        anchor = pred_features[name].float()
        d_pos = F.l1_loss(anchor, pos_features[name].float())
        for features in neg_features:
            d_neg = F.l1_loss(anchor, features[name].float())
            total = total + weight * d_pos / (d_neg + 1e-7) / len(negatives)
    return total


def select_negatives(batch: dict, mode: str, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Negative teachers for the contrastive loss -> list of (B,3,H,W) tensors (two for "both").

    coin: one fair coin per batch picks batch["over_smoothed"] or batch["input"] (release);
    per_sample: the coin is flipped per sample; both: [over_smoothed, input] (the loss averages);
    over / input: always that one. `generator` is a CPU torch.Generator (None: global RNG).
    """
    if mode == "over":
        return [batch["over_smoothed"]]
    if mode == "input":
        return [batch["input"]]
    if mode == "both":
        return [batch["over_smoothed"], batch["input"]]
    over, under = batch["over_smoothed"], batch["input"]
    if mode == "coin":
        use_over = torch.rand((), generator=generator).item() < 0.5
        return [over if use_over else under]
    if mode == "per_sample":
        use_over = torch.rand(over.shape[0], generator=generator) < 0.5
        use_over = use_over.to(over.device).view(-1, *([1] * (over.dim() - 1)))
        return [torch.where(use_over, over, under)]
    raise ValueError(f"negatives mode {mode!r} is not one of {list(NEGATIVE_MODES)}")


# ----------------------------------------------------------------------------- segmentation
def segmentation_loss(seg_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, ignore 255, mean over labelled pixels (0 when none); logits (B,K,H,W), label (B,H,W) long."""
    with _no_autocast(seg_logits):
        summed = F.cross_entropy(seg_logits.float(), label.long(), ignore_index=IGNORE_INDEX, reduction="sum")
        # Dividing by max(count, 1) avoids a NaN on fully ignored crops without a host sync.
        count = (label != IGNORE_INDEX).sum().clamp(min=1)
        return summed / count


# ----------------------------------------------------------------------------- total
class CSGISLoss(nn.Module):
    """Weighted sum of the terms of docs/method.md §3; forward(out, batch) -> (total, parts).

    parts holds detached scalars: each computed term's weighted contribution under its name
    (l1, ssim, edge, dtv, contrastive, segmentation; they add up to `total`), the unweighted
    triplet components contrastive_pixel / contrastive_vgg, and total. Terms whose weight is 0
    are not computed and not listed. vgg and segmenter are used, not owned: they are not
    registered as sub-modules, so their device and train/eval mode stay with the caller.
    """

    def __init__(self, cfg: LossConfig, vgg: "VGGFeatures | None" = None, segmenter: nn.Module | None = None,
                 generator: torch.Generator | None = None, seed: int = 0):
        super().__init__()
        for key in ("negatives", "contrastive_form", "seg_input"):
            allowed = CHOICES[f"loss.{key}"]
            if getattr(cfg, key) not in allowed:
                raise ValueError(f"loss.{key} {getattr(cfg, key)!r} is not one of {list(allowed)}")
        if cfg.contrastive > 0:
            if vgg is None:
                raise ValueError("loss.contrastive > 0 needs a VGGFeatures (see csgis.models.vgg)")
            needed = vgg_taps(cfg.contrastive_form)
            missing = [name for name in needed if name not in vgg.layers]
            if missing:
                raise ValueError(f"the {cfg.contrastive_form} contrastive loss needs VGG taps {missing}")
        if cfg.segmentation > 0 and segmenter is None:
            raise ValueError("loss.segmentation > 0 needs a segmentation network")
        self.cfg = cfg
        # Plain attributes on purpose (see class docstring): nn.Module would register them.
        object.__setattr__(self, "vgg", vgg)
        object.__setattr__(self, "segmenter", segmenter)
        # The coin for negatives comes from this generator so runs are reproducible.
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def forward(self, out: "SmootherOutput", batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """out: SmootherOutput; batch: input, gt, over_smoothed (B,3,H,W), edge (B,1,H,W), seg (B,H,W)."""
        cfg, gt = self.cfg, batch["gt"]
        weighted: dict[str, torch.Tensor] = {}
        parts: dict[str, torch.Tensor] = {}
        if cfg.l1:
            weighted["l1"] = cfg.l1 * (l1_loss(out.coarse, gt) + l1_loss(out.prediction, gt))
        if cfg.ssim:
            weighted["ssim"] = cfg.ssim * (multiscale_ssim_loss(out.coarse, gt, cfg.ssim_scales)
                                           + multiscale_ssim_loss(out.prediction, gt, cfg.ssim_scales))
        if cfg.edge:
            weighted["edge"] = cfg.edge * edge_loss(out.edge_logits, batch["edge"])
        if cfg.dtv:
            weighted["dtv"] = cfg.dtv * dtv_loss(out, batch["edge"], cfg.dtv_coarse)
        if cfg.contrastive:
            negatives = select_negatives(batch, cfg.negatives, self.generator)
            if cfg.contrastive_form == "triplet":
                contrastive, pieces = triplet_contrastive(out.prediction, gt, negatives, self.vgg,
                                                          cfg.margin_pixel, cfg.margin_vgg, cfg.gram_normalize)
                parts.update(pieces)
            else:
                contrastive = ratio_contrastive(out.prediction, gt, negatives, self.vgg)
            weighted["contrastive"] = cfg.contrastive * contrastive
        if cfg.segmentation:
            seg_input = out.prediction if cfg.seg_input == "prediction" else batch["input"]
            if cfg.seg_normalize:
                seg_input = imagenet_normalize(seg_input)
            weighted["segmentation"] = cfg.segmentation * segmentation_loss(self.segmenter(seg_input), batch["seg"])
        if not weighted:
            raise ValueError("every loss weight is 0: nothing to optimise")
        total = sum(weighted.values())
        parts.update({name: value.detach() for name, value in weighted.items()})
        parts["total"] = total.detach()
        return total, parts
