"""Save a PNG grid of dataset samples: input | GT | over-smoothed | edge | label (colourised).

    python scripts/show_samples.py --root data/demo --out /tmp/demo_grid.png [--n 6] [--split test]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csgis.data.manifest import ManifestError, read_manifest  # noqa: E402
from csgis.io import ImageReadError, read_image, read_label, voc_palette, write_image  # noqa: E402


def colourise(label: np.ndarray) -> np.ndarray:
    """(H,W) class indices -> (H,W,3) uint8 with the VOC palette (255 = ignore shows as off-white)."""
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(-1, 3)
    return palette[label]


def sample_row(root: Path, row: dict, cell: int) -> np.ndarray:
    """One grid row for a manifest row, each image letterboxed into a cell x cell square."""
    images = [read_image(root / row[k]) for k in ("input", "gt", "over", "edge")]
    shape = images[1].shape[:2]
    label = read_label(root / row["seg"]) if row["seg"] else np.full(shape, 255, np.uint8)
    images.append(colourise(label))
    cells = []
    for img in images:
        scale = cell / max(img.shape[:2])
        small = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                           interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
        canvas = np.full((cell, cell, 3), 40, np.uint8)
        canvas[:small.shape[0], :small.shape[1]] = small
        cells.append(canvas)
    return np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0))) for c in cells], axis=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="dataset folder with manifest.csv")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--n", type=int, default=6, help="number of samples (rows)")
    p.add_argument("--split", default="", help="only this split (default: all)")
    p.add_argument("--seed", type=int, default=0, help="which samples are picked")
    p.add_argument("--cell", type=int, default=256, help="size of one grid cell in pixels")
    args = p.parse_args(argv)
    root = Path(args.root)
    try:
        rows = read_manifest(root, split=args.split or None)
        if not rows:
            raise ManifestError(f"{root}: no samples in split '{args.split}'")
        # one sample per structure image, a mix of kinds, chosen reproducibly
        by_structure = {}
        for row in rows:
            by_structure.setdefault(row.get("structure") or row["gt"], row)
        groups = {}  # by the structure id's letter prefix (scene / photo), so every kind shows
        for key, row in by_structure.items():
            groups.setdefault(key.rstrip("0123456789"), []).append(row)
        rng = np.random.default_rng(args.seed)
        shuffled = [[g[i] for i in rng.permutation(len(g))] for _, g in sorted(groups.items())]
        chosen = [g[i] for i in range(max(map(len, shuffled))) for g in shuffled if i < len(g)][:args.n]
        grid = np.concatenate([sample_row(root, r, args.cell) for r in chosen], axis=0)
        write_image(args.out, grid)
    except (ManifestError, ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(chosen)} rows (input | gt | over-smoothed | edge | label): "
          + ", ".join(r["id"] for r in chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
