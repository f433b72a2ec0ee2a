"""Build the art training dataset from Debian's free art packages: collages of clip art with class
maps, photo crops, and a texture pool of GIMP patterns and textured regions of photographs.

    apt-get install openclipart-png gimp-data mate-backgrounds plasma-workspace-wallpapers ukui-wallpapers
    python dataset_utils/make_art_data.py --out data/art [--seed 0] [--size tiny|default] [--overwrite]
    python train.py --config configs/art.yaml      # online blending over data/art/textures

Reads only csgis.data.packages.TRAIN_PACKAGES (through dpkg's file lists; nothing is downloaded);
the benchmark's packages (make_art_bench.py) are never read. Structures (ground truths):
  - *collage* (80 %): 1-5 flat clip-art cut-outs (csgis.data.collage) on flat, two-colour or
    gradient backgrounds, overlapping, some outlined, at several scales; seg/ holds each object's
    class (csgis.data.packages.ART_CLASSES, from openclipart's category folders);
  - *photo* (20 %): a crop of a wallpaper photograph smoothed by the GT smoother (no label).
Clip art and photographs are divided between the splits by file. Textures: `textures/` (training
pool: 80 % of gimp-data's patterns and textured crops of the training photographs) and
`textures_eval/` (the other patterns and crops of the val/test photographs, for the stored val/test
inputs). Each structure gets stored inputs too (gray or colour blend, scale 0.5-2, amplitude
0.6-1.3 at 25 gray levels), so the folder is a complete `format: manifest` dataset. dataset.json
records every file read with its package and licence (`sources`), and catalogue.json what the
builder thought of every clip-art file.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from csgis.data import art, blend, packages
from csgis.data.manifest import (OutputDirError, prepare_output_dir, split_counts, write_dataset_info,
                                 write_manifest)
from csgis.runtime import parallel_map

from builder_cli import add_build_arguments

SIZES = {  # structures; side range; stored inputs per structure; texture crops per photo
    "tiny": dict(structures=10, sides=(48, 64), per_structure=1, crops_per_photo=1),
    "default": dict(structures=1000, sides=(192, 288), per_structure=1, crops_per_photo=4),
}
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}
PHOTO_FRACTION = 0.2
PATTERN_TRAIN_FRACTION = 0.8
STORED_SCALES = (0.5, 2.0)
STORED_AMPLITUDES = (0.6, 1.3)
TEXTURE_STD = 25.0
BUILDER = "make_art_data"
OVER_SMOOTHER = blend.OVER_SMOOTHER + "+gaussian:sigma=2.0"  # flat GTs need the blur too (as the rich data)
VERSION = 1


def plan_textures(rng, out: Path, size: dict, photo_split: dict, dpkg_info) -> dict:
    """Write both pools; {folder: {name: source path}}."""
    patterns = art.pattern_files([p for p in packages.TRAIN_PACKAGES if packages.PACKAGES[p] == "patterns"],
                                 dpkg_info)
    train, held = art.split_pool(patterns, rng, PATTERN_TRAIN_FRACTION)
    pools = {"textures": art.write_patterns(train, out / "textures"),
             "textures_eval": art.write_patterns(held, out / "textures_eval")}
    photos = {"textures": photo_split["train"], "textures_eval": photo_split["val"] + photo_split["test"]}
    for folder, pool in pools.items():
        pool.update(art.write_photo_textures(photos[folder], out / folder, rng, size["crops_per_photo"]))
    return pools


def plan_structures(rng, size: dict, cutouts: dict, photo_split: dict, pools: dict) -> list[dict]:
    jobs = []
    count = size["structures"]
    for index in range(count):
        split = "val" if index % 10 == 0 else "test" if index % 10 == 5 else "train"
        kind = "photo" if rng.random() < PHOTO_FRACTION and photo_split[split] else "collage"
        folder = "textures" if split == "train" else "textures_eval"
        blends = {}
        for name in rng.choice(sorted(pools[folder]), size["per_structure"], replace=False):
            blends[str(name)] = {"texture": str(name), "mode": str(rng.choice(blend.BLENDS)),
                                 "scale": float(np.exp(rng.uniform(*np.log(STORED_SCALES)))),
                                 "amplitude": float(rng.uniform(*STORED_AMPLITUDES)),
                                 "offset": [int(v) for v in rng.integers(0, 256, 2)]}
        height, width = (int(v) for v in rng.integers(size["sides"][0], size["sides"][1] + 1, 2))
        job = {"id": f"{kind}{index:04d}", "split": split, "kind": kind, "seed": int(rng.integers(2**31)),
               "height": height, "width": width, "blends": blends, "texture_folder": folder,
               "texture_std": TEXTURE_STD}
        if kind == "collage":
            job["cutouts"] = art.pick_cutouts(rng, cutouts[split], int(rng.integers(1, 6)))
        else:
            job["photo"] = str(rng.choice(photo_split[split]))
        jobs.append(job)
    return jobs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_arguments(p, SIZES)
    p.add_argument("--over-smoother", default=OVER_SMOOTHER,
                   help="over-smoother for collages; 'a+b' chains (default %(default)s)")
    args = p.parse_args(argv)
    dpkg_info = packages.DPKG_INFO
    try:
        for spec in (args.gt_smoother, args.over_smoother):
            blend.check_spec(spec)
        packages.require(packages.TRAIN_PACKAGES, dpkg_info)
        size = SIZES[args.size]
        out = Path(args.out)
        config = {"size": args.size, "version": VERSION, "gt_smoother": args.gt_smoother,
                  "over_smoother": args.over_smoother, "packages": list(packages.TRAIN_PACKAGES)}
        identity = {"name": f"csgis-art-{args.size}", "builder": BUILDER, "seed": args.seed, "config": config}
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
        art_packages = [p for p in packages.TRAIN_PACKAGES if packages.PACKAGES[p] == "art"]
        entries = art.art_catalogue(art_packages, out, args.workers, dpkg_info)
        cutouts = art.split_by_class([e for e in entries if e["accepted"]], rng, SPLITS)
        photo_files = [str(f) for pk in packages.TRAIN_PACKAGES if packages.PACKAGES[pk] == "photos"
                       for f in packages.package_files(pk, dpkg_info)]
        order = rng.permutation(len(photo_files))
        n_eval = max(1, round(0.1 * len(photo_files)))
        photo_split = {"val": [photo_files[k] for k in order[:n_eval]],
                       "test": [photo_files[k] for k in order[n_eval:2 * n_eval]],
                       "train": [photo_files[k] for k in order[2 * n_eval:]]}
        pools = plan_textures(rng, out, size, photo_split, dpkg_info)
        jobs = plan_structures(rng, size, cutouts, photo_split, pools)
        for job in jobs:
            job.update(root=str(out), gt_smoother=args.gt_smoother, over_smoother=args.over_smoother)
        results = parallel_map(art.build_structure, jobs, args.workers, "structures")
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to continue the build in {out}", file=sys.stderr)
        return 130
    rows = [row for rs in results for row in rs]
    write_manifest(out, rows)
    counts = split_counts(rows)
    textures = {name: src for pool in pools.values() for name, src in pool.items()}
    index = art.package_index(packages.TRAIN_PACKAGES, dpkg_info)
    info.update(complete=True, counts=counts,
                kinds={k: sum(j["kind"] == k for j in jobs) for k in ("collage", "photo")},
                textures={folder: len(pool) for folder, pool in pools.items()},
                cutouts={split: len(v) for split, v in cutouts.items()},
                sources=art.sources_record(jobs, textures, index))
    write_dataset_info(out, info)
    print(f"{'resumed' if state == 'resume' else 'built'} {info['name']} in {out} ({time.time() - start:.1f} s)")
    for split in SPLITS:
        c = counts.get(split, {"samples": 0, "structures": 0})
        print(f"  {split:5s}: {c['samples']:4d} stored samples from {c['structures']:4d} structure images, "
              f"{len(cutouts[split])} clip-art files")
    print(f"  textures: {len(pools['textures'])} for training (textures/), {len(pools['textures_eval'])} "
          f"for stored val/test inputs (textures_eval/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
