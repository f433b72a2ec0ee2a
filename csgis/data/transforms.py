"""Joint augmentation of a VOC-smooth sample (docs/method.md §5): one geometry and one set of colour
factors for all five tensors.

A sample is a dict: input, gt, over_smoothed (3, H, W) float32 in [0, 1]; edge (1, H, W) float32
in {0, 1}; seg (H, W) int64 (255 = ignore); other keys (id) pass through untouched.

Geometry (crop, flip, rotation) is one resampling of the source image per sample, computed once
and applied to every tensor, so labels, edges, GT and over-smoothed image cannot drift apart:
- unrotated patches are gathered by integer indexing (exact copies, no interpolation);
- rotated patches use one `grid_sample` grid for all tensors: bilinear for images, nearest for
  labels and edges.
Outside the source image (padding of small images, corners brought in by a rotation) labels are
255 (ignore) and edges 0, as docs/method.md §5 asks (the release filled labels with class 0).
Images are filled by mirror reflection rather than black: a black fill puts a sharp step into GT
and input that the edge label (0 there) does not mark, and a flat region the network learns
nothing from; mirrored content is still a valid (input, GT, over-smoothed) triple.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from csgis.data.manifest import IGNORE_INDEX

IMAGE_KEYS = ("input", "gt", "over_smoothed")


def _check_sample(sample: dict) -> tuple[int, int]:
    """Return (H, W) after checking that all five tensors are present and agree in size."""
    missing = [k for k in (*IMAGE_KEYS, "edge", "seg") if k not in sample]
    if missing:
        raise KeyError(f"sample {sample.get('id', '?')!r} lacks keys {missing}")
    h, w = sample["gt"].shape[-2:]
    for key in (*IMAGE_KEYS, "edge", "seg"):
        if tuple(sample[key].shape[-2:]) != (h, w):
            raise ValueError(f"sample {sample.get('id', '?')!r}: {key} is {tuple(sample[key].shape)}, "
                             f"gt is {tuple(sample['gt'].shape)}")
    return h, w


def _mirror_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Integer positions -> [0, n) by symmetric mirroring (edge pixel repeated), any distance."""
    period = idx.remainder(2 * n)
    return torch.where(period >= n, 2 * n - 1 - period, period)


def _gather_patch(sample: dict, top: int, left: int, out_h: int, out_w: int, flip: bool) -> dict:
    """Exact (no interpolation) window [top, top+out_h) x [left, left+out_w), optionally
    mirrored left-right; positions outside the source: images mirrored, seg 255, edge 0."""
    h, w = sample["gt"].shape[-2:]
    rows = torch.arange(top, top + out_h)
    cols = torch.arange(left, left + out_w)
    if flip:
        cols = cols.flip(0)
    row_ok = (rows >= 0) & (rows < h)
    col_ok = (cols >= 0) & (cols < w)
    rows_img, cols_img = _mirror_index(rows, h), _mirror_index(cols, w)
    rows_lbl, cols_lbl = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    inside = row_ok[:, None] & col_ok[None, :]

    out = dict(sample)
    for key in IMAGE_KEYS:
        out[key] = sample[key][:, rows_img][:, :, cols_img].contiguous()
    edge = sample["edge"][:, rows_lbl][:, :, cols_lbl]
    out["edge"] = torch.where(inside, edge, torch.zeros((), dtype=edge.dtype)).contiguous()
    seg = sample["seg"][rows_lbl][:, cols_lbl]
    out["seg"] = torch.where(inside, seg, torch.full((), IGNORE_INDEX, dtype=seg.dtype)).contiguous()
    return out


