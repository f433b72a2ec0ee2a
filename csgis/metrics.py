"""PSNR / SSIM on saved uint8 results, in two named conventions (docs/method.md §6).

paper:    RGB scaled to [0,1] in float64, PSNR = 10 log10(1/MSE), SSIM = the training loss's
          zero-padded 11x11 Gaussian SSIM (sigma 1.5, C1=0.01^2, C2=0.03^2), mean over everything.
standard: uint8 RGB as float64 in [0,255], PSNR = 10 log10(255^2/MSE), SSIM over the valid window
          only, per channel, averaged; equals skimage structural_similarity(gaussian_weights=True,
          sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1).
No crop border, no Y channel. Both PSNRs are the same number up to rounding; they are kept
separate so every table names its convention. Identical images give PSNR = inf.

Segmentation: a confusion matrix over labelled pixels (IGNORE_INDEX left out), pixel accuracy and
mean IoU over the classes present in label or prediction.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from csgis.data.manifest import IGNORE_INDEX
from csgis.losses import ssim as _torch_ssim
from csgis.losses import ssim_map as _torch_ssim_map

CONVENTIONS = ("paper", "standard")


def _check(pred: np.ndarray, gt: np.ndarray) -> None:
    for name, image in (("pred", pred), ("gt", gt)):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 numpy array, got "
                            f"{getattr(image, 'dtype', type(image).__name__)}")
        if image.ndim not in (2, 3):
            raise ValueError(f"{name} must be (H,W) or (H,W,C), got shape {image.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")


def _to_nchw(image: np.ndarray, scale: float) -> torch.Tensor:
    """(H,W) or (H,W,C) uint8 -> (1,C,H,W) float64 divided by `scale`."""
    array = image.astype(np.float64) / scale
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def psnr(pred: np.ndarray, gt: np.ndarray, convention: str = "paper") -> float:
    """PSNR in dB of uint8 (H,W,3) or (H,W) images; inf when identical."""
    _check(pred, gt)
    _check_convention(convention)
    # paper: RGB in [0,1], peak 1; standard: [0,255], peak 255 (skimage data_range=255).
    scale, peak = (255.0, 1.0) if convention == "paper" else (1.0, 255.0)
    diff = pred.astype(np.float64) / scale - gt.astype(np.float64) / scale
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def ssim(pred: np.ndarray, gt: np.ndarray, convention: str = "paper") -> float:
    """SSIM of uint8 (H,W,3) or (H,W) images in the named convention (see module docstring)."""
    _check(pred, gt)
    _check_convention(convention)
    if convention == "paper":
        value = _torch_ssim(_to_nchw(pred, 255.0), _to_nchw(gt, 255.0), data_range=1.0, padding="same")
    else:
        value = _torch_ssim(_to_nchw(pred, 1.0), _to_nchw(gt, 1.0), data_range=255.0, padding="valid")
    return float(value)


def image_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Both conventions -> {psnr_paper, ssim_paper, psnr_standard, ssim_standard}."""
    return {
        "psnr_paper": psnr(pred, gt, "paper"),
        "ssim_paper": ssim(pred, gt, "paper"),
        "psnr_standard": psnr(pred, gt, "standard"),
        "ssim_standard": ssim(pred, gt, "standard"),
    }


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C,H,W) or (H,W) float in [0,1] -> (H,W,C) / (H,W) uint8, clipped and rounded (as saved to PNG)."""
    if x.dim() not in (2, 3):
        raise ValueError(f"expected (C,H,W) or (H,W), got shape {tuple(x.shape)}")
    array = x.detach().to("cpu", torch.float64).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).numpy()
    return array if array.ndim == 2 else np.ascontiguousarray(array.transpose(1, 2, 0))


def batch_metrics(pred: torch.Tensor, gt: torch.Tensor) -> list[dict[str, float]]:
    """(B,3,H,W) float [0,1] tensors -> one image_metrics dict per sample, both quantised to uint8 first."""
    if pred.shape != gt.shape or pred.dim() != 4:
        raise ValueError(f"expected two (B,C,H,W) tensors of one shape, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    return [image_metrics(tensor_to_uint8(p), tensor_to_uint8(g)) for p, g in zip(pred, gt)]


def mean_std(values, ddof: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of a list of scores.

    ddof=0 describes the values themselves (the spread of per-image scores); ddof=1 is the sample
    standard deviation (the spread of a method's score over seeds), 0.0 for a single value. No
    values: (nan, nan). Identical images score PSNR = inf: the mean is then inf and the spread nan.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    if np.isinf(array).any():
        return float(array.mean()), math.nan
    return float(array.mean()), float(array.std(ddof=ddof)) if array.size > ddof else 0.0


# ----------------------------------------------------------------------------- segmentation
def confusion_matrix(prediction: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = label, columns = prediction; IGNORE_INDEX left out."""
    valid = (label != IGNORE_INDEX) & (label >= 0) & (label < num_classes)
    index = label[valid].long() * num_classes + prediction[valid].long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy, mean IoU over classes present in label or prediction, and per-class IoU (iou_NN)."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = tp / union  # NaN for classes absent from both: left out of the mean
    scores = {"pixel_acc": float(tp.sum() / confusion.sum().clamp(min=1)),
              "miou": float(np.nanmean(iou.numpy())) if bool((union > 0).any()) else 0.0}
    for c in range(len(iou)):
        if union[c] > 0:
            scores[f"iou_{c:02d}"] = float(iou[c])
    return scores


def region_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MSE (on [0, 255]), PSNR and SSIM of the pixels in `mask` only, paper convention (the SSIM
    map of the whole image, zero-padded Gaussian windows, averaged over the mask's pixels)."""
    _check(pred, gt)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != gt.shape[:2] or not mask.any():
        raise ValueError(f"mask {mask.shape} must be a non-empty (H, W) mask of the image {gt.shape[:2]}")
    diff = pred.astype(np.float64)[mask] - gt.astype(np.float64)[mask]
    mse = float(np.mean(diff ** 2))
    psnr_value = math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
    smap = _torch_ssim_map(_to_nchw(pred, 255.0), _to_nchw(gt, 255.0), data_range=1.0, padding="same")
    return {"mse": mse, "psnr": psnr_value, "ssim": float(smap.mean(dim=1)[0].numpy()[mask].mean())}
