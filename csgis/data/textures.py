"""A wide pool of texture families for training data that generalises (dataset_utils/make_rich_data.py).

Every generator returns a (size, size) float pattern that is PERIODIC over `size` (made in the
Fourier domain, on a torus, or from waves whose periods divide `size`), so tiling shows no seams;
`make_texture` turns it into an (size, size, 3) uint8 texture: gray, or coloured along one colour
direction (duotone) or two (multi).

Families (FAMILIES):
  spectral   1/f^beta noise with random anisotropy and orientation (clouds, stains, bark-like streaks)
  oriented   Gabor-like band-pass noise around one spatial frequency (ripples, brushed metal, hair)
  cells      cellular (Voronoi) stones and gravel: a shade per cell, rounded tops, dark joints
  wood       wood grain: warped rings along one axis plus fine fibres
  knit       knitted stitches: rows of V-shaped loops
  halftone   a rotated screen of dots whose size follows a smooth tone
  mosaic     tiles in rows (grid or running bond) with grout lines and a shade per tile
  sand       fine grain: high-frequency noise with sparse light and dark grains
  resynth    random-phase resynthesis of scikit-image's brick, grass and gravel photographs: their
             power spectrum with new phases (a new, periodic texture of the same "stuff")
plus, from csgis.data.synthetic, the demo's four procedural families (fractal, stripes, weave,
dots) and crops of the three texture photographs (brick, grass, gravel).

None of these reads a picture that the held-out benchmark (csgis.data.heldout) uses.
"""
from __future__ import annotations

import cv2
import numpy as np

from csgis.data import synthetic

FAMILIES = ("spectral", "oriented", "cells", "wood", "knit", "halftone", "mosaic", "sand", "resynth")
DEMO_FAMILIES = synthetic.PROCEDURAL_TEXTURES + synthetic.REAL_TEXTURES
ALL_FAMILIES = FAMILIES + DEMO_FAMILIES


