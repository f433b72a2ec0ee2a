"""Texture blending, edge labels and classical smoothing: the one copy every dataset builder uses.

Blending (docs/method.md §4; re-implemented from what the authors' dataset_utils/blend_conc.py does):
  the texture is turned to gray, TILED (never resized) over the structure image starting at its
  top-left corner (`offset` shifts the tiling), the mean of the tiled pattern is subtracted, the
  zero-mean pattern is added to every channel of the ground truth at full strength, and the result
  is rounded (half to even, as OpenCV's float->uint8 conversion) and clipped to [0, 255].
  One deliberate difference: the authors convert the texture with RGB luma weights applied to
  OpenCV's BGR array (red and blue weights swapped); we use the standard ITU-R 601 luma on RGB.
  `amplitude` and `color` give an optional variant (pattern scaled, or tinted per channel);
  the defaults (1.0, None) are the authors' blending.

Edge labels (docs/method.md §4): on the ground truth's BLUE channel, 0.5|Sobel_x| + 0.5|Sobel_y| with 3x3
  kernels (each magnitude saturated to 255, borders reflected without repeating the edge pixel,
  the weighted sum rounded half to even), < 50 -> 0, else 1. Files store 0 / 255.

Smoothing (`smooth`: the csgis.filters implementations, e.g. L0 in numpy because OpenCV 5.0's
  colour L0 is broken): how the authors made their ground truths and
  over-smoothed images is not published, so both are a classical structure-preserving smoother at
  two strengths, configurable by name and parameters (`parse_smoother`: "l0:lambda=0.015").
  Defaults and why:
  - GT_SMOOTHER = L0 gradient minimisation, lambda 0.015, kappa 2: in the 0.01-0.02 range the
    released baseline uses (docs/method.md §7: 0.01); fine texture, fur and grain go, object outlines and
    large shading stay (checked by eye on VOC-size photos).
  - OVER_SMOOTHER = L0, lambda 0.08: about 5x the GT strength. Small and low-contrast structures
    (eyes, mouths, thin parts) merge into their surroundings and shading becomes flat patches, so
    the image is clearly over-smoothed; much stronger (0.2) turns most photos into a few flat blobs,
    which is a too-easy negative.
"""
from __future__ import annotations

import inspect

import cv2
import numpy as np

from csgis import filters

# Default smoother settings (see the module docstring for the reasons).
GT_SMOOTHER = "l0:lambda=0.015,kappa=2.0"
OVER_SMOOTHER = "l0:lambda=0.08,kappa=2.0"
EDGE_THRESHOLD = 50


def texture_to_gray(texture: np.ndarray) -> np.ndarray:
    """Texture (h,w) or (h,w,3) RGB uint8 -> (h,w) float64 gray (ITU-R 601 luma, not rounded)."""
    texture = np.asarray(texture)
    if texture.ndim == 2:
        return texture.astype(np.float64)
    if texture.ndim == 3 and texture.shape[2] == 3:
        rgb = texture.astype(np.float64)
        return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    raise ValueError(f"texture must be (h,w) or (h,w,3), got shape {texture.shape}")


def tile_texture(gray: np.ndarray, shape: tuple, offset: tuple = (0, 0)) -> np.ndarray:
    """Repeat a (h,w) pattern over shape[:2]: out[y,x] = gray[(y+oy) % h, (x+ox) % w] (no resizing)."""
    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"tile_texture expects a (h,w) gray pattern, got shape {gray.shape}")
    height, width = int(shape[0]), int(shape[1])
    rows = (np.arange(height) + int(offset[0])) % gray.shape[0]
    cols = (np.arange(width) + int(offset[1])) % gray.shape[1]
    return gray[np.ix_(rows, cols)]


