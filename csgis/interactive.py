"""Interactive segmentation: a region mask from a user's strokes or clicks.

Strokes are two boolean (H, W) masks, `include` (this belongs to the region) and `exclude` (this
does not); a click is a small disc of either kind (`click_strokes`).
- `grabcut`: OpenCV's GrabCut seeded by the strokes (no weights needed); without exclude strokes
  the image border stands for the background.
- `random_walker`: scikit-image's random walker with the strokes as seeds (no weights needed);
  the image border is always a background seed.
- `click_object`: through the segmentation network, the connected region of the class under each
  include click (exclude clicks take their discs out).
`simulate_clicks` is the standard protocol for judging them: the first click at the centre of the
object, each next one at the centre of the largest error region (a missed part: an include
click; a spill: an exclude click); IoU is recorded after every click.
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np
from scipy import ndimage

METHODS = ("grabcut", "random_walker", "click_object")
CLICK_RADIUS = 3


def _border(shape: tuple[int, int], width: int = 2) -> np.ndarray:
    border = np.zeros(shape, dtype=bool)
    border[:width], border[-width:], border[:, :width], border[:, -width:] = True, True, True, True
    return border


def _seeds(include: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    include, exclude = np.asarray(include, bool), np.asarray(exclude, bool)
    if not include.any():
        raise ValueError("no include stroke: mark at least one pixel of the region")
    if not exclude.any():
        exclude = _border(include.shape) & ~include
    return include, exclude & ~include


def grabcut(rgb: np.ndarray, include: np.ndarray, exclude: np.ndarray, iterations: int = 5) -> np.ndarray:
    """(H, W) bool region from GrabCut with the strokes as sure foreground / background."""
    include, exclude = _seeds(include, exclude)
    mask = np.full(include.shape, cv2.GC_PR_BGD, np.uint8)
    # Pixels near an include stroke are probably foreground: GrabCut needs some to start from.
    near = cv2.dilate(include.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    mask[near] = cv2.GC_PR_FGD
    mask[include], mask[exclude] = cv2.GC_FGD, cv2.GC_BGD
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    cv2.grabCut(bgr, mask, None, background, foreground, iterations, cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def random_walker(rgb: np.ndarray, include: np.ndarray, exclude: np.ndarray, beta: float = 130.0) -> np.ndarray:
    """(H, W) bool region from the random walker with the strokes as seeds."""
    from skimage.segmentation import random_walker as walk
    include, exclude = _seeds(include, exclude)
    # Unseeded background would go to whichever seed it reaches: the image border is background too.
    exclude = exclude | (_border(include.shape) & ~include)
    labels = np.zeros(include.shape, np.int32)
    labels[include], labels[exclude] = 1, 2
    with warnings.catch_warnings():  # its probability-range tolerance warning says nothing about the labels
        warnings.simplefilter("ignore", UserWarning)
        result = walk(rgb.astype(np.float64) / 255.0, labels, beta=beta, mode="cg_j", channel_axis=-1)
    return result == 1


def click_object(labels: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """The connected region of the class at `point` (row, col) in a class map (the segmenter's)."""
    y, x = point
    same = labels == labels[y, x]
    components, _ = ndimage.label(same)
    return components == components[y, x]


def click_strokes(shape: tuple[int, int], clicks: list[tuple[int, int, bool]], radius: int = CLICK_RADIUS
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Clicks [(row, col, is_include)] -> (include, exclude) stroke masks of discs."""
    include, exclude = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for y, x, positive in clicks:
        cv2.circle(include if positive else exclude, (int(x), int(y)), radius, 1, -1)
    return include.astype(bool), exclude.astype(bool)


def region_from_clicks(method: str, rgb: np.ndarray, clicks: list[tuple[int, int, bool]],
                       labels: np.ndarray | None = None) -> np.ndarray:
    """One method's region for a list of clicks (click_object needs the segmenter's class map)."""
    if method == "click_object":
        if labels is None:
            raise ValueError("click_object needs the segmenter's class map")
        region = np.zeros(rgb.shape[:2], bool)
        for y, x, positive in clicks:  # every include click adds its object
            if positive:
                region |= click_object(labels, (y, x))
        _, exclude = click_strokes(rgb.shape[:2], clicks)
        return region & ~exclude
    include, exclude = click_strokes(rgb.shape[:2], clicks)
    if method == "grabcut":
        return grabcut(rgb, include, exclude)
    if method == "random_walker":
        return random_walker(rgb, include, exclude)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def next_click(target: np.ndarray, prediction: np.ndarray) -> tuple[int, int, bool] | None:
    """The centre (farthest from its border) of the largest error region, and whether it is a miss
    (an include click) or a spill (an exclude click); None when there is no error."""
    missed, spilled = target & ~prediction, prediction & ~target
    best = None
    for error, positive in ((missed, True), (spilled, False)):
        if not error.any():
            continue
        padded = np.pad(error, 1)  # the image border counts as the region's border
        distance = cv2.distanceTransform(padded.astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(distance.argmax()), distance.shape)
        if best is None or distance[y, x] > best[0]:
            best = (float(distance[y, x]), (int(y), int(x), positive))
    return None if best is None else best[1]


def simulate_clicks(method: str, rgb: np.ndarray, target: np.ndarray, clicks: int = 5,
                    labels: np.ndarray | None = None) -> list[float]:
    """IoU with `target` after each of up to `clicks` clicks placed by the protocol (module docstring)."""
    prediction = np.zeros(target.shape, bool)
    placed: list[tuple[int, int, bool]] = []
    scores = []
    for _ in range(clicks):
        click = next_click(target, prediction)
        if click is None:
            scores.append(1.0)
            continue
        placed.append(click)
        if not any(p for _, _, p in placed):  # only exclude clicks so far: nothing selected yet
            scores.append(iou(target, prediction))
            continue
        prediction = region_from_clicks(method, rgb, placed, labels)
        scores.append(iou(target, prediction))
    return scores
