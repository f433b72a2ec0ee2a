"""Region smoothing: which pixels are smoothed and how strongly (show.py's region options, app.py).

- A *region* is a boolean (H, W) mask: from a file (`read_mask`), from the segmentation network's
  classes (`class_mask` over `segment`), or from a user's strokes and clicks (csgis.interactive).
- `feather(mask, px)` turns it into a weight in [0, 1]: 1 inside, falling linearly to 0 over `px`
  pixels outside it, and exactly 0 beyond. `blend` leaves every pixel of weight 0 exactly as it
  was (bit-identical uint8), so outside the region and its feather band nothing changes.
- `smooth_strength(model, rgb, strength, scale)`: strength in [0, 1] blends the smoothed image
  with the original; above 1 the smoother is applied again to its own output (2 = two passes; a
  fraction blends the last two passes), which is what "smoother than the network" honestly means.
  `scale` smooths a resized copy (0.5: half the resolution, coarser texture goes; 2: finer) and
  resizes the result back; tiling stays exact at that scale.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

MAX_STRENGTH = 4.0
SCALES = (0.25, 4.0)


class RegionError(ValueError):
    """A mask or a class selection that cannot be used (the message names the file or the names)."""


# ----------------------------------------------------------------------------- masks
def read_mask(path: str | os.PathLike, shape: tuple[int, int], resize: bool = False) -> np.ndarray:
    """A mask file (any image: set where its gray value is above 127) -> (H, W) bool for an image of `shape`.

    A mask of another size is an error naming both sizes, unless `resize` (nearest neighbour).
    """
    from csgis.io import read_image
    gray = read_image(path).max(axis=2)
    if gray.shape != tuple(shape):
        if not resize:
            raise RegionError(f"mask {path} is {gray.shape[1]}x{gray.shape[0]} but the image is "
                              f"{shape[1]}x{shape[0]} (WxH); use a mask of the image's size or --resize-mask")
        gray = cv2.resize(gray, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return gray > 127


def feather(mask: np.ndarray, px: float) -> np.ndarray:
    """(H, W) bool -> (H, W) float32 weight: 1 in the mask, linear to 0 over `px` pixels outside, 0 beyond."""
    mask = np.asarray(mask, dtype=bool)
    if px <= 0 or mask.all() or not mask.any():
        return mask.astype(np.float32)
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(1.0 - distance / float(px), 0.0, 1.0).astype(np.float32)


def blend(original: np.ndarray, smoothed: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """uint8 images and an (H, W) weight in [0, 1] -> uint8: original where the weight is 0 (exactly),
    smoothed where it is 1, the rounded mix in between."""
    if original.shape != smoothed.shape:
        raise ValueError(f"images differ in size: {original.shape} and {smoothed.shape}")
    w = np.asarray(weight, dtype=np.float32)[..., None]
    mixed = np.rint(w * smoothed.astype(np.float32) + (1.0 - w) * original.astype(np.float32)).astype(np.uint8)
    return np.where(w > 0, mixed, original)


def mask_image(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) uint8 0 / 255, as --save-mask writes it."""
    return np.where(mask, 255, 0).astype(np.uint8)


# ----------------------------------------------------------------------------- strength and scale
def check_strength_scale(strength: float, scale: float) -> None:
    if not 0.0 <= strength <= MAX_STRENGTH:
        raise RegionError(f"strength must be in [0, {MAX_STRENGTH:g}], got {strength:g}")
    if not SCALES[0] <= scale <= SCALES[1]:
        raise RegionError(f"scale must be in [{SCALES[0]:g}, {SCALES[1]:g}], got {scale:g}")


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width * height < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def smooth_strength(model, rgb: np.ndarray, strength: float = 1.0, scale: float = 1.0,
                    smooth: Callable[[np.ndarray], np.ndarray] | None = None, **smooth_kwargs) -> np.ndarray:
    """The image smoothed at `strength` and `scale` (module docstring) -> (H, W, 3) uint8, whole image.

    `smooth(rgb) -> rgb` defaults to csgis.inference.smooth_image with `smooth_kwargs` (tile,
    device, amp ...). The region is applied afterwards with `blend`.
    """
    check_strength_scale(strength, scale)
    if smooth is None:
        from csgis.inference import smooth_image

        def smooth(image):
            return smooth_image(model, image, **smooth_kwargs)["prediction"]
    height, width = rgb.shape[:2]
    if strength == 0:
        return rgb.copy()
    work = rgb if scale == 1 else _resize(rgb, max(1, round(width * scale)), max(1, round(height * scale)))
    passes = max(1, math.ceil(strength))
    chain = [work]
    for _ in range(passes):
        chain.append(smooth(chain[-1]))

    def back(image):
        return image if scale == 1 else _resize(image, width, height)
    upper = back(chain[passes])
    lower = rgb if passes == 1 else back(chain[passes - 1])  # strength below 1 mixes with the input itself
    fraction = strength - (passes - 1)
    if fraction == 1:
        return upper
    return np.rint(fraction * upper.astype(np.float32) + (1 - fraction) * lower.astype(np.float32)).astype(np.uint8)


