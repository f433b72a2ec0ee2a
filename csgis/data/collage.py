"""Structure images as people draw them, from installed clip art and stamps, with class maps; photo
crops and textured regions of photographs; GIMP patterns as textures (csgis.data.packages finds the
files; dataset_utils/make_art_data.py and make_art_bench.py build datasets from them).

- A *cut-out* is an art file with its alpha (`load_cutout`), kept only when it is drawn flat:
  `flatness` (the share of its opaque pixels without local gradient) at least FLAT_MIN, so
  photographic stamps (a coin, a frog photograph) are not ground truths.
- A *collage* (`compose`) lays 1-5 cut-outs at several scales, overlapping, some with a dark
  outline, on a flat, two-colour or gradient background; it knows which object covers each pixel,
  so its label map holds each object's class (packages.ART_CLASSES; 0 where the background shows).
- A *texture crop* (`texture_crops`) is a region of a photograph with much fine detail and little
  large-scale structure, for a texture pool.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from csgis.io import ImageReadError, image_size, read_image

FLAT_MIN = 0.45            # share of opaque pixels with gradient < FLAT_GRADIENT gray levels a pixel
FLAT_GRADIENT = 3.0
STATS_SIDE = 128           # flatness is measured at this size (longest side)
COVERAGE = (0.05, 1.0)     # opaque share of a cut-out's box: not a speck
MAX_SIDE = 640             # cut-outs are kept at most this large (longest side)
MAX_FILE_PIXELS = 12e6     # larger art files (openclipart has 16000 px posters) are not decoded
PATTERN_STD_MIN = 4.0      # a texture flatter than this (gray levels) is no texture


def _premultiplied_resize(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float RGBA (alpha in [0, 1]) without dark fringes: colours premultiplied by alpha."""
    pre = rgba.copy()
    pre[..., :3] *= pre[..., 3:4]
    interp = cv2.INTER_AREA if size[0] < rgba.shape[1] else cv2.INTER_LINEAR
    out = cv2.resize(pre, size, interpolation=interp)
    alpha = np.clip(out[..., 3:4], 0.0, 1.0)
    out[..., :3] = np.where(alpha > 1e-4, out[..., :3] / np.maximum(alpha, 1e-4), 0.0)
    out[..., 3:4] = alpha
    return out


