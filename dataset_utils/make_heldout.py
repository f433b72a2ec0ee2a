"""Build the held-out benchmark (csgis/data/heldout.py): structures and textures from sources that
no training data builder uses, in two blends and three texture scales. Nothing is downloaded.

    python dataset_utils/make_heldout.py --out data/heldout [--seed 0] [--size tiny|default] [--overwrite]

Splits by source picture: `val` (coins, phantom, page, clock: where the classical smoothers' parameters
are chosen) and `test` (camera, horse, logo, colour wheel). Each structure image gets six textured
inputs: three in the gray blend and three in the colour blend, at texture scales 0.5, 1 and 2.
dataset.json records every sample's blend, texture, scale, amplitude, source and kind.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from csgis.data import blend as classical
from csgis.data import heldout
from csgis.data.manifest import (OutputDirError, prepare_output_dir, split_counts, structure_rows,
                                 write_dataset_info, write_manifest, write_structure)

BUILDER = "make_heldout"
VERSION = 2  # 2: the clock added to val (heldout.ADDED_SOURCES); every older sample unchanged
SIZES = {  # crops of each source picture and kind per split, and their size (tiny: for tests)
    "tiny": {"crops": {"val": 1, "test": 1}, "height": 60, "width": 80},
    "default": {"crops": {"val": 1, "test": 2}, "height": heldout.HEIGHT, "width": heldout.WIDTH},
}


def plan(seed: int, size: dict) -> list[dict]:
    rng = np.random.default_rng(seed)
    gray = list(heldout.HELDOUT_TEXTURES)                              # any texture, made gray
    colour = [t for t, kind in heldout.HELDOUT_TEXTURES.items() if kind == "colour"]
    jobs = []
    first = [(split, [s for s in sources if s not in heldout.ADDED_SOURCES])
             for split, sources in (("val", heldout.VAL_SOURCES), ("test", heldout.TEST_SOURCES))]
    added = [(split, [s for s in heldout.ADDED_SOURCES if s in sources])
             for split, sources in (("val", heldout.VAL_SOURCES), ("test", heldout.TEST_SOURCES))]
    for split, sources in first + added:  # added sources last: the older samples keep their draws
        for source in sources:
            for kind in heldout.HELDOUT_STRUCTURES[source]:
                for k in range(size["crops"][split]):
                    samples = []
                    for mode, pool in (("gray", gray), ("colour", colour)):
                        picks = rng.choice(pool, len(heldout.SCALES), replace=False)
                        for i, (name, scale) in enumerate(zip(picks, heldout.SCALES)):
                            amplitude = heldout.GRAY_AMPLITUDES[i] if mode == "gray" else heldout.COLOUR_AMPLITUDE
                            samples.append({"token": f"{name}-{mode}-s{scale:g}", "texture": str(name), "blend": mode,
                                            "scale": float(scale), "amplitude": float(amplitude),
                                            "offset": [int(v) for v in rng.integers(0, 512, 2)],
                                            "seed": int(rng.integers(2**31))})
                    jobs.append({"id": f"{source}_{kind}{k}", "split": split, "source": source, "kind": kind,
                                 "seed": int(rng.integers(2**31)), "samples": samples,
                                 "height": size["height"], "width": size["width"]})
    return jobs


def build(job: dict, root: Path, gt_smoother: str, over_smoother: str) -> list[dict]:
    rows = structure_rows(job["id"], job["split"], [s["token"] for s in job["samples"]], with_seg=False)

    def make():
        gt = heldout.structure(job["source"], job["kind"], np.random.default_rng(job["seed"]), gt_smoother,
                               job["height"], job["width"])
        inputs = {}
        for s in job["samples"]:
            pattern = heldout.texture(s["texture"], np.random.default_rng(s["seed"]))
            inputs[s["token"]] = heldout.blend(gt, pattern, s["blend"], s["scale"], s["amplitude"], s["offset"])
        return {"gt": gt, "over": classical.smooth_spec(gt, over_smoother), "seg": None, "inputs": inputs}

    write_structure(root, rows, make)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=list(SIZES), default="default", help="tiny: small crops, for tests")
    p.add_argument("--overwrite", action="store_true", help="replace a different held-out build in --out")
    args = p.parse_args(argv)
    gt_smoother, over_smoother = classical.GT_SMOOTHER, classical.OVER_SMOOTHER + "+gaussian:sigma=2.0"
    identity = {"name": f"csgis-heldout-{args.size}", "builder": BUILDER, "seed": args.seed,
                "config": {"version": VERSION, "size": args.size, "gt_smoother": gt_smoother, "over_smoother": over_smoother}}
    out = Path(args.out)
    try:
        prepare_output_dir(out, identity, args.overwrite)
    except (ValueError, OSError, OutputDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.time()
    write_dataset_info(out, dict(identity, complete=False))
    jobs = plan(args.seed, SIZES[args.size])
    rows = []
    for job in jobs:
        rows += build(job, out, gt_smoother, over_smoother)
    write_manifest(out, rows)
    samples = {f"{job['id']}__{s['token']}": {"source": job["source"], "kind": job["kind"],
                                                **{k: s[k] for k in ("texture", "blend", "scale", "amplitude")}}
               for job in jobs for s in job["samples"]}
    counts = split_counts(rows)
    write_dataset_info(out, dict(identity, complete=True, counts=counts, samples=samples,
                                 sources={"structures": heldout.HELDOUT_STRUCTURES,
                                          "textures": heldout.HELDOUT_TEXTURES}))
    print(f"built {out}: " + ", ".join(f"{k} {v['samples']} samples ({v['structures']} structures)"
                                      for k, v in counts.items()) + f" in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
