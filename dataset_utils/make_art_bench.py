"""Build the art benchmark, made the way NKS is: ground truths are collages of artists' flat images
(no smoother makes them), textures are natural patterns, in gray and colour blends at three scales.

    apt-get install tuxpaint-stamps-default gimp-data-extras
    python dataset_utils/make_art_bench.py --out data/artbench [--seed 0] [--size tiny|default] [--overwrite]

Reads only csgis.data.packages.BENCH_PACKAGES, which no training builder reads (whole packages held
out): Tux Paint's stamps (the flat, drawn ones: csgis.data.collage.FLAT_MIN) laid as collages with
class maps (seg/), and gimp-data-extras' patterns. Stamps and patterns are divided by file between
`val` (where classical smoothers get their parameters and ship decisions are made) and `test`.
Each structure gets six inputs, as the L0-GT benchmark (csgis.data.heldout): gray (the authors'
blend) at scales 0.5, 1, 2 with amplitudes 1, 0.7, 1 and colour at the same scales with amplitude
0.6, every layer at 25 gray levels. dataset.json records every sample's blend, scale, amplitude and
texture, and every file read with its package and licence.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from csgis.data import art, blend, heldout, packages
from csgis.data.manifest import (OutputDirError, prepare_output_dir, split_counts, write_dataset_info,
                                 write_manifest)
from csgis.runtime import parallel_map

SIZES = {  # structures per split and their size
    "tiny": {"structures": {"val": 1, "test": 1}, "height": 48, "width": 64},
    "default": {"structures": {"val": 8, "test": 16}, "height": 240, "width": 320},
}
SPLITS = {"val": 1 / 3, "test": 2 / 3}   # of the stamp and pattern files
BUILDER = "make_art_bench"
OVER_SMOOTHER = blend.OVER_SMOOTHER + "+gaussian:sigma=2.0"
VERSION = 1


def plan(rng, size: dict, cutouts: dict, patterns: dict) -> list[dict]:
    jobs = []
    for split in SPLITS:
        names = sorted(patterns[split])
        for index in range(size["structures"][split]):
            blends = {}
            for mode in blend.BLENDS:
                picks = rng.choice(names, len(heldout.SCALES), replace=len(names) < len(heldout.SCALES))
                for i, (name, scale) in enumerate(zip(picks, heldout.SCALES)):
                    amplitude = heldout.GRAY_AMPLITUDES[i] if mode == "gray" else heldout.COLOUR_AMPLITUDE
                    blends[f"{name}-{mode}-s{scale:g}"] = {
                        "texture": str(name), "mode": mode, "scale": float(scale), "amplitude": float(amplitude),
                        "offset": [int(v) for v in rng.integers(0, 512, 2)]}
            jobs.append({"id": f"{split}{index:03d}", "split": split, "kind": "collage",
                         "seed": int(rng.integers(2**31)), "height": size["height"], "width": size["width"],
                         "cutouts": art.pick_cutouts(rng, cutouts[split], int(rng.integers(1, 6))),
                         "blends": blends, "texture_folder": "textures", "texture_std": heldout.TEXTURE_STD})
    return jobs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=list(SIZES), default="default", help="tiny: small images, for tests")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (1: in this process)")
    p.add_argument("--overwrite", action="store_true", help="replace a different benchmark build in --out")
    args = p.parse_args(argv)
    dpkg_info = packages.DPKG_INFO
    identity = {"name": f"csgis-artbench-{args.size}", "builder": BUILDER, "seed": args.seed,
                "config": {"version": VERSION, "size": args.size, "over_smoother": OVER_SMOOTHER,
                           "packages": list(packages.BENCH_PACKAGES)}}
    out = Path(args.out)
    try:
        if args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        packages.require(packages.BENCH_PACKAGES, dpkg_info)
        state = prepare_output_dir(out, identity, args.overwrite)
    except (ValueError, OSError, OutputDirError, packages.PackageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.time()
    info = dict(identity, classes=list(packages.ART_CLASSES), complete=False, edge_values="0/255",
                seg_ignore_index=255)
    write_dataset_info(out, info)
    rng = np.random.default_rng(args.seed)
    try:
        art_packages = [p for p in packages.BENCH_PACKAGES if packages.PACKAGES[p] == "art"]
        entries = art.art_catalogue(art_packages, out, args.workers, dpkg_info)
        cutouts = art.split_by_class([e for e in entries if e["accepted"]], rng, SPLITS)
        named = art.pattern_files([p for p in packages.BENCH_PACKAGES if packages.PACKAGES[p] == "patterns"],
                                  dpkg_info)
        textured = art.write_patterns(named, out / "textures")
        patterns = dict(zip(("val", "test"), art.split_pool(textured, rng, SPLITS["val"])))
        jobs = plan(rng, SIZES[args.size], cutouts, patterns)
        for job in jobs:
            job.update(root=str(out), over_smoother=OVER_SMOOTHER, gt_smoother="")
        results = parallel_map(art.build_structure, jobs, args.workers, "structures")
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to continue the build in {out}", file=sys.stderr)
        return 130
    rows = [row for rs in results for row in rs]
    write_manifest(out, rows)
    samples = {f"{job['id']}__{token}": {"blend": b["mode"], "scale": b["scale"], "amplitude": b["amplitude"],
                                         "texture": b["texture"], "kind": "collage"}
               for job in jobs for token, b in job["blends"].items()}
    counts = split_counts(rows)
    used = {n: src for pool in patterns.values() for n, src in pool.items()}
    info.update(complete=True, counts=counts, samples=samples,
                cutouts={split: len(v) for split, v in cutouts.items()},
                textures={split: sorted(pool) for split, pool in patterns.items()},
                sources=art.sources_record(jobs, used, art.package_index(packages.BENCH_PACKAGES, dpkg_info)))
    write_dataset_info(out, info)
    print(f"{'resumed' if state == 'resume' else 'built'} {out}: " + ", ".join(
        f"{k} {v['samples']} samples ({v['structures']} structures)" for k, v in counts.items())
        + f" in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
