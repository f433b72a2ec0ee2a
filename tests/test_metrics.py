import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from csgis.metrics import batch_metrics, image_metrics, psnr, ssim, tensor_to_uint8


def _pair(shape, seed):
    """A uint8 image and a noisy, slightly blurred version of it (SSIM well inside (0, 1))."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, shape).astype(np.uint8)
    smooth = ndimage.uniform_filter(gt.astype(np.float64), size=3, axes=(0, 1))
    pred = np.clip(smooth + rng.normal(0, 8, shape), 0, 255).round().astype(np.uint8)
    return pred, gt


def _skimage_ssim(pred, gt):
    kwargs = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    if pred.ndim == 3:
        kwargs["channel_axis"] = -1
    return structural_similarity(pred, gt, **kwargs)


def _numpy_paper_ssim(pred, gt):
    """Zero-padded 11x11 Gaussian SSIM on [0,1], per channel, mean over everything (pure NumPy/SciPy)."""
    x = pred.astype(np.float64) / 255.0
    y = gt.astype(np.float64) / 255.0
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    maps = []
    for c in range(x.shape[2]):
        f = lambda a: ndimage.convolve(a, window, mode="constant", cval=0.0)
        a, b = x[..., c], y[..., c]
        mu_a, mu_b = f(a), f(b)
        var_a, var_b, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        maps.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(maps))


@pytest.mark.parametrize("shape", [(37, 53, 3), (48, 32, 3), (37, 53), (11, 12, 3)])
def test_standard_convention_equals_skimage(shape):
    pred, gt = _pair(shape, seed=sum(shape))
    assert ssim(pred, gt, "standard") == pytest.approx(_skimage_ssim(pred, gt), abs=1e-6)
    assert psnr(pred, gt, "standard") == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=255), abs=1e-6)
    assert 0.1 < ssim(pred, gt, "standard") < 0.99


@pytest.mark.parametrize("shape", [(37, 53, 3), (37, 53), (20, 9, 3)])
def test_paper_ssim_equals_independent_numpy(shape):
    pred, gt = _pair(shape, seed=len(shape) * 7 + shape[1])
    assert ssim(pred, gt, "paper") == pytest.approx(_numpy_paper_ssim(pred, gt), abs=1e-6)
    assert ssim(gt, gt, "paper") == pytest.approx(1.0, abs=1e-12)


def test_psnr_known_values_and_identical_images():
    gt = np.full((12, 13, 3), 100, np.uint8)
    # Off by one grey level everywhere: MSE = 1/255^2 -> 20 log10(255) = 48.1308 dB.
    for convention in ("paper", "standard"):
        assert psnr(gt + 1, gt, convention) == pytest.approx(20 * math.log10(255), abs=1e-9)
        assert psnr(gt, gt, convention) == math.inf
    assert psnr(gt + 1, gt) == pytest.approx(48.1308, abs=1e-4)
    metrics = image_metrics(gt, gt)
    assert set(metrics) == {"psnr_paper", "ssim_paper", "psnr_standard", "ssim_standard"}
    assert metrics["psnr_paper"] == math.inf and metrics["ssim_standard"] == pytest.approx(1.0)


def test_input_checks():
    a = np.zeros((12, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, np.zeros((12, 13, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        ssim(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="convention"):
        ssim(a, a, "basicsr")
    with pytest.raises(ValueError, match="smaller"):
        ssim(np.zeros((10, 12, 3), np.uint8), np.zeros((10, 12, 3), np.uint8), "standard")


def test_tensor_to_uint8_clips_and_rounds():
    x = torch.tensor([-0.2, 0.0, 0.4 / 255, 1.6 / 255, 0.5, 1.0, 1.7]).view(1, 1, 7).expand(3, 1, 7)
    out = tensor_to_uint8(x)
    assert out.shape == (1, 7, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 0, 0, 2, 128, 255, 255]   # 127.5 rounds half to even


def test_batch_metrics_quantise_then_measure():
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 16, 16)
    pred = (gt + 0.05 * torch.randn(2, 3, 16, 16)).clamp(0, 1)
    results = batch_metrics(pred, gt)
    assert len(results) == 2
    for i, result in enumerate(results):
        assert result == image_metrics(tensor_to_uint8(pred[i]), tensor_to_uint8(gt[i]))


def test_region_metrics_look_only_inside_the_mask():
    from csgis.metrics import image_metrics, region_metrics
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-9, 10, gt.shape), 0, 255).astype(np.uint8)
    whole = region_metrics(pred, gt, np.ones((24, 32), bool))
    full = image_metrics(pred, gt)
    assert whole["psnr"] == pytest.approx(full["psnr_paper"]) and whole["ssim"] == pytest.approx(full["ssim_paper"])
    left = np.zeros((24, 32), bool)
    left[:, :16] = True
    pred[:, 16:] = 0  # ruin the right half: the left half's numbers do not move
    assert region_metrics(pred, gt, left)["mse"] == pytest.approx(np.mean((pred[:, :16].astype(float) - gt[:, :16]) ** 2))
    with pytest.raises(ValueError, match="non-empty"):
        region_metrics(pred, gt, np.zeros((24, 32), bool))