def smooth_region(model, rgb: np.ndarray, mask: np.ndarray | None = None, feather_px: float = 0.0,
                  strength: float = 1.0, scale: float = 1.0, **smooth_kwargs) -> np.ndarray:
    """Smooth `rgb` inside `mask` (None: everywhere) with a feathered seam; outside, the input exactly."""
    smoothed = smooth_strength(model, rgb, strength, scale, **smooth_kwargs)
    if mask is None:
        return smoothed
    return blend(rgb, smoothed, feather(mask, feather_px))


# ----------------------------------------------------------------------------- semantic regions
def segmenter_classes(path: str | os.PathLike, num_classes: int) -> list[str]:
    """Class names of a segmenter checkpoint: its own 'classes' entry, else VOC's 21 or the demo's 6
    shape classes by count, else class0..N-1."""
    from csgis.torchfile import read_file
    from csgis.data.manifest import VOC_CLASSES
    from csgis.data.synthetic import SHAPE_CLASSES
    obj = read_file(path, "cpu", "a segmenter checkpoint")
    names = obj.get("classes") if isinstance(obj, dict) else None
    if isinstance(names, (list, tuple)) and len(names) == num_classes:
        return [str(n) for n in names]
    for known in (VOC_CLASSES, SHAPE_CLASSES):
        if len(known) == num_classes:
            return list(known)
    return [f"class{i}" for i in range(num_classes)]


@torch.no_grad()
def segment(segmenter, rgb: np.ndarray, device="cpu", normalize: bool = True, max_side: int = 513) -> np.ndarray:
    """(H, W) uint8 class map of an image: segmented at most `max_side` px on its longer side (the
    network's memory grows with the image), the map resized back with nearest neighbour."""
    from csgis.models.segmenter import imagenet_normalize
    height, width = rgb.shape[:2]
    factor = min(1.0, max_side / max(height, width))
    small = rgb if factor == 1 else cv2.resize(rgb, (max(1, round(width * factor)), max(1, round(height * factor))),
                                               interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float().div_(255.0).to(device)
    segmenter = segmenter.to(device).eval()
    labels = segmenter(imagenet_normalize(x) if normalize else x).argmax(1)[0].to(torch.uint8).cpu().numpy()
    return labels if factor == 1 else cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)


def class_ids(names: list[str], wanted: list[str]) -> list[int]:
    """Class names -> indices; RegionError listing the valid names for one it does not have."""
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise RegionError(f"the segmenter has no class {', '.join(map(repr, unknown))}; its classes: "
                          f"{', '.join(names)}")
    return [names.index(w) for w in wanted]


def class_mask(labels: np.ndarray, ids: list[int], keep: bool = False) -> np.ndarray:
    """Pixels of the classes `ids` (keep=False: smooth them) or of every other class (keep=True)."""
    selected = np.isin(labels, ids)
    return ~selected if keep else selected


def find_mask_file(folder: Path, relative_stem: Path) -> Path | None:
    """The mask for an input in a folder of masks named like the inputs (any image extension)."""
    from csgis.io import IMAGE_EXTENSIONS
    for ext in (".png", *IMAGE_EXTENSIONS):
        candidate = folder / relative_stem.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None
