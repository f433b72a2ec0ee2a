"""Side-by-side comparison image: input | method 1 | method 2 | ... | GT, for a few samples of a split.

    python scripts/make_comparison.py --data data/demo --split test --method ours=results/ours \
        --method L0=results/baselines/l0 --out docs/comparison.png [--n 6 | --ids ID,ID,...] [--cell 224]

Each method folder holds one PNG per sample named <id>.png (as show.py and baselines.py --save
write them; searched recursively). Samples are picked one per structure image, mixing kinds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csgis.data.manifest import ManifestError, read_manifest
from csgis.io import ImageReadError, list_images, read_image, write_image
from csgis.visualize import image_grid, pick_samples


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder with manifest.csv")
    p.add_argument("--split", default="test")
    p.add_argument("--method", action="append", default=[], metavar="NAME=DIR",
                   help="a column: results folder with <id>.png files (repeatable, in order)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--n", type=int, default=6, help="number of samples (rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell", type=int, default=224)
    p.add_argument("--ids", default="", help="comma-separated sample ids to show, in order (instead of --n/--seed)")
    args = p.parse_args(argv)
    root = Path(args.data)
    try:
        methods = []
        for item in args.method:
            name, sep, folder = item.partition("=")
            if not sep or not Path(folder).is_dir():
                raise ValueError(f"--method {item!r}: expected NAME=DIR with an existing folder")
            methods.append((name, {f.stem: f for f in list_images(folder)}))
        rows = read_manifest(root, split=args.split)
        if args.ids:
            by_id = {row["id"]: row for row in rows}
            ids = args.ids.split(",")
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise ValueError(f"--ids: no sample {missing[0]!r} in the {args.split} split of {root}")
            chosen = [by_id[i] for i in ids]
        else:
            chosen = pick_samples(rows, args.n, args.seed)
        grid_rows = []
        for row in chosen:
            cells = [read_image(root / row["input"])]
            for name, files in methods:
                if row["id"] not in files:
                    raise ValueError(f"method '{name}' has no result for sample '{row['id']}'")
                cells.append(read_image(files[row["id"]]))
            cells.append(read_image(root / row["gt"]))
            grid_rows.append(cells)
        titles = ["input"] + [name for name, _ in methods] + ["GT"]
        write_image(args.out, image_grid(grid_rows, args.cell, titles))
    except (ManifestError, ImageReadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(chosen)} rows ({' | '.join(titles)}): " + ", ".join(r["id"] for r in chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