def blend_texture(gt: np.ndarray, texture: np.ndarray, offset: tuple = (0, 0),
                  amplitude: float = 1.0, color=None) -> np.ndarray:
    """Textured input: gt (H,W,3) uint8 + zero-mean tiled gray texture (times amplitude*color) -> (H,W,3) uint8.

    `texture` is (h,w) or (h,w,3) uint8; `color` is None (same pattern on every channel) or three
    per-channel gains (R, G, B) for a tinted variant.
    """
    gt = np.asarray(gt)
    if gt.dtype != np.uint8 or gt.ndim != 3 or gt.shape[2] != 3:
        raise ValueError(f"blend_texture expects gt (H,W,3) uint8, got {gt.dtype} {gt.shape}")
    pattern = tile_texture(texture_to_gray(texture), gt.shape, offset)
    pattern = pattern - pattern.mean()  # the authors' "colour shift" fix: texture adds no brightness
    gains = np.ones(3) if color is None else np.asarray(color, dtype=np.float64).reshape(3)
    blended = gt.astype(np.float64) + pattern[..., None] * (float(amplitude) * gains)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# --- gray and colour layers at a set contrast (the held-out benchmark, rich online training) -----

BLENDS = ("gray", "colour")


def tile_mirrored(pattern: np.ndarray, shape: tuple[int, int], scale: float, offset: tuple[int, int]) -> np.ndarray:
    """The texture resized by `scale` and tiled MIRRORED (no seams, periodic or not) over shape (H, W)
    from `offset` -> float64 (H, W) or (H, W, C)."""
    if scale != 1.0:
        pattern = cv2.resize(pattern, None, fx=scale, fy=scale,
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    tile2 = np.concatenate([pattern, pattern[:, ::-1]], axis=1)
    tile2 = np.concatenate([tile2, tile2[::-1]], axis=0).astype(np.float64)
    reps = (shape[0] // tile2.shape[0] + 2, shape[1] // tile2.shape[1] + 2) + (1,) * (tile2.ndim - 2)
    big = np.tile(tile2, reps)
    y, x = offset[0] % tile2.shape[0], offset[1] % tile2.shape[1]
    return big[y:y + shape[0], x:x + shape[1]]


def blend_layer(gt: np.ndarray, pattern: np.ndarray, mode: str, scale: float, amplitude: float,
                offset: tuple[int, int], texture_std: float) -> np.ndarray:
    """Textured input gt (H,W,3) uint8 + a texture layer -> (H,W,3) uint8. The layer is the (h,w,3)
    uint8 `pattern` resized by `scale`, tiled mirrored from `offset`, mean removed, brought to
    `texture_std` gray levels and times `amplitude`. mode gray: the texture's gray added to every
    channel (the authors' blend); colour: the colour texture, mean removed per channel."""
    if mode == "gray":
        gray = cv2.cvtColor(pattern, cv2.COLOR_RGB2GRAY)
        layer = tile_mirrored(gray, gt.shape[:2], scale, offset)
        layer = (layer - layer.mean())[..., None]
    elif mode == "colour":
        layer = tile_mirrored(pattern, gt.shape[:2], scale, offset)
        layer = layer - layer.mean(axis=(0, 1), keepdims=True)
    else:
        raise ValueError(f"unknown blend {mode!r}; choose from {BLENDS}")
    layer = layer * (texture_std / max(float(layer.std()), 1e-6))
    return np.clip(np.rint(gt.astype(np.float64) + amplitude * layer), 0, 255).astype(np.uint8)


def edge_label(gt: np.ndarray, threshold: int = EDGE_THRESHOLD) -> np.ndarray:
    """Binary structure edges of gt (H,W,3) RGB uint8 -> (H,W) uint8 in {0,1} (docs/method.md §4, blue channel)."""
    gt = np.asarray(gt)
    if gt.dtype != np.uint8 or gt.ndim != 3 or gt.shape[2] != 3:
        raise ValueError(f"edge_label expects (H,W,3) uint8 RGB, got {gt.dtype} {gt.shape}")
    blue = np.ascontiguousarray(gt[..., 2])
    grad_x = cv2.convertScaleAbs(cv2.Sobel(blue, cv2.CV_16S, 1, 0, ksize=3))
    grad_y = cv2.convertScaleAbs(cv2.Sobel(blue, cv2.CV_16S, 0, 1, ksize=3))
    magnitude = cv2.addWeighted(grad_x, 0.5, grad_y, 0.5, 0)
    return (magnitude >= threshold).astype(np.uint8)


# --- classical smoothers -------------------------------------------------------------------------
# The builders use the same implementations as the baselines (csgis.filters), plus a Gaussian blur
# for chains such as the demo scenes' over-smoother ("l0:...+gaussian:sigma=2").

def _gaussian(img: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), float(sigma))


SMOOTHERS = {**filters.FILTERS, "gaussian": _gaussian}
SETTING_RANGES = {**filters.SETTING_RANGES, "gaussian": {"sigma": (0.0, 100.0, False)}}
# Names users write in specs -> keyword of the filter function ("lambda" is a Python keyword).
_ALIASES = {"lambda": "lambda_", "lam": "lambda_"}


def smooth(img: np.ndarray, method: str, **params) -> np.ndarray:
    """Classical smoothing of (H,W,3) uint8 RGB with one of SMOOTHERS -> (H,W,3) uint8."""
    if method not in SMOOTHERS:
        raise ValueError(f"unknown smoother '{method}' (choose from {', '.join(SMOOTHERS)})")
    img = np.ascontiguousarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"smooth expects (H,W,3) uint8, got {img.dtype} {img.shape}")
    params = {_ALIASES.get(key, key): value for key, value in params.items()}
    filters.check_settings(method, params, SETTING_RANGES[method])
    try:
        out = SMOOTHERS[method](img, **params)
    except TypeError as e:
        raise ValueError(f"bad parameters for smoother '{method}': {e}") from None
    return np.clip(out, 0, 255).astype(np.uint8) if out.dtype != np.uint8 else out


