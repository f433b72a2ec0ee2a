"""Build the rich training dataset: varied structures and a wide texture pool, for online blending.

    python dataset_utils/make_rich_data.py --out data/rich [--seed 0] [--size tiny|default] [--overwrite]
    python train.py --config configs/rich.yaml            # trains on it with a new blend per sample

Structure images (ground truths), each with its over-smoothed negative:
  - *art*: vector art (csgis.data.synthetic.vector_art): shapes with gradients, outlines, thin
    lines and small details; labelled by shape class (lines and details 255);
  - *cartoon*: posterised, outlined crops of scikit-image's colour photographs (synthetic.cartoon);
  - *photo*: crops of the same photographs smoothed by the GT smoother (as the demo's photos).
  The photographs are synthetic.PHOTOS, divided between the splits; none is a held-out benchmark
  source (csgis.data.heldout; tests/test_heldout.py checks it).
Textures (csgis.data.textures, every family, gray and colour, periodic; --colour-textures multi
  adds multi-coloured ones to the duotones): `textures/` is the
  training pool that online blending draws from (configs/rich.yaml); `textures_eval/` holds other
  draws of the same families for the stored val/test inputs, so those are never a training texture.
Each structure also gets stored inputs (blend.blend_layer: gray or colour, scale 0.5-2,
  amplitude 0.6-1.3 at 25 gray levels), so the folder is a complete `format: manifest` dataset too.
Default size: 300 structures of 160-256 px, 6 textures per family and kind in each pool.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from csgis.data import blend, synthetic, textures
from csgis.data.manifest import (OutputDirError, prepare_output_dir, split_counts, structure_rows,
                                 write_dataset_info, write_manifest, write_structure)
from csgis.io import read_image, write_image
from csgis.runtime import parallel_map

from builder_cli import add_build_arguments

SIZES = {
    #          structures, side range, stored inputs/structure, textures per family and kind, texture sides
    "tiny":    dict(structures=12, sides=(48, 64), per_structure=1, per_family=1, texture_sides=(24, 32)),
    "default": dict(structures=300, sides=(160, 256), per_structure=2, per_family=6,
                    texture_sides=(48, 64, 96, 128, 160)),
}
KIND_FRACTIONS = {"art": 0.5, "cartoon": 0.25, "photo": 0.25}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("train", "val", "test")
STORED_SCALES = (0.5, 2.0)
STORED_AMPLITUDES = (0.6, 1.3)
TEXTURE_STD = 25.0
BUILDER = "make_rich_data"
OVER_SMOOTHER = blend.OVER_SMOOTHER + "+gaussian:sigma=2.0"  # as the demo scenes: flat GTs need the blur too
VERSION = 1


COLOUR_TEXTURES = ("duotone", "multi")
STYLE_LETTERS = {"gray": "g", "duotone": "c", "multi": "m"}


def plan_textures(rng: np.random.Generator, size: dict, folder: str, styles=("gray", "duotone")) -> list[dict]:
    """One entry per texture of a pool: every family in every colour style, per_family of each."""
    plan = []
    for family in textures.ALL_FAMILIES:
        for colour in styles:
            for i in range(size["per_family"]):
                plan.append({"name": f"{family}_{STYLE_LETTERS[colour]}{i:02d}", "folder": folder,
                             "family": family, "colour": colour, "side": int(rng.choice(size["texture_sides"])),
                             "seed": int(rng.integers(2**31))})
    return plan


def make_texture(spec: dict) -> np.ndarray:
    return textures.make_texture(spec["family"], np.random.default_rng(spec["seed"]), spec["side"], spec["colour"])


def write_texture(job: dict) -> str:
    path = Path(job["root"]) / job["folder"] / f"{job['name']}.png"
    if not path.is_file():
        write_image(path, make_texture(job))
    return job["name"]


def plan_structures(rng: np.random.Generator, size: dict, eval_textures: list[str],
                    train_textures: list[str]) -> list[dict]:
    """One job per structure: id, split, kind, seed, shape, photo, stored blends."""
    photos = list(rng.permutation(synthetic.PHOTOS))
    photo_split = {"train": photos[:6], "val": photos[6:7], "test": photos[7:]}
    jobs = []
    for kind, fraction in KIND_FRACTIONS.items():
        count = max(3, round(size["structures"] * fraction))
        bounds = np.cumsum([max(1, round(count * f)) for f in SPLIT_FRACTIONS[1:]])
        for index, order in enumerate(rng.permutation(count)):
            split = "val" if order < bounds[0] else "test" if order < bounds[1] else "train"
            pool = train_textures if split == "train" else eval_textures
            blends = {}
            for name in rng.choice(pool, size["per_structure"], replace=False):
                blends[str(name)] = {"mode": str(rng.choice(blend.BLENDS)),
                                     "scale": float(np.exp(rng.uniform(*np.log(STORED_SCALES)))),
                                     "amplitude": float(rng.uniform(*STORED_AMPLITUDES)),
                                     "offset": [int(v) for v in rng.integers(0, 256, 2)]}
            height, width = (int(v) for v in rng.integers(size["sides"][0], size["sides"][1] + 1, 2))
            jobs.append({"id": f"{kind}{index:04d}", "split": split, "kind": kind, "seed": int(rng.integers(2**31)),
                         "height": height, "width": width, "blends": blends,
                         "photo": str(rng.choice(photo_split[split])) if kind != "art" else "",
                         "texture_folder": "textures" if split == "train" else "textures_eval"})
    return jobs


def make_structure(job: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(gt, over-smoothed, label or None) of one job."""
    rng = np.random.default_rng(job["seed"])
    if job["kind"] == "art":
        gt, seg = synthetic.vector_art(rng, job["height"], job["width"])
        return gt, blend.smooth_spec(gt, job["over_smoother"]), seg
    photo = synthetic.photo_crop(job["photo"], rng, job["height"], job["width"])
    if job["kind"] == "cartoon":
        gt = synthetic.cartoon(photo, rng, int(rng.integers(4, 9)))
        return gt, blend.smooth_spec(gt, job["over_smoother"]), None
    return blend.smooth_spec(photo, job["gt_smoother"]), blend.smooth_spec(photo, blend.OVER_SMOOTHER), None


