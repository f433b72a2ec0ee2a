"""Tiled, batched smoothing of images of any size.

The smoothing network has no down-sampling and every layer is a zero-padded 3x3 convolution
(docs/method.md §1), so an output pixel depends only on inputs within `model.receptive_radius()` pixels. A
tile's *core* is therefore computed exactly from a *crop* that extends the core by that margin on
every side where the image continues; where the crop meets the image border, the network's own
zero padding sees exactly what it sees on the whole image. With eval-mode BatchNorm (an affine map
per channel) tiled output equals untiled output up to float rounding (tests: <= 1e-5).

All crops of one image have the same size (windows near the border are shifted inwards rather
than clipped), so tiles are stacked into batches without padding.

- `smooth_image(model, rgb)` : (H, W, 3) uint8 in, dict of uint8 images out (files, CLI).
- `smooth_tensor(model, x)`  : (B, 3, H, W) float in [0, 1], dict of float tensors out (tests,
  validation).
- `default_tile(device, model, amp)`: tile size chosen from the memory available.
- `match_mean(result, reference)`: a result shifted to the reference's mean colour
  (`smooth_image(..., keep_mean=True)`, show.py / evaluate.py --keep-mean).
- `post_filter(result, spec)`: a classical smoother run on the network's result
  (`smooth_image(..., post="l0:lambda=0.02")`, show.py / evaluate.py --post).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from csgis.device import AMP_DTYPES, autocast

OUTPUT_NAMES = ("edge_logits", "coarse", "residual", "prediction")
IMAGE_OUTPUT_NAMES = ("prediction", "coarse", "edge")

# Memory model of one forward pass: the peak holds a few full-width (`width`-channel) activation
# maps of the crop at once (descriptor features kept for the three heads, an HDC block's input and
# conv/BN/ReLU outputs, the concatenated 65/68-channel head inputs). Measured on CPU (torch 2.15,
# width 64, 400-600 px crops): 7.7 maps above the process's baseline; 12 leaves room for
# convolution workspaces and channels_last copies.
ACTIVATIONS_AT_PEAK = 12
CPU_MEMORY_FRACTION = 0.25          # of physical memory (also capped by what is free now)
CPU_MEMORY_CAP = 2 * 1024 ** 3      # bytes; keeps a 12 MP image within ~3 GB resident by default
CUDA_MEMORY_FRACTION = 0.6          # of the free device memory
TILE_MULTIPLE = 32
MIN_TILE, MAX_TILE = 64, 4096
MIN_SIDE = 16   # smooth_image mirrors smaller images up to this many pixels per side
# The post filter offered by show.py's help and the page: L0 at the lambda chosen on the held-out
# benchmark's validation part for weights/rich_smoother.pth (docs/RESULTS.md, notes).
RECOMMENDED_POST = "l0:lambda=0.02"


def _model_width(model: nn.Module) -> int:
    arch = getattr(model, "arch", None)
    if isinstance(arch, dict) and "width" in arch:
        return int(arch["width"])
    return 64


def _device_memory_budget(device: torch.device) -> int:
    """Bytes that one tile's forward pass may use on `device`."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_MEMORY_FRACTION)
    # CPU (and anything else): physical memory from sysconf, no psutil needed.
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
        available = page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # non-POSIX: assume a modest machine
        total = available = 8 * 1024 ** 3
    return int(min(total * CPU_MEMORY_FRACTION, available * 0.5, CPU_MEMORY_CAP))