def load_cutout(path, max_side: int = MAX_SIDE) -> np.ndarray:
    """An art file as float32 RGBA (H, W, 4): colours in [0, 255], alpha in [0, 1], cropped to its
    opaque box and at most max_side on its longest side. ImageReadError naming the file when it
    cannot be read or has no transparent pixels (then it is a picture, not a cut-out)."""
    width, height = image_size(path)
    if width * height > MAX_FILE_PIXELS:
        raise ImageReadError(f"{path}: too large ({width}x{height}) to read as a cut-out")
    raw = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ImageReadError(f"{path}: not a readable image file")
    if raw.dtype == np.uint16:
        raw = (raw.astype(np.float32) / 257.0)
    raw = raw.astype(np.float32)
    if raw.ndim != 3 or raw.shape[2] not in (2, 4):
        raise ImageReadError(f"{path}: no alpha channel")
    if raw.shape[2] == 2:
        rgb, alpha = np.repeat(raw[..., :1], 3, 2), raw[..., 1] / 255.0
    else:
        rgb, alpha = raw[..., 2::-1], raw[..., 3] / 255.0
    ys, xs = np.nonzero(alpha > 0.5)
    if ys.size == 0 or alpha.min() > 0.5:
        raise ImageReadError(f"{path}: no opaque or no transparent pixels")
    rgba = np.dstack([rgb, alpha])[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    scale = max_side / max(rgba.shape[:2])
    if scale < 1:
        size = (max(1, round(rgba.shape[1] * scale)), max(1, round(rgba.shape[0] * scale)))
        rgba = _premultiplied_resize(rgba, size)
    return np.ascontiguousarray(rgba, dtype=np.float32)


def flatness(rgba: np.ndarray) -> float:
    """Share of the cut-out's opaque interior pixels whose gray gradient is below FLAT_GRADIENT
    gray levels a pixel, measured at STATS_SIDE px: near 1 for flat drawn art, low for photographs."""
    scale = STATS_SIDE / max(rgba.shape[:2])
    size = (max(1, round(rgba.shape[1] * scale)), max(1, round(rgba.shape[0] * scale)))
    small = _premultiplied_resize(rgba, size) if scale < 1 else rgba
    gray = cv2.cvtColor(np.ascontiguousarray(small[..., :3]), cv2.COLOR_RGB2GRAY)
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3) / 8.0, cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    inside = cv2.erode((small[..., 3] > 0.99).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if inside.sum() < 16:
        return 0.0
    return float((np.hypot(gx, gy)[inside] < FLAT_GRADIENT).mean())


def describe_cutout(path) -> dict:
    """{accepted, flat, coverage, height, width, reason} of an art file (what a catalogue keeps)."""
    try:
        rgba = load_cutout(path)
    except (ImageReadError, OSError, cv2.error) as e:
        return {"accepted": False, "reason": str(e).split(": ", 1)[-1]}
    coverage = float((rgba[..., 3] > 0.5).mean())
    flat = flatness(rgba)
    ok_size = min(rgba.shape[:2]) >= 24
    accepted = bool(ok_size and COVERAGE[0] <= coverage <= COVERAGE[1] and flat >= FLAT_MIN)
    reason = "" if accepted else ("too small" if not ok_size else
                                  "not flat (photographic)" if flat < FLAT_MIN else "coverage")
    return {"accepted": accepted, "flat": round(flat, 4), "coverage": round(coverage, 4),
            "height": int(rgba.shape[0]), "width": int(rgba.shape[1]), "reason": reason}


@functools.lru_cache(maxsize=256)
def cached_cutout(path: str) -> np.ndarray:
    return load_cutout(path)


# --- backgrounds and collages ----------------------------------------------------------------------

def _colour(rng: np.random.Generator) -> np.ndarray:
    """A colour as people pick them for flat art: any hue, mostly light or saturated."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(60, 255)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """float32 (H, W, 3): flat (40 %), a linear or radial two-colour gradient (40 %), or two flat
    regions split by a soft curve, as a ground and a sky (20 %)."""
    a, b = _colour(rng), _colour(rng)
    kind = rng.choice(["flat", "linear", "radial", "split"], p=[0.4, 0.25, 0.15, 0.2])
    if kind == "flat":
        return np.broadcast_to(a, (height, width, 3)).astype(np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "linear":
        angle = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(angle) + y * np.sin(angle)
    elif kind == "radial":
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        t = np.hypot(y - cy, x - cx)
    else:
        phase, amp, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.1) * height, rng.uniform(0.5, 2)
        line = rng.uniform(0.4, 0.8) * height + amp * np.sin(2 * np.pi * freq * x / width + phase)
        t = (y > line).astype(np.float32)
        t = cv2.GaussianBlur(t, (0, 0), 0.7)
        return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)


def _place(canvas: np.ndarray, label: np.ndarray, rgba: np.ndarray, cls: int, y: int, x: int,
           outline: float) -> None:
    """Alpha-composite `rgba` onto canvas with its top-left at (y, x) (clipped at the borders); the
    label takes `cls` where the object is more than half opaque. outline > 0: a dark ring of that
    width (px) around the object first."""
    h, w = rgba.shape[:2]
    pad = int(np.ceil(outline)) + 1 if outline > 0 else 0
    alpha = rgba[..., 3]
    colour = rgba[..., :3]
    if pad:
        alpha_p = cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        colour = cv2.copyMakeBorder(colour, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        k = 2 * int(np.ceil(outline)) + 1
        ring = cv2.dilate(alpha_p, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        ring = cv2.GaussianBlur(ring, (0, 0), 0.6)
        dark = np.full_like(colour, 25.0)
        colour = colour * alpha_p[..., None] + dark * (1 - alpha_p[..., None])
        alpha = np.maximum(ring, alpha_p)
        y, x, h, w = y - pad, x - pad, h + 2 * pad, w + 2 * pad
    H, W = canvas.shape[:2]
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, H), min(x + w, W)
    if y0 >= y1 or x0 >= x1:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
    region = canvas[y0:y1, x0:x1]
    region[:] = colour[y0 - y:y1 - y, x0 - x:x1 - x] * a + region * (1 - a)
    label[y0:y1, x0:x1][a[..., 0] > 0.5] = cls


def compose(rng: np.random.Generator, cutouts: list[tuple[np.ndarray, int]], height: int,
            width: int) -> tuple[np.ndarray, np.ndarray]:
    """A collage of (rgba, class) cut-outs -> (gt (H, W, 3) uint8, label (H, W) uint8). The first
    object is the largest (35-90 % of the short side), later ones smaller; each may be mirrored,
    and a third get a dark outline of 1-3 px."""
    canvas = background(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    short = min(height, width)
    for i, (rgba, cls) in enumerate(cutouts):
        side = short * (rng.uniform(0.35, 0.9) if i == 0 else rng.uniform(0.15, 0.6))
        scale = side / max(rgba.shape[:2])
        size = (max(2, round(rgba.shape[1] * scale)), max(2, round(rgba.shape[0] * scale)))
        obj = _premultiplied_resize(rgba, size)
        if rng.random() < 0.5:
            obj = obj[:, ::-1]
        h, w = obj.shape[:2]
        y = int(rng.integers(-h // 4, max(height - 3 * h // 4, -h // 4 + 1)))
        x = int(rng.integers(-w // 4, max(width - 3 * w // 4, -w // 4 + 1)))
        outline = float(rng.uniform(1.0, 3.0)) if rng.random() < 1 / 3 else 0.0
        _place(canvas, label, np.ascontiguousarray(obj), cls, y, x, outline)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), label


# --- photographs: crops and textured regions ----------------------------------------------------------

@functools.lru_cache(maxsize=4)
def photo(path: str, max_side: int = 2048) -> np.ndarray:
    """A wallpaper as RGB uint8, shrunk to at most max_side on its longest side (read once a process)."""
    rgb = read_image(path)
    scale = max_side / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return rgb


def photo_crop(picture: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random crop covering 15-60 % of the picture's short side, resized to (height, width)."""
    h, w = picture.shape[:2]
    side = rng.uniform(0.15, 0.6) * min(h, w * height / width)
    ch, cw = max(8, int(side)), max(8, int(side * width / height))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return cv2.resize(picture[y:y + ch, x:x + cw], (width, height), interpolation=cv2.INTER_AREA)


def texturedness(rgb: np.ndarray) -> tuple[float, float]:
    """(fine, coarse): gray std of the detail finer than 3 px and of the structure coarser than 12 px."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    fine = gray - cv2.GaussianBlur(gray, (0, 0), 3.0)
    coarse = cv2.GaussianBlur(gray, (0, 0), 12.0)
    return float(fine.std()), float(coarse.std())


def texture_crops(picture: np.ndarray, rng: np.random.Generator, count: int, side: int,
                  candidates: int = 24) -> list[np.ndarray]:
    """Up to `count` (side, side, 3) crops of a photograph, the most textured of `candidates`
    random ones (fine detail against coarse structure); [] when none has fine detail."""
    h, w = picture.shape[:2]
    found = []
    for _ in range(candidates):
        size = int(min(h, w) * rng.uniform(0.05, 0.25))
        if size < 16:
            continue
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = cv2.resize(picture[y:y + size, x:x + size], (side, side), interpolation=cv2.INTER_AREA)
        fine, coarse = texturedness(crop)
        if fine >= PATTERN_STD_MIN:
            found.append((fine / (coarse + 10.0), crop))
    found.sort(key=lambda item: -item[0])
    return [crop for _, crop in found[:count]]


def pattern_ok(rgb: np.ndarray) -> bool:
    """Whether a pattern varies enough to be a texture (gray std at least PATTERN_STD_MIN)."""
    return float(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).std()) >= PATTERN_STD_MIN