def _frequencies(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(fy, fx) of an rfft2 grid of a size x size image, in cycles per pixel."""
    return np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]


def _filtered_noise(rng: np.random.Generator, size: int, gain: np.ndarray) -> np.ndarray:
    """White noise shaped by an amplitude `gain` on the rfft2 grid -> (size, size) float, zero mean."""
    spectrum = np.fft.rfft2(rng.normal(size=(size, size))) * gain
    spectrum[0, 0] = 0
    return np.fft.irfft2(spectrum, s=(size, size))


def _rotated(size: int, angle: float, stretch: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequency coordinates rotated by `angle` with the second axis stretched by `stretch`."""
    fy, fx = _frequencies(size)
    u = np.cos(angle) * fx + np.sin(angle) * fy
    v = (-np.sin(angle) * fx + np.cos(angle) * fy) * stretch
    return u, v


def spectral(rng: np.random.Generator, size: int) -> np.ndarray:
    """1/f^beta noise, anisotropic (one axis stretched up to 6x) at a random angle."""
    u, v = _rotated(size, rng.uniform(0, np.pi), rng.choice([1.0, rng.uniform(1.5, 6.0)]))
    radius = np.hypot(u, v)
    radius[0, 0] = 1.0
    gain = radius ** -rng.uniform(0.8, 2.0) * (radius < rng.uniform(0.2, 0.45))
    return _filtered_noise(rng, size, gain)


def oriented(rng: np.random.Generator, size: int) -> np.ndarray:
    """Band-pass noise around one frequency (period 3-16 px) and orientation: Gabor-like ripples."""
    period = rng.uniform(3.0, 16.0)
    angle = rng.uniform(0, np.pi)
    fy, fx = _frequencies(size)
    centre = (np.sin(angle) / period, np.cos(angle) / period)
    width = rng.uniform(0.08, 0.35) / period
    gain = (np.exp(-((fy - centre[0]) ** 2 + (fx - centre[1]) ** 2) / (2 * width ** 2))
            + np.exp(-((fy + centre[0]) ** 2 + (fx + centre[1]) ** 2) / (2 * width ** 2)))
    return _filtered_noise(rng, size, gain)


def _torus_distances(points: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size) distances from every pixel to each point on the size x size torus."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy = np.abs(yy[None] - points[:, 0, None, None])
    dx = np.abs(xx[None] - points[:, 1, None, None])
    return np.hypot(np.minimum(dy, size - dy), np.minimum(dx, size - dx))


def cells(rng: np.random.Generator, size: int) -> np.ndarray:
    """Voronoi stones: a random shade per cell, a rounded top, dark joints where two cells meet."""
    n = int(rng.integers(6, 40))
    distances = _torus_distances(rng.uniform(0, size, (n, 2)), size)
    order = np.sort(distances, axis=0)
    nearest = np.argmin(distances, axis=0)
    spacing = size / np.sqrt(n)
    shade = rng.uniform(-0.5, 0.5, n)[nearest]
    dome = 1 - np.clip(order[0] / (0.7 * spacing), 0, 1) ** 2
    joint = np.clip((order[1] - order[0]) / (rng.uniform(0.04, 0.15) * spacing), 0, 1)
    return (shade + rng.uniform(0.2, 0.8) * dome) * joint - (1 - joint)


def wood(rng: np.random.Generator, size: int) -> np.ndarray:
    """Wood grain: rings along one axis, warped by smooth noise, with fine fibres along the grain."""
    yy = np.mgrid[0:size, 0:size][0].astype(np.float64)
    warp = spectral_smooth(rng, size, 0.05)
    rings = int(rng.integers(2, 12))
    phase = 2 * np.pi * (rings * yy / size + rng.uniform(0.05, 0.3) * warp)
    grain = (0.5 + 0.5 * np.sin(phase)) ** rng.uniform(1.0, 4.0)
    fibres = _filtered_noise(rng, size, _rotated_gain(size, np.pi / 2, 8.0))  # long along x, like the rings
    pattern = grain + 0.3 * fibres / max(fibres.std(), 1e-9) * grain.std()
    return pattern if rng.random() < 0.5 else pattern.T


def _rotated_gain(size: int, angle: float, stretch: float) -> np.ndarray:
    u, v = _rotated(size, angle, stretch)
    radius = np.hypot(u, v)
    radius[0, 0] = 1.0
    return radius ** -1.0 * (radius < 0.4)


def spectral_smooth(rng: np.random.Generator, size: int, cutoff: float) -> np.ndarray:
    """Smooth periodic noise (frequencies below `cutoff` cycles/pixel) scaled to unit std."""
    fy, fx = _frequencies(size)
    gain = np.exp(-(fy ** 2 + fx ** 2) / (2 * cutoff ** 2))
    noise = _filtered_noise(rng, size, gain)
    return noise / max(noise.std(), 1e-9)


def knit(rng: np.random.Generator, size: int) -> np.ndarray:
    """Rows of V-shaped stitches: each cell holds two slanted loops meeting at the bottom."""
    across = int(rng.choice([4, 8, 16]))
    down = int(rng.choice([d for d in (4, 8, 16, 32) if d >= across // 2]))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    fy = (yy % (size / down)) / (size / down)           # 0..1 within a row
    fx = (xx % (size / across)) / (size / across) - 0.5  # -0.5..0.5 within a column
    slant = rng.uniform(0.5, 1.0)
    left = 1 - np.clip(np.hypot((fx + 0.25 - slant * 0.25 * (1 - fy)) / 0.22, (fy - 0.5) / 0.55), 0, 1)
    right = 1 - np.clip(np.hypot((fx - 0.25 + slant * 0.25 * (1 - fy)) / 0.22, (fy - 0.5) / 0.55), 0, 1)
    return np.maximum(left, right) ** 0.6


def halftone(rng: np.random.Generator, size: int) -> np.ndarray:
    """A rotated dot screen (integer wave vectors keep it periodic) thresholded by a smooth tone."""
    m = int(rng.integers(4, 24))
    n = int(rng.integers(0, max(1, m // 2)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) * (2 * np.pi / size)
    screen = np.cos(m * xx + n * yy) * np.cos(-n * xx + m * yy)  # in [-1, 1], peaks at the dots
    tone = np.clip(0.2 * spectral_smooth(rng, size, 0.02) + rng.uniform(-0.3, 0.4), -0.9, 0.9)
    softness = rng.uniform(0.05, 0.3)
    return 1 / (1 + np.exp(-(screen - tone) / softness))


def mosaic(rng: np.random.Generator, size: int) -> np.ndarray:
    """Tiles in rows (aligned grid or running bond) with grout lines and a random shade per tile."""
    rows = int(rng.choice([2, 4, 8, 16]))
    cols = int(rng.choice([c for c in (2, 4, 8, 16) if c >= rows // 2]))
    bond = rng.random() < 0.5
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    row = (yy // (size / rows)).astype(int)
    shifted = xx + (row % 2) * (size / cols / 2 if bond else 0)
    col = (shifted // (size / cols)).astype(int) % cols
    shades = rng.uniform(-0.6, 0.6, (rows, cols))[row, col]
    grout = rng.uniform(0.04, 0.14)
    fy = (yy % (size / rows)) / (size / rows)
    fx = (shifted % (size / cols)) / (size / cols)
    edge = np.minimum(np.minimum(fy, 1 - fy) * (size / rows), np.minimum(fx, 1 - fx) * (size / cols))
    inside = np.clip(edge / (grout * size / max(rows, cols)), 0, 1)
    return shades * inside - 1.0 * (1 - inside) + 0.1 * spectral_smooth(rng, size, 0.1) * inside


def sand(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fine grain: high-frequency noise plus sparse light and dark grains (wrapped at the border)."""
    fy, fx = _frequencies(size)
    radius = np.hypot(fy, fx)
    base = _filtered_noise(rng, size, (radius > 0.15) * (radius < 0.5))
    base /= max(base.std(), 1e-9)
    grains = np.zeros((size, size))
    count = int(size * size * rng.uniform(0.002, 0.02))
    ys, xs = rng.integers(0, size, count), rng.integers(0, size, count)
    np.add.at(grains, (ys, xs), rng.choice([-3.0, 3.0], count))
    kernel = rng.uniform(0.6, 1.5)
    grains = cv2.GaussianBlur(np.tile(grains, (3, 3)), (0, 0), kernel)[size:2 * size, size:2 * size]
    return base + grains / max(grains.std(), 1e-9) * rng.uniform(0.5, 1.5)


def resynth(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random-phase resynthesis of a brick/grass/gravel crop: its amplitude spectrum, new phases."""
    crop = synthetic.real_texture(str(rng.choice(synthetic.REAL_TEXTURES)), rng, size).astype(np.float64)
    crop -= crop.mean()
    window = np.outer(np.hanning(size), np.hanning(size))  # no cross from the crop's borders
    amplitude = np.abs(np.fft.rfft2(crop * window))
    phase = np.angle(np.fft.rfft2(rng.normal(size=(size, size))))
    spectrum = amplitude * np.exp(1j * phase)
    spectrum[0, 0] = 0
    return np.fft.irfft2(spectrum, s=(size, size))


GENERATORS = {"spectral": spectral, "oriented": oriented, "cells": cells, "wood": wood, "knit": knit,
              "halftone": halftone, "mosaic": mosaic, "sand": sand, "resynth": resynth}


def pattern(family: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) float pattern of one family of ALL_FAMILIES, scaled to [0, 1]."""
    if family in GENERATORS:
        raw = GENERATORS[family](rng, size)
    elif family in synthetic.PROCEDURAL:
        raw = synthetic.procedural_texture(family, rng, size).astype(np.float64)
    elif family in synthetic.REAL_TEXTURES:
        raw = synthetic.real_texture(family, rng, size).astype(np.float64)
    else:
        raise ValueError(f"unknown texture family {family!r}; choose from {ALL_FAMILIES}")
    raw = raw - raw.min()
    return raw / max(float(raw.max()), 1e-9)


COLOUR_STYLES = ("gray", "duotone", "multi")


def make_texture(family: str, rng: np.random.Generator, size: int, colour: bool | str) -> np.ndarray:
    """(size, size, 3) uint8 texture of `family` in one of COLOUR_STYLES (False/True: gray/duotone).

    gray: the pattern as a gray image. duotone: the pattern mapped between two random colours, a
    second, smooth pattern shifting the hue a little, so the colour varies along one direction.
    multi: two independent draws of the family mapped along two colour directions (from a random
    palette of three), so the colour varies in two directions, as in multi-coloured stones,
    prints or foliage; the same small hue shift on top."""
    style = ("duotone" if colour else "gray") if isinstance(colour, bool) else colour
    if style not in COLOUR_STYLES:
        raise ValueError(f"unknown colour style {colour!r}; choose from {COLOUR_STYLES}")
    p = pattern(family, rng, size)
    if style == "gray":
        return np.repeat(np.rint(255 * p)[..., None], 3, axis=2).astype(np.uint8)
    if style == "duotone":
        low, high = synthetic.palette(rng, 2).astype(np.float64)
        rgb = low + p[..., None] * (high - low)
    else:
        first, second, third = synthetic.palette(rng, 3).astype(np.float64)
        q = pattern(family, rng, size)
        rgb = first + p[..., None] * (second - first) + (q[..., None] - 0.5) * (third - (first + second) / 2)
    rgb = rgb + spectral_smooth(rng, size, 0.03)[..., None] * rng.uniform(0, 12, 3)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def seam_ratio(texture: np.ndarray) -> float:
    """How visible the seam of a tiled texture is: the mean jump across its borders (last row to
    first, last column to first) over the largest mean jump between neighbouring rows (columns)
    inside it, the larger of the two. Periodic textures are mostly below 1 (now and then a border
    falls on an edge of the pattern); a crop of a photograph is typically near 2."""
    t = texture.astype(np.float64)
    ratios = []
    for axis in (0, 1):
        inside = np.abs(np.diff(t, axis=axis)).mean(axis=tuple(a for a in range(t.ndim) if a != axis)).max()
        first, last = np.take(t, 0, axis=axis), np.take(t, -1, axis=axis)
        border = np.abs(first - last).mean()
        ratios.append(0.0 if border == 0 else border / max(inside, 1e-9))
    return max(ratios)