def default_tile(device: str | torch.device = "cpu", model: nn.Module | None = None,
                 amp: str = "off", batch: int = 1) -> int:
    """Tile (core) side in pixels that fits the memory available for one forward pass.

    Estimate: a crop of side `tile + 2 * radius` needs about ACTIVATIONS_AT_PEAK maps of `width`
    channels (4 bytes each, 2 under bf16/fp16 autocast) per pixel and per batch element; the
    budget is CPU_MEMORY_FRACTION of physical memory capped at CPU_MEMORY_CAP (CPU, read with
    os.sysconf) or CUDA_MEMORY_FRACTION of torch.cuda.mem_get_info's free memory (CUDA). The
    result is rounded down to a multiple of 32 and kept within [64, 4096].
    """
    device = torch.device(device)
    width = _model_width(model) if model is not None else 64
    radius = int(model.receptive_radius()) if model is not None else 0
    bytes_per_value = 4 if amp == "off" else 2
    per_pixel = ACTIVATIONS_AT_PEAK * width * bytes_per_value * max(1, batch)
    crop_side = math.isqrt(max(1, _device_memory_budget(device) // per_pixel))
    tile = (crop_side - 2 * radius) // TILE_MULTIPLE * TILE_MULTIPLE
    return int(min(MAX_TILE, max(MIN_TILE, tile)))


@dataclass(frozen=True)
class Window:
    """One tile: its core (kept) and its crop (fed to the network), as [start, stop) ranges."""
    core_y: tuple[int, int]
    core_x: tuple[int, int]
    crop_y: tuple[int, int]
    crop_x: tuple[int, int]

    def core_in_crop(self) -> tuple[slice, slice]:
        """Slices that cut the core out of the crop's output."""
        return (slice(self.core_y[0] - self.crop_y[0], self.core_y[1] - self.crop_y[0]),
                slice(self.core_x[0] - self.crop_x[0], self.core_x[1] - self.crop_x[0]))


def _axis_windows(size: int, tile: int, radius: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(core, crop) ranges along one axis; every crop has the same length."""
    if tile <= 0 or size <= tile + 2 * radius:
        # One crop covering the axis is never larger than a tiled crop would be.
        return [((0, size), (0, size))]
    count = math.ceil(size / tile)
    core_len = math.ceil(size / count)          # balanced cores, none much smaller than the rest
    crop_len = core_len + 2 * radius            # < size, by the test above
    windows = []
    for start in range(0, size, core_len):
        stop = min(size, start + core_len)
        # Shift the crop inwards at the borders instead of clipping it: it then still contains
        # core +- radius wherever the image continues, and its edges that are not image borders
        # stay >= radius away from the core, so the core is exact and all crops are equal-sized.
        crop_start = min(max(0, start - radius), size - crop_len)
        windows.append(((start, stop), (crop_start, crop_start + crop_len)))
    return windows


def tile_windows(height: int, width: int, tile: int, radius: int) -> list[Window]:
    """All windows covering a height x width image with cores of at most `tile` (0: one window)."""
    return [Window(cy, cx, ry, rx)
            for cy, ry in _axis_windows(height, tile, radius)
            for cx, rx in _axis_windows(width, tile, radius)]


def _autocast(device: torch.device, amp: str):
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
    return autocast(device, AMP_DTYPES[amp])


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _run_windows(model: nn.Module, windows: list[Window], read_crop: Callable[[Window], torch.Tensor],
                 write_core: Callable[[Window, dict[str, torch.Tensor]], None], names: Sequence[str],
                 device: torch.device, amp: str, channels_last: bool, batch: int,
                 progress: Callable[[int, int], None] | None = None) -> None:
    """Run the model on every window's crop, `batch` crops at a time, and hand back their cores;
    progress(done, total) after each group of tiles."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    was_training = model.training
    model.eval()  # batch-statistics BN would make every tile differ; restored below
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    try:
        with torch.inference_mode(), _autocast(device, amp):
            for group in _chunks(windows, batch):
                crops = [read_crop(w) for w in group]  # each (B, 3, h, w), all of one size
                x = torch.cat(crops, 0).to(device, non_blocking=True)
                x = x.contiguous(memory_format=memory_format)
                out = model(x)
                per_image = crops[0].shape[0]
                for i, window in enumerate(group):
                    rows, cols = window.core_in_crop()
                    part = slice(i * per_image, (i + 1) * per_image)
                    write_core(window, {name: getattr(out, name)[part, :, rows, cols].float()
                                        for name in names})
                del out, x
                if progress is not None:
                    progress(min(len(windows), windows.index(group[-1]) + 1), len(windows))
    finally:
        model.train(was_training)


def _resolve(model: nn.Module, tile: int | None, device, amp: str, batch: int) -> tuple[torch.device, int]:
    device = torch.device(device)
    if tile is None:
        tile = default_tile(device, model, amp=amp, batch=batch)
    if tile < 0:
        raise ValueError(f"tile must be >= 0 (0: no tiling), got {tile}")
    return device, int(tile)


def smooth_tensor(model: nn.Module, x: torch.Tensor, tile: int | None = None, device=None,
                  amp: str = "off", channels_last: bool = False, batch: int = 1,
                  outputs: Sequence[str] = OUTPUT_NAMES) -> dict[str, torch.Tensor]:
    """Tiled forward pass: x (B, 3, H, W) float in [0, 1] -> {name: (B, C, H, W) float32 on x.device}.

    `outputs` picks among edge_logits (C=1), coarse, residual, prediction (C=3; not clamped).
    tile=None picks `default_tile`; tile=0 runs the whole image at once. `device` (default: x's)
    is where the model runs; the model is moved there and left there. Equal to `model(x)` within
    float rounding when the model is in eval mode (it is switched to eval for the call).
    """
    for name in outputs:
        if name not in OUTPUT_NAMES:
            raise ValueError(f"unknown output {name!r}; choose from {OUTPUT_NAMES}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected x of shape (B, 3, H, W), got {tuple(x.shape)}")
    device, tile = _resolve(model, tile, x.device if device is None else device, amp, batch)
    b, _, h, w = x.shape
    channels = {"edge_logits": 1, "coarse": 3, "residual": 3, "prediction": 3}
    result = {name: torch.empty(b, channels[name], h, w, dtype=torch.float32, device=x.device)
              for name in outputs}

    def read_crop(win: Window) -> torch.Tensor:
        return x[:, :, win.crop_y[0]:win.crop_y[1], win.crop_x[0]:win.crop_x[1]].float()

    def write_core(win: Window, parts: dict[str, torch.Tensor]) -> None:
        for name, value in parts.items():
            result[name][:, :, win.core_y[0]:win.core_y[1], win.core_x[0]:win.core_x[1]] = value

    windows = tile_windows(h, w, tile, int(model.receptive_radius()))
    _run_windows(model, windows, read_crop, write_core, list(outputs), device, amp, channels_last, batch)
    return result


def _dihedral(image: np.ndarray, k: int, inverse: bool = False) -> np.ndarray:
    """View k of the 8 rotations (k % 4 quarter turns) and mirror images (k >= 4) of an (H, W, ...)
    array; inverse=True undoes it."""
    if inverse:
        image = image[:, ::-1] if k >= 4 else image
        return np.rot90(image, -(k % 4))
    image = np.rot90(image, k % 4)
    return image[:, ::-1] if k >= 4 else image


def smooth_image(model: nn.Module, rgb: np.ndarray, tile: int | None = None, device="cpu",
                 amp: str = "off", channels_last: bool = False, batch: int = 1,
                 outputs: Sequence[str] = ("prediction",),
                 progress: Callable[[int, int], None] | None = None,
                 self_ensemble: bool = False, keep_mean: bool = False,
                 post: str | None = None) -> dict[str, np.ndarray]:
    """Smooth one image: rgb (H, W, 3) uint8 -> {prediction, coarse: (H, W, 3) uint8; edge: (H, W) uint8}.

    Prediction and coarse are clipped to [0, 255] and rounded; edge is sigmoid(edge_logits) * 255
    rounded. Only uint8 buffers of the full size are held: each crop is converted to float on its
    own, so memory is bounded by the tile size, not the image size. tile=None picks
    `default_tile(device, model, amp)`; tile=0 runs the whole image at once. The model is moved to
    `device` and left there; amp is "off", "bf16" or "fp16" (autocast). Images under MIN_SIDE px
    on a side are smoothed as a mirrored copy of MIN_SIDE px and cut back to their size.

    self_ensemble: smooth the 8 rotations and mirror images of the image, turn each result back and
    average them (the geometric self-ensemble of image restoration, e.g. EDSR's "+" models): 8x the
    time, a uint16 sum of the full size besides the outputs.

    keep_mean: shift the prediction, channel by channel, to the input's mean colour (`match_mean`),
    after everything else (self-ensemble included). Optimisation smoothers such as L0 and WLS keep
    the mean exactly (their smoothness term has no effect on it); the network does not on images
    unlike its training data.

    post: a classical smoother spec (`csgis.data.blend.parse_smoother`, e.g. "l0:lambda=0.02") run
    on the whole prediction after the network (and the self-ensemble), before keep_mean
    (`post_filter`). It sees the whole image at once, so its memory grows with the image, not
    the tile.
    """
    for name in outputs:
        if name not in IMAGE_OUTPUT_NAMES:
            raise ValueError(f"unknown output {name!r}; choose from {IMAGE_OUTPUT_NAMES}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    if post is not None or keep_mean:
        if post is not None:
            check_post(post)  # before the network runs
        out = smooth_image(model, rgb, tile, device, amp, channels_last, batch, outputs, progress, self_ensemble)
        if "prediction" in out:
            out["prediction"] = finish(out["prediction"], rgb, post, keep_mean)
        return out
    h, w, _ = rgb.shape
    if self_ensemble:
        sums: dict[str, np.ndarray] = {}
        for k in range(8):
            step = None if progress is None else (lambda done, total, k=k: progress(k * total + done, 8 * total))
            view = np.ascontiguousarray(_dihedral(rgb, k))
            out = smooth_image(model, view, tile, device, amp, channels_last, batch, outputs, step)
            for name, value in out.items():
                sums.setdefault(name, np.zeros((h, w) + value.shape[2:], np.uint16))
                sums[name] += _dihedral(value, k, inverse=True)
        return {name: ((total + 4) // 8).astype(np.uint8) for name, total in sums.items()}
    if min(h, w) < MIN_SIDE:
        # So small that the network's zero padding dominates every pixel (a 2x2 image comes out
        # 4x further from its colours): smooth a mirrored copy of at least MIN_SIDE px, cut it back.
        top, left = (max(0, MIN_SIDE - h) + 1) // 2, (max(0, MIN_SIDE - w) + 1) // 2
        bottom, right = max(0, MIN_SIDE - h) - top, max(0, MIN_SIDE - w) - left
        border = cv2.BORDER_REFLECT_101 if min(h, w) > 1 else cv2.BORDER_REPLICATE
        padded = cv2.copyMakeBorder(rgb, top, bottom, left, right, border)
        out = smooth_image(model, padded, tile, device, amp, channels_last, batch, outputs, progress)
        return {name: np.ascontiguousarray(value[top:top + h, left:left + w]) for name, value in out.items()}
    device, tile = _resolve(model, tile, device, amp, batch)
    result = {name: np.empty((h, w) if name == "edge" else (h, w, 3), dtype=np.uint8)
              for name in outputs}
    network_names = ["edge_logits" if name == "edge" else name for name in outputs]

    def read_crop(win: Window) -> torch.Tensor:
        crop = rgb[win.crop_y[0]:win.crop_y[1], win.crop_x[0]:win.crop_x[1]]
        return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float().div_(255.0)

    def write_core(win: Window, parts: dict[str, torch.Tensor]) -> None:
        rows, cols = slice(*win.core_y), slice(*win.core_x)
        for name, value in parts.items():
            if name == "edge_logits":
                result["edge"][rows, cols] = _to_uint8(torch.sigmoid(value))[0, 0]
            else:
                result[name][rows, cols] = _to_uint8(value)[0].transpose(1, 2, 0)

    windows = tile_windows(h, w, tile, int(model.receptive_radius()))
    _run_windows(model, windows, read_crop, write_core, network_names, device, amp, channels_last, batch, progress)
    return result


def match_mean(result: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 `result` with each channel shifted by the whole number of gray levels that
    brings its mean (after clipping to [0, 255]) closest to that channel's mean in `reference`
    (any (h, w, 3) uint8 image; the input for a smoothing result); of equally close shifts the
    smallest. Memory: one uint8 copy."""
    if result.dtype != np.uint8 or reference.dtype != np.uint8 or result.ndim != 3 or reference.ndim != 3 \
            or result.shape[2] != reference.shape[2]:
        raise ValueError(f"match_mean needs two (H, W, C) uint8 images, got {result.dtype} {result.shape} "
                         f"and {reference.dtype} {reference.shape}")
    levels = np.arange(256)
    shifts = np.arange(-255, 256)
    mapped = np.clip(levels[None, :] + shifts[:, None], 0, 255)  # row s + 255: level -> level + s, clipped
    out = np.empty_like(result)
    for c in range(result.shape[2]):
        target = reference[..., c].mean(dtype=np.float64)
        histogram = np.bincount(result[..., c].ravel(), minlength=256)
        means = mapped @ histogram / histogram.sum()
        best = np.lexsort((np.abs(shifts), np.abs(means - target)))[0]
        out[..., c] = mapped[best].astype(np.uint8)[result[..., c]]
    return out


def check_post(spec: str) -> None:
    """ValueError in one line, starting '--post:', unless `spec` names known smoothers and settings of
    them (`post_filter`'s argument; checked before any image is smoothed)."""
    from csgis.data.blend import check_spec
    try:
        check_spec(spec)
    except ValueError as e:
        raise ValueError(f"--post: {e}") from None


def finish(prediction: np.ndarray, rgb: np.ndarray, post: str | None = None, keep_mean: bool = False) -> np.ndarray:
    """What smooth_image does to the network's (H, W, 3) uint8 prediction of input `rgb` after the
    network: `post_filter` with the spec `post`, then `match_mean` to the input with keep_mean."""
    if post is not None:
        prediction = post_filter(prediction, post)
    if keep_mean:
        prediction = match_mean(prediction, rgb)
    return prediction


def post_filter(result: np.ndarray, spec: str) -> np.ndarray:
    """(H, W, 3) uint8 network result -> the same smoothed by the classical smoother(s) of `spec`
    ('name:key=value,...'; 'a+b' runs a then b; csgis.data.blend.smooth_spec).

    With "l0:lambda=0.02" (L0 gradient minimisation, the training data's ground-truth smoother
    at a slightly larger lambda) the network removes the texture and L0 flattens what it leaves:
    faint texture residue and low-frequency shading inside flat regions (docs/RESULTS.md, notes).
    L0 keeps the mean colour of what it is given."""
    from csgis.data.blend import smooth_spec
    return smooth_spec(result, spec)


def _to_uint8(value: torch.Tensor) -> np.ndarray:
    """(..., H, W) float in [0, 1] -> uint8 numpy (x255, clipped, rounded), computed on its device."""
    return value.mul(255.0).clamp_(0.0, 255.0).round_().to(torch.uint8).cpu().numpy()