def _rotated_patch(sample: dict, top: int, left: int, out_h: int, out_w: int, flip: bool,
                   angle: float) -> dict:
    """Window of the source rotated by `angle` degrees about the window centre (then mirrored
    when flip): one sampling grid for all tensors."""
    h, w = sample["gt"].shape[-2:]
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    cy, cx = (out_h - 1) / 2.0, (out_w - 1) / 2.0
    dy = torch.arange(out_h, dtype=torch.float64)[:, None] - cy
    dx = torch.arange(out_w, dtype=torch.float64)[None, :] - cx
    if flip:
        dx = -dx
    src_x = left + cx + cos * dx - sin * dy
    src_y = top + cy + sin * dx + cos * dy
    # grid_sample with align_corners=False: pixel centre x sits at (2x + 1) / W - 1.
    grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], dim=-1)
    grid = grid.to(torch.float32)[None]

    out = dict(sample)
    images = torch.cat([sample[k] for k in IMAGE_KEYS], dim=0)[None].float()
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                           align_corners=False)[0].clamp_(0.0, 1.0)
    for i, key in enumerate(IMAGE_KEYS):
        out[key] = images[3 * i:3 * i + 3].contiguous()

    # Edges, labels and an all-ones mask through nearest sampling; mask 0 = outside the source.
    ones = torch.ones_like(sample["edge"][0])
    discrete = torch.stack([sample["edge"][0].float(), sample["seg"].float(), ones], dim=0)[None]
    discrete = F.grid_sample(discrete, grid, mode="nearest", padding_mode="zeros",
                             align_corners=False)[0]
    inside = discrete[2] > 0.5
    out["edge"] = (discrete[0:1] * inside).to(sample["edge"].dtype)
    seg = discrete[1].round().to(sample["seg"].dtype)
    out["seg"] = torch.where(inside, seg, torch.full((), IGNORE_INDEX, dtype=seg.dtype))
    return out


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    if low == high:
        return float(low)
    return float(low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Integer in [low, high] inclusive."""
    if high <= low:
        return int(low)
    return int(torch.randint(low, high + 1, (), generator=generator))


def color_jitter(sample: dict, brightness: float = 1.0, contrast: float = 1.0, hue: float = 0.0) -> dict:
    """Apply the same brightness, contrast and hue factors to input, gt and over_smoothed.

    Contrast blends towards the GT's mean gray level for all three images (torchvision uses
    each image's own mean), so input - gt stays a scaled copy of the texture and a pair that
    started equal stays equal.
    """
    out = dict(sample)
    images = torch.stack([sample[k] for k in IMAGE_KEYS], dim=0)  # (3 images, 3, H, W)
    if brightness != 1.0:
        images = TF.adjust_brightness(images, brightness)
    if contrast != 1.0:
        mean_gray = TF.rgb_to_grayscale(images[1]).mean()
        images = (contrast * images + (1.0 - contrast) * mean_gray).clamp(0.0, 1.0)
    if hue != 0.0:
        images = TF.adjust_hue(images, hue)
    for i, key in enumerate(IMAGE_KEYS):
        out[key] = images[i].contiguous()
    return out


class JointRandomTransform:
    """Training augmentation: random crop (padding small images), horizontal flip, rotation in
    [-rotate, rotate] degrees, colour jitter with one set of factors (docs/method.md §5).

    Randomness comes from `generator` or, when None, torch's global RNG (seeded per DataLoader
    worker by torch, and by the engine's seed in the main process).
    """

    def __init__(self, patch_size: int = 128, hflip: float = 0.5, rotate: float = 45.0,
                 brightness=(0.3, 1.7), contrast=(0.3, 1.7), hue: float = 0.3,
                 generator: torch.Generator | None = None):
        if patch_size <= 0:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if len(brightness) != 2 or len(contrast) != 2:
            raise ValueError(f"brightness and contrast must be [low, high], got {brightness}, {contrast}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5], got {hue}")
        self.patch_size = int(patch_size)
        self.hflip = float(hflip)
        self.rotate = float(rotate)
        self.brightness = (float(brightness[0]), float(brightness[1]))
        self.contrast = (float(contrast[0]), float(contrast[1]))
        self.hue = float(hue)
        self.generator = generator

    def __call__(self, sample: dict) -> dict:
        h, w = _check_sample(sample)
        g, p = self.generator, self.patch_size
        # Window position: uniform over full windows; an image smaller than the patch lands at
        # a random place inside it and the rest is padding.
        top = _randint(0, h - p, g) if h >= p else -_randint(0, p - h, g)
        left = _randint(0, w - p, g) if w >= p else -_randint(0, p - w, g)
        flip = self.hflip > 0 and bool(torch.rand((), generator=g) < self.hflip)
        angle = _uniform(-self.rotate, self.rotate, g) if self.rotate > 0 else 0.0
        if angle == 0.0:
            out = _gather_patch(sample, top, left, p, p, flip)
        else:
            out = _rotated_patch(sample, top, left, p, p, flip, angle)
        factors = (_uniform(*self.brightness, g), _uniform(*self.contrast, g),
                   _uniform(-self.hue, self.hue, g))
        return color_jitter(out, *factors)

    def __repr__(self) -> str:
        return (f"JointRandomTransform(patch_size={self.patch_size}, hflip={self.hflip}, "
                f"rotate={self.rotate}, brightness={self.brightness}, contrast={self.contrast}, "
                f"hue={self.hue})")


def center_crop(sample: dict, size: int) -> dict:
    """Deterministic size x size centre window (smaller images padded as in training)."""
    h, w = _check_sample(sample)
    return _gather_patch(sample, (h - size) // 2, (w - size) // 2, size, size, flip=False)


class CenterCrop:
    """Picklable callable form of `center_crop` for datasets (DataLoader workers)."""

    def __init__(self, size: int):
        if size <= 0:
            raise ValueError(f"crop size must be positive, got {size}")
        self.size = int(size)

    def __call__(self, sample: dict) -> dict:
        return center_crop(sample, self.size)

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"