def build_structure(job: dict) -> list[dict]:
    """Write one structure's files (missing ones only) and return its manifest rows."""
    root = Path(job["root"])
    rows = structure_rows(job["id"], job["split"], list(job["blends"]), with_seg=job["kind"] == "art")

    def make():
        gt, over, seg = make_structure(job)
        inputs = {}
        for name, b in job["blends"].items():
            pattern = read_image(root / job["texture_folder"] / f"{name}.png")
            inputs[name] = blend.blend_layer(gt, pattern, b["mode"], b["scale"], b["amplitude"], b["offset"],
                                             TEXTURE_STD)
        return {"gt": gt, "over": over, "seg": seg, "inputs": inputs}

    write_structure(root, rows, make)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_arguments(p, SIZES)
    p.add_argument("--colour-textures", choices=COLOUR_TEXTURES, default="duotone",
                   help="colour textures besides the gray ones: duotone (colour along one direction; "
                        "the data of the report's rich rows) or multi (duotone and multi-coloured "
                        "textures, textures.make_texture) (default %(default)s)")
    p.add_argument("--over-smoother", default=OVER_SMOOTHER,
                   help="over-smoother for art and cartoons; 'a+b' chains (default %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        for spec in (args.gt_smoother, args.over_smoother):
            blend.check_spec(spec)
        size = SIZES[args.size]
        out = Path(args.out)
        config = {"size": args.size, "version": VERSION, "gt_smoother": args.gt_smoother,
                  "over_smoother": args.over_smoother}
        if args.colour_textures != "duotone":  # the default build keeps the identity it had before the option
            config["colour_textures"] = args.colour_textures
        identity = {"name": f"csgis-rich-{args.size}", "builder": BUILDER, "seed": args.seed,
                    "config": dict(config, seed=args.seed)}
        state = prepare_output_dir(out, identity, args.overwrite)
    except (ValueError, OSError, OutputDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.time()
    info = dict(identity, classes=list(synthetic.SHAPE_CLASSES), complete=False,
                edge_values="0/255", seg_ignore_index=255)
    write_dataset_info(out, info)

    rng = np.random.default_rng(args.seed)
    pools = {folder: plan_textures(rng, size, folder) for folder in ("textures", "textures_eval")}
    jobs = plan_structures(rng, size, [t["name"] for t in pools["textures_eval"]],
                           [t["name"] for t in pools["textures"]])
    if args.colour_textures == "multi":
        # drawn from their own generator after the plan above, so the structures, their stored
        # inputs and the gray and duotone textures are those of the duotone build
        extra = np.random.default_rng([args.seed, 1])
        for folder, pool in pools.items():
            pool += plan_textures(extra, size, folder, ("multi",))
    texture_jobs = [dict(t, root=str(out)) for pool in pools.values() for t in pool]
    for job in jobs:
        job.update(root=str(out), gt_smoother=args.gt_smoother, over_smoother=args.over_smoother)
    try:
        parallel_map(write_texture, texture_jobs, args.workers, "textures")
        results = parallel_map(build_structure, jobs, args.workers, "structures")
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to continue the build in {out}", file=sys.stderr)
        return 130
    rows = [row for rs in results for row in rs]
    write_manifest(out, rows)
    counts = split_counts(rows)
    info.update(complete=True, counts=counts, skipped=[],
                kinds={kind: sum(j["kind"] == kind for j in jobs) for kind in KIND_FRACTIONS},
                textures={folder: len(pool) for folder, pool in pools.items()},
                families=list(textures.ALL_FAMILIES))
    write_dataset_info(out, info)
    print(f"{'resumed' if state == 'resume' else 'built'} {info['name']} in {out} ({time.time() - start:.1f} s)")
    for split in SPLITS:
        c = counts.get(split, {"samples": 0, "structures": 0})
        print(f"  {split:5s}: {c['samples']:4d} stored samples from {c['structures']:3d} structure images")
    print(f"  textures: {len(pools['textures'])} for training (textures/), {len(pools['textures_eval'])} "
          f"for stored val/test inputs (textures_eval/), {len(textures.ALL_FAMILIES)} families")
    return 0


if __name__ == "__main__":
    sys.exit(main())
