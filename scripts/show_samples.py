"""Save a PNG grid of dataset samples: input | GT | over-smoothed | edge | label (colourised).

    python scripts/show_samples.py --root data/demo --out /tmp/demo_grid.png [--n 6] [--split test]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from csgis.data.manifest import ManifestError, read_manifest
from csgis.io import ImageReadError, read_image, read_label, write_image
from csgis.visualize import colourise, image_grid, pick_samples


def sample_row(root: Path, row: dict) -> list[np.ndarray]:
    """input, gt, over-smoothed, edge, colourised label of one manifest row."""
    images = [read_image(root / row[k]) for k in ("input", "gt", "over", "edge")]
    shape = images[1].shape[:2]
    label = read_label(root / row["seg"]) if row["seg"] else np.full(shape, 255, np.uint8)
    return images + [colourise(label)]


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
        chosen = pick_samples(rows, args.n, args.seed)
        grid = image_grid([sample_row(root, r) for r in chosen], args.cell,
                          titles=["input", "GT", "over-smoothed", "edge", "label"])
        write_image(args.out, grid)
    except (ManifestError, ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(chosen)} rows (input | gt | over-smoothed | edge | label): "
          + ", ".join(r["id"] for r in chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
