"""A held-out benchmark: structures and textures from sources that no training data builder uses.

The demo data (csgis.data.synthetic, dataset_utils/make_demo_data.py) is made of procedural shape
scenes, crops of eight of scikit-image's photographs (synthetic.PHOTOS) and its brick, grass and
gravel textures (synthetic.REAL_TEXTURES) plus four procedural texture families. This benchmark
uses none of them: whole other photo sources and whole other texture families, all still shipped
by scikit-image, so nothing is downloaded (dataset_utils/make_heldout.py builds it).

Structures (the ground truths), about 180 x 240 px:
- *cartoon*: flat, posterised pictures of a person, an animal and objects with dark outlines
  (k-means colours of a smoothed crop; gray sources get a seeded palette), and flat line art
  (the horse silhouette, the logo, the phantom, a page of text);
- *photo*: a crop of a photograph smoothed by the demo's GT smoother (L0), as the demo's photos
  (the cameraman, the coins, the colour wheel, and a motion-blurred clock: soft edges, gentle gradients).
Textures (HELDOUT_TEXTURES): crater fields of the moon, the background of a retina photograph
(microaneurysms), tiled faces (LFW), printed text and the frames of an animated GIF (not a
checkerboard: at 2x its squares are structure, not texture). Every texture layer is brought to one
contrast (TEXTURE_STD gray levels) before its amplitude.
Blends, as in the issue that asked for this benchmark: *gray* (the authors' blend: the texture
made gray, mean removed, added to every channel) and *colour* (0.6 x the colour texture, mean
removed per channel).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from csgis.data.blend import BLENDS, blend_layer  # noqa: F401  (BLENDS: this benchmark's blends)
from csgis.data.synthetic import cartoon

# Every scikit-image picture this benchmark reads, by use; none is read by a training builder
# (tests/test_heldout.py checks that against synthetic's lists and a real build).
HELDOUT_STRUCTURES = {"camera": ("photo", "cartoon"), "coins": ("photo", "cartoon"), "horse": ("cartoon",),
                      "logo": ("cartoon",), "phantom": ("cartoon",), "color": ("photo",), "page": ("cartoon",),
                      "clock": ("photo",)}
HELDOUT_TEXTURES = {"moon": "gray", "microaneurysms": "gray", "faces": "gray", "text": "gray",
                    "gif": "colour", "moon_colour": "colour", "faces_colour": "colour"}
# Names above -> the scikit-image picture they read (when the two differ).
SOURCES = {"faces": "lfw_subset", "gif": "no_time_for_that_tiny.gif", "moon_colour": "moon", "faces_colour": "lfw_subset",
           "phantom": "shepp_logan_phantom", "color": "colorwheel"}
VAL_SOURCES = ("coins", "phantom", "page", "clock")  # parameters of the classical smoothers are chosen here
TEST_SOURCES = ("camera", "horse", "logo", "color")
# Sources added after the first version, in the order added: the builder draws them after every older
# source, so that adding one leaves the older samples as they were (version 2: the clock, a blurred
# photograph with soft edges and gentle gradients, as a validation picture nearer to the test part's
# colour wheel than the coins are).
ADDED_SOURCES = ("clock",)
SCALES = (0.5, 1.0, 2.0)
GRAY_AMPLITUDES = (1.0, 0.7, 1.0)
COLOUR_AMPLITUDE = 0.6
HEIGHT, WIDTH = 180, 240
TEXTURE_STD = 25.0          # gray levels: one contrast for every texture, as the demo normalises its own


@functools.lru_cache(maxsize=None)
def source_image(name: str) -> np.ndarray:
    """A scikit-image picture (RGB uint8, alpha flattened onto white; gray made 3-channel)."""
    import os

    import skimage.data
    from skimage import io
    if name == "lfw_subset":
        faces = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)[:64]
        image = np.concatenate([np.concatenate(list(faces[r * 8:(r + 1) * 8]), axis=1) for r in range(8)], axis=0)
    elif name.endswith(".gif"):
        frames = io.imread(os.path.join(os.path.dirname(skimage.data.__file__), name))
        image = np.concatenate([np.concatenate(list(frames[r * 7:(r + 1) * 7]), axis=1) for r in range(2)], axis=0)
    else:
        image = getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.dtype != np.uint8:  # the phantom is float in [0, 1]
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float64) / 255.0
        image = np.rint(image[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image.astype(np.uint8))


def crop(image: np.ndarray, rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH,
         fraction=(0.6, 1.0)) -> np.ndarray:
    """A random crop covering `fraction` of the picture's short side, resized to height x width."""
    h, w = image.shape[:2]
    aspect = width / height
    side = rng.uniform(*fraction) * min(h, w / aspect)
    ch, cw = max(8, int(side)), max(8, int(side * aspect))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return cv2.resize(image[y:y + ch, x:x + cw], (width, height), interpolation=cv2.INTER_AREA)


def texture(name: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A (size, size, 3) uint8 held-out texture: a crop of its source; the '_colour' variants of gray
    sources take each channel from a different crop, so colour varies with the pattern."""
    source = source_image(SOURCES.get(name, name))
    # Small crops keep the pattern's own detail (a whole 512 px picture shrunk to a tile keeps little).
    fraction = (0.6, 1.0) if min(source.shape[:2]) <= 200 else (0.2, 0.4)
    if name.endswith("_colour"):
        channels = [crop(source, rng, size, size, fraction)[..., 0] for _ in range(3)]
        return np.stack(channels, -1)
    out = crop(source, rng, size, size, fraction)
    return out if HELDOUT_TEXTURES[name] == "colour" else np.repeat(out[..., :1], 3, axis=2)


def blend(gt: np.ndarray, pattern: np.ndarray, mode: str, scale: float, amplitude: float,
          offset: tuple[int, int]) -> np.ndarray:
    """Textured input (csgis.data.blend.blend_layer at this benchmark's contrast, TEXTURE_STD)."""
    return blend_layer(gt, pattern, mode, scale, amplitude, offset, TEXTURE_STD)


def structure(source: str, kind: str, rng: np.random.Generator, gt_smoother: str, height: int = HEIGHT,
              width: int = WIDTH) -> np.ndarray:
    """One ground-truth structure image of a source and kind (module docstring)."""
    from csgis.data import blend as classical
    picture = crop(source_image(SOURCES.get(source, source)), rng, height, width)
    if kind == "photo":
        return classical.smooth_spec(picture, gt_smoother)
    if source in ("horse", "logo", "phantom", "page"):  # already line art: recolour its flat parts
        levels = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
        return cartoon(np.repeat(levels[..., None], 3, 2) if source != "logo" else picture, rng, 4)
    return cartoon(picture, rng)