def parse_smoother(spec: str) -> tuple[str, dict]:
    """'name' or 'name:key=value,key=value' -> (name, {key: float|int}); validates the name.

    A chain 'a:...+b:...' (see smooth_spec) is validated part by part; the first part is returned.
    """
    if "+" in spec:
        parts = [parse_smoother(part) for part in spec.split("+")]
        return parts[0]
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if name not in SMOOTHERS:
        raise ValueError(f"unknown smoother '{name}' in '{spec}' (choose from {', '.join(SMOOTHERS)})")
    params = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"smoother setting '{item}' in '{spec}' is not key=value")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"smoother setting '{item}' in '{spec}' is not a number") from None
        params[key.strip()] = int(number) if number.is_integer() and "." not in value else number
    return name, params


def check_spec(spec: str) -> None:
    """ValueError in one line unless every part of `spec` ('a:...+b:...') names a known smoother and
    only settings that it has; smooth_spec would otherwise fail only when it runs."""
    for part in str(spec).split("+"):
        name, params = parse_smoother(part)
        accepted = list(inspect.signature(SMOOTHERS[name]).parameters)[1:]  # the first is the image
        for key in params:
            if _ALIASES.get(key, key) not in accepted:
                raise ValueError(f"'{name}' has no setting '{key}' (in '{spec}')")
        try:
            filters.check_settings(name, {_ALIASES.get(k, k): v for k, v in params.items()}, SETTING_RANGES[name])
        except ValueError as e:
            raise ValueError(f"{e} (in '{spec}')") from None


def smooth_spec(img: np.ndarray, spec: str) -> np.ndarray:
    """smooth() with a 'name:key=value,...' string; 'a:...+b:...' applies a then b (builders' CLI form)."""
    for part in spec.split("+"):
        name, params = parse_smoother(part)
        img = smooth(img, name, **params)
    return img
