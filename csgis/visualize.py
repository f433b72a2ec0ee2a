"""Image grids for looking at data and results: letterboxed cells, optional column titles."""
from __future__ import annotations

import cv2
import numpy as np

from csgis.io import voc_palette


def colourise(label: np.ndarray) -> np.ndarray:
    """(H,W) class indices -> (H,W,3) uint8 with the VOC palette (255 = ignore shows as off-white)."""
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(-1, 3)
    return palette[label]


def letterbox(img: np.ndarray, cell: int, background: int = 40) -> np.ndarray:
    """(H,W) or (H,W,3) uint8 -> (cell, cell, 3): scaled to fit (nearest when enlarging), top-left aligned."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    scale = cell / max(img.shape[:2])
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    small = cv2.resize(img, size, interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
    canvas = np.full((cell, cell, 3), background, np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small
    return canvas


def title_bar(text: str, width: int, height: int = 22) -> np.ndarray:
    bar = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def image_grid(rows: list[list[np.ndarray]], cell: int = 256, titles: list[str] | None = None,
               border: int = 2) -> np.ndarray:
    """rows of images -> one uint8 RGB grid; every image letterboxed into a cell; titles above columns."""
    pad = ((border, border), (border, border), (0, 0))
    lines = [np.concatenate([np.pad(letterbox(img, cell), pad) for img in row], axis=1) for row in rows]
    grid = np.concatenate(lines, axis=0)
    if titles:
        step = cell + 2 * border
        bar = np.concatenate([title_bar(t, step) for t in titles], axis=1)
        grid = np.concatenate([bar[:, :grid.shape[1]], grid], axis=0)
    return grid


def pick_samples(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """n manifest rows, one per structure image, alternating between kinds (scene / photo), reproducibly."""
    by_structure: dict = {}
    for row in rows:
        by_structure.setdefault(row.get("structure") or row["gt"], row)
    groups: dict = {}  # by the structure id's letter prefix, so every kind shows
    for key, row in by_structure.items():
        groups.setdefault(key.rstrip("0123456789"), []).append(row)
    rng = np.random.default_rng(seed)
    shuffled = [[g[i] for i in rng.permutation(len(g))] for _, g in sorted(groups.items())]
    longest = max(map(len, shuffled), default=0)
    return [g[i] for i in range(longest) for g in shuffled if i < len(g)][:n]
