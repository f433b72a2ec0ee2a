"""Procedural structure images and textures for the embedded demo dataset (no downloads).

- `random_scene`: piecewise-smooth scenes whose objects carry class labels by SHAPE (not colour),
  so a segmentation network has a real task: SHAPE_CLASSES. Each object and the background get a
  random colour with a smooth linear gradient; later objects occlude earlier ones; a ring's hole
  shows what lies beneath.
- Procedural textures (`fractal_noise`, `stripes`, `weave`, `dots`): periodic by construction, so
  tiling them shows no seams; all return (size, size) uint8 gray.
- `real_texture`: crops / scales / rotations of scikit-image's bundled texture photographs
  (brick, grass, gravel). `photo_crop`: crops / resizes of its bundled colour photographs.
All randomness comes from a numpy Generator passed in, so a seed fixes everything.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

SHAPE_CLASSES = ("background", "disc", "rectangle", "triangle", "ring", "star")
PROCEDURAL_TEXTURES = ("fractal", "stripes", "weave", "dots")
REAL_TEXTURES = ("brick", "grass", "gravel")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "motorcycle")


# --- scenes ----------------------------------------------------------------------------------

def _gradient(rng: np.random.Generator, height: int, width: int, base: np.ndarray,
              strength: float) -> np.ndarray:
    """(H,W,3) float: base colour plus a linear ramp of +-strength in a random direction/colour."""
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / max(height, width)  # about [-1, 1]
    ramp -= ramp.mean()
    direction = rng.uniform(-1, 1, 3) * strength
    return base[None, None, :] + ramp[..., None] * direction[None, None, :] * 2


def _shape_mask(rng: np.random.Generator, shape_class: int, height: int, width: int) -> np.ndarray:
    """(H,W) bool mask of one object of the given class at a random place, size and angle."""
    mask = np.zeros((height, width), np.uint8)
    short = min(height, width)
    radius = rng.uniform(0.12, 0.28) * short
    cy = rng.uniform(radius * 0.6, height - radius * 0.6)
    cx = rng.uniform(radius * 0.6, width - radius * 0.6)
    angle = rng.uniform(0, 2 * np.pi)
    name = SHAPE_CLASSES[shape_class]

    def polygon(radii, n):
        t = angle + np.arange(n) * 2 * np.pi / n
        pts = np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)

    if name == "disc":
        cv2.circle(mask, (round(cx), round(cy)), round(radius), 1, -1)
    elif name == "ring":
        cv2.circle(mask, (round(cx), round(cy)), round(radius), 1, -1)
        cv2.circle(mask, (round(cx), round(cy)), round(radius * rng.uniform(0.45, 0.65)), 0, -1)
    elif name == "rectangle":
        aspect = rng.uniform(0.45, 1.0)
        box = cv2.boxPoints(((cx, cy), (2 * radius, 2 * radius * aspect), np.degrees(angle)))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    elif name == "triangle":
        polygon(np.full(3, radius * 1.1), 3)
    elif name == "star":
        polygon(np.tile([radius * 1.15, radius * 0.48], 5), 10)
    else:
        raise ValueError(f"no shape for class {shape_class}")
    return mask.astype(bool)


def random_scene(rng: np.random.Generator, height: int, width: int,
                 objects: tuple = (2, 6)) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-smooth scene -> (image (H,W,3) uint8 RGB, label (H,W) uint8 in SHAPE_CLASSES ids)."""
    background = rng.uniform(40, 215, 3)
    image = _gradient(rng, height, width, background, rng.uniform(15, 45))
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        shape_class = int(rng.integers(1, len(SHAPE_CLASSES)))
        mask = _shape_mask(rng, shape_class, height, width)
        under = image[mask].mean(0) if mask.any() else background
        # a colour clearly different from what it covers, so every outline is a real edge
        colour = _contrasting(rng, under, low=25, high=230)
        image[mask] = _gradient(rng, height, width, colour, rng.uniform(10, 35))[mask]
        label[mask] = shape_class
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _contrasting(rng: np.random.Generator, under: np.ndarray, gap: float = 70,
                 low: float = 20, high: float = 235) -> np.ndarray:
    """A random colour in [low, high) whose largest channel difference from `under` exceeds `gap`
    (20 tries)."""
    for _ in range(20):
        colour = rng.uniform(low, high, 3)
        if np.abs(colour - under).max() > gap:
            break
    return colour


def vector_art(rng: np.random.Generator, height: int, width: int,
               objects: tuple = (3, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Vector-art scene like a smoothing ground truth -> (image (H,W,3) uint8, label (H,W) uint8).

    Shapes with colour gradients (labelled by SHAPE_CLASSES, as random_scene), about half of them
    outlined (1-3 px, dark or contrasting), thin lines and curves (1-2 px) and small details
    (dots and squares of 2-5 px) that a smoother must keep. Lines and details are labelled 255
    (ignored by the segmentation loss): they belong to no shape class.
    """
    background = rng.uniform(30, 225, 3)
    image = _gradient(rng, height, width, background, rng.uniform(10, 50))
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        shape_class = int(rng.integers(1, len(SHAPE_CLASSES)))
        mask = _shape_mask(rng, shape_class, height, width)
        if not mask.any():
            continue
        colour = _contrasting(rng, image[mask].mean(0))
        image[mask] = _gradient(rng, height, width, colour, rng.uniform(5, 40))[mask]
        label[mask] = shape_class
        if rng.random() < 0.5:
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            line = rng.uniform(10, 50, 3) if rng.random() < 0.6 else _contrasting(rng, colour)
            canvas = np.zeros((height, width), np.uint8)
            cv2.drawContours(canvas, contours, -1, 1, int(rng.integers(1, 4)))
            image[canvas > 0] = line
    details = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(0, 5))):  # thin lines and curves through a few control points
        points = np.stack([rng.uniform(0, width, 4), rng.uniform(0, height, 4)], 1)
        t = np.linspace(0, 1, 64)[:, None]
        curve = ((1 - t) ** 3 * points[0] + 3 * (1 - t) ** 2 * t * points[1] + 3 * (1 - t) * t ** 2 * points[2]
                 + t ** 3 * points[3])
        canvas = np.zeros((height, width), np.uint8)
        cv2.polylines(canvas, [np.round(curve).astype(np.int32)], False, 1, int(rng.integers(1, 3)))
        image[canvas > 0] = _contrasting(rng, image[canvas > 0].mean(0))
        details |= canvas
    for _ in range(int(rng.integers(0, 9))):  # small dots and squares
        canvas = np.zeros((height, width), np.uint8)
        centre, radius = (int(rng.integers(0, width)), int(rng.integers(0, height))), int(rng.integers(2, 6))
        if rng.random() < 0.5:
            cv2.circle(canvas, centre, radius, 1, -1)
        else:
            cv2.rectangle(canvas, (centre[0] - radius, centre[1] - radius), (centre[0] + radius, centre[1] + radius), 1, -1)
        image[canvas > 0] = _contrasting(rng, image[canvas > 0].mean(0))
        details |= canvas
    label[details > 0] = 255
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


# --- procedural textures (periodic over `size`) -------------------------------------------------

def _to_uint8(pattern: np.ndarray) -> np.ndarray:
    pattern = pattern - pattern.min()
    return np.rint(255 * pattern / max(pattern.max(), 1e-9)).astype(np.uint8)


def fractal_noise(rng: np.random.Generator, size: int, beta: float | None = None) -> np.ndarray:
    """1/f^beta noise made in the Fourier domain (hence periodic) -> (size,size) uint8."""
    beta = rng.uniform(0.9, 1.6) if beta is None else beta
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.sqrt(fx ** 2 + fy ** 2)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius ** beta
    spectrum[0, 0] = 0
    spectrum[radius > 0.35] = 0  # keep it a texture, not pixel noise
    return _to_uint8(np.fft.irfft2(spectrum, s=(size, size)))


def stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sinusoidal or square stripes at an angle whose periods divide `size` -> (size,size) uint8."""
    ky, kx = int(rng.integers(0, 5)), int(rng.integers(1, 9))
    yy, xx = np.mgrid[0:size, 0:size] / size
    wave = np.sin(2 * np.pi * (kx * xx + ky * yy))
    if rng.random() < 0.5:
        wave = np.sign(wave) * np.abs(wave) ** 0.25  # sharper, square-ish stripes
    return _to_uint8(wave)


def weave(rng: np.random.Generator, size: int) -> np.ndarray:
    """Over-under basket weave of horizontal and vertical threads -> (size,size) uint8."""
    cells = int(rng.choice([4, 8, 16]))
    cell = size / cells
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    iy, ix = (yy // cell).astype(int), (xx // cell).astype(int)
    fy, fx = (yy % cell) / cell, (xx % cell) / cell
    horizontal = np.sin(np.pi * fy) ** 0.5  # a thread's rounded profile across its width
    vertical = np.sin(np.pi * fx) ** 0.5
    pattern = np.where((iy + ix) % 2 == 0, horizontal * (0.6 + 0.4 * np.sin(np.pi * fx)),
                       vertical * (0.6 + 0.4 * np.sin(np.pi * fy)))
    return _to_uint8(pattern)


def dots(rng: np.random.Generator, size: int) -> np.ndarray:
    """Jittered grid of soft dots (wrapped at the border) -> (size,size) uint8."""
    cells = int(rng.choice([4, 6, 8, 12]))
    cell = size / cells
    radius = cell * rng.uniform(0.18, 0.35)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    pattern = np.zeros((size, size))
    for i in range(cells):
        for j in range(cells):
            cy = (i + 0.5 + rng.uniform(-0.2, 0.2)) * cell
            cx = (j + 0.5 + rng.uniform(-0.2, 0.2)) * cell
            dy = np.minimum(np.abs(yy - cy), size - np.abs(yy - cy))
            dx = np.minimum(np.abs(xx - cx), size - np.abs(xx - cx))
            pattern = np.maximum(pattern, np.clip(1.5 - np.hypot(dy, dx) / radius, 0, 1))
    return _to_uint8(pattern)


PROCEDURAL = {"fractal": fractal_noise, "stripes": stripes, "weave": weave, "dots": dots}


def procedural_texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One periodic procedural texture of PROCEDURAL_TEXTURES -> (size,size) uint8 gray."""
    return PROCEDURAL[kind](rng, size)


# --- textures and photographs shipped with scikit-image -------------------------------------------

@functools.lru_cache(maxsize=None)
def _skimage_image(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def real_texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Random crop of skimage's `name` texture, scaled 0.5-1.5x and rotated -> (size,size) uint8."""
    source = _skimage_image(name)
    if source.ndim == 3:
        source = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
    scale = rng.uniform(0.5, 1.5)
    angle = float(rng.choice([0.0, 90.0, rng.uniform(-40, 40)]))
    # crop a window big enough that the rotated, scaled square stays inside it
    window = int(np.ceil(size / scale * (abs(np.cos(np.radians(angle))) + abs(np.sin(np.radians(angle))))))
    window = min(window, min(source.shape) - 1)
    y = int(rng.integers(0, source.shape[0] - window + 1))
    x = int(rng.integers(0, source.shape[1] - window + 1))
    crop = source[y:y + window, x:x + window]
    centre = (window / 2, window / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += np.array([size / 2, size / 2]) - np.array(centre)
    return cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def photo_crop(name: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Random crop of skimage's colour photograph `name`, resized 0.35-1x -> (H,W,3) uint8 RGB."""
    photo = _skimage_image(name)
    short = min(photo.shape[:2])
    need = max(height, width)
    scale = rng.uniform(max(0.35, need / short), max(1.0, need / short))
    resized = cv2.resize(photo, (max(width, round(photo.shape[1] * scale)),
                                 max(height, round(photo.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    y = int(rng.integers(0, resized.shape[0] - height + 1))
    x = int(rng.integers(0, resized.shape[1] - width + 1))
    return np.ascontiguousarray(resized[y:y + height, x:x + width])


# --- flat, outlined pictures ------------------------------------------------------------------

def palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """n saturated, distinct colours (HSV with spread hues)."""
    hues = (rng.uniform(0, 180) + np.arange(n) * 180 / n) % 180
    hsv = np.stack([hues, rng.uniform(120, 230, n), rng.uniform(110, 250, n)], -1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def cartoon(picture: np.ndarray, rng: np.random.Generator, colours: int = 6) -> np.ndarray:
    """Posterised picture with dark outlines: flat k-means colours of a smoothed copy (a seeded
    palette for gray pictures), outlines where the colour changes."""
    smooth = cv2.bilateralFilter(cv2.bilateralFilter(picture, 9, 60, 7), 9, 60, 7)
    samples = smooth.reshape(-1, 3).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    cv2.setRNGSeed(int(rng.integers(2**31)))
    _, labels, centres = cv2.kmeans(samples, colours, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(picture.shape[:2])
    labels = cv2.medianBlur(labels.astype(np.uint8), 5)  # no specks: flat regions
    gray_source = float(np.abs(picture[..., 0].astype(int) - picture[..., 1]).mean()) < 2
    if gray_source:
        order = np.argsort(centres[:, 0])
        colours_rgb = palette(rng, colours)[np.argsort(order)]
    else:
        colours_rgb = np.clip(centres, 0, 255).astype(np.uint8)
    flat = colours_rgb[labels]
    outline = cv2.dilate((cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0)
                         .astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
    flat[outline] = (25, 22, 30)
    return flat


def normalise_contrast(texture: np.ndarray, target_std: float) -> np.ndarray:
    """Gray uint8 texture rescaled about its mean to standard deviation ~target_std (uint8)."""
    t = texture.astype(np.float64)
    scaled = t.mean() + (t - t.mean()) * (target_std / max(t.std(), 1e-6))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
