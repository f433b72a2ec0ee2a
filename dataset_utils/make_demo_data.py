"""Build the embedded demo dataset from nothing but what the installed packages ship.

    python dataset_utils/make_demo_data.py --out data/demo [--seed 0] [--size tiny|small|default] [--overwrite]

Structure images (ground truths):
  - procedural piecewise-smooth scenes whose objects are labelled by shape (csgis.data.synthetic:
    background 0, disc 1, rectangle 2, triangle 3, ring 4, star 5); over-smoothed = the strong
    smoother applied to the clean scene;
  - crops/resizes of scikit-image's bundled colour photographs; GT = classical smoothing of the
    photo (blend.GT_SMOOTHER), over-smoothed = blend.OVER_SMOOTHER of the photo, label all 255.
    Source photographs are divided between the splits, so no photo content is shared.
Textures: crops/scales/rotations of skimage's brick, grass and gravel plus procedural fractal
  noise, stripes, weaves and dots, contrast-normalised and saved under textures/; each structure
  gets a few of them (random tiling offset and amplitude, some tinted), blended by
  csgis.data.blend. Splits are made by structure image; a few textures appear only in test.
Default size: 120 structures of 192-256 px x 3 textures (~40 s on 2 busy cores, ~36 MB).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from csgis.data import blend, synthetic
from csgis.data.manifest import (OutputDirError, prepare_output_dir, split_counts,
                                 structure_rows, write_dataset_info, write_manifest,
                                 write_structure)
from csgis.io import read_image, write_image
from csgis.runtime import parallel_map

from builder_cli import add_build_arguments

SIZES = {
    #          structures, side range, textures/structure, texture pool, test-only, texture sides
    "tiny":    dict(structures=12, sides=(48, 64), per_structure=2, pool=8, test_only=2,
                    texture_sides=(16, 24, 32)),
    "small":   dict(structures=40, sides=(128, 160), per_structure=3, pool=16, test_only=3,
                    texture_sides=(32, 48, 64)),
    "default": dict(structures=120, sides=(192, 256), per_structure=3, pool=24, test_only=4,
                    texture_sides=(48, 64, 96, 128)),
}
PHOTO_FRACTION = 0.3
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
SPLITS = ("train", "val", "test")
BUILDER = "make_demo_data"
# Scenes are already piecewise smooth, so L0 alone only flattens their gradients (checked by eye:
# the negative looked like the GT); a Gaussian after it also softens every outline, which makes
# the scene negatives clearly over-smoothed, like the photos' stronger L0.
SCENE_OVER_SMOOTHER = blend.OVER_SMOOTHER + "+gaussian:sigma=2.0"
VERSION = 1  # bump when the generated content changes, so old folders are detected as different


def split_sizes(n: int, fractions=SPLIT_FRACTIONS) -> list[int]:
    """Counts per split summing to n, every split non-empty when n >= 3."""
    val = max(1, round(n * fractions[1])) if n >= 3 else 0
    test = max(1, round(n * fractions[2])) if n >= 3 else 0
    return [n - val - test, val, test]


def plan_textures(rng: np.random.Generator, size: dict) -> list[dict]:
    """Texture pool: alternating real and procedural kinds; the last `test_only` are test-only."""
    kinds = []
    for i in range(size["pool"]):
        if i % 2 == 0:
            kinds.append(synthetic.REAL_TEXTURES[(i // 2) % len(synthetic.REAL_TEXTURES)])
        else:
            kinds.append(synthetic.PROCEDURAL_TEXTURES[(i // 2) % len(synthetic.PROCEDURAL_TEXTURES)])
    textures = []
    for i, kind in enumerate(kinds):
        textures.append({"name": f"{kind}{i:02d}", "kind": kind,
                         "side": int(rng.choice(size["texture_sides"])),
                         "std": float(rng.uniform(16, 30)), "seed": int(rng.integers(2**31)),
                         "test_only": i >= size["pool"] - size["test_only"]})
    return textures


def make_texture(spec: dict) -> np.ndarray:
    """(side, side) uint8 gray texture of a plan entry, contrast-normalised."""
    rng = np.random.default_rng(spec["seed"])
    if spec["kind"] in synthetic.PROCEDURAL:
        gray = synthetic.procedural_texture(spec["kind"], rng, spec["side"])
    else:
        gray = synthetic.real_texture(spec["kind"], rng, spec["side"])
    return synthetic.normalise_contrast(gray, spec["std"])


def plan_structures(rng: np.random.Generator, size: dict, textures: list[dict]) -> list[dict]:
    """One job per structure image: id, split, kind (scene|photo), seed, shape, textures."""
    n_photo = max(1, round(size["structures"] * PHOTO_FRACTION))
    n_scene = size["structures"] - n_photo
    photos = list(rng.permutation(synthetic.PHOTOS))
    photo_split = {"train": photos[:5], "val": photos[5:6], "test": photos[6:]}
    seen = [t["name"] for t in textures if not t["test_only"]]
    held_out = [t["name"] for t in textures if t["test_only"]]
    jobs = []
    for kind, count in (("scene", n_scene), ("photo", n_photo)):
        order = rng.permutation(count)
        bounds = np.cumsum(split_sizes(count))
        for index in range(count):
            position = int(np.nonzero(order[index] < bounds)[0][0])
            split = SPLITS[position]
            k = size["per_structure"]
            if split == "test":  # at least one texture never seen in training
                names = [str(rng.choice(held_out))]
                names += [str(t) for t in rng.choice([n for n in seen + held_out if n != names[0]],
                                                     k - 1, replace=False)]
            else:
                names = [str(t) for t in rng.choice(seen, k, replace=False)]
            height, width = (int(v) for v in rng.integers(size["sides"][0], size["sides"][1] + 1, 2))
            blends = {}
            for name in names:
                tinted = rng.random() < 0.25
                blends[name] = {"offset": [int(v) for v in rng.integers(0, 256, 2)],
                                "amplitude": float(rng.uniform(0.8, 1.2)),
                                "color": [float(v) for v in rng.uniform(0.3, 1.0, 3)] if tinted else None}
            jobs.append({"id": f"{kind}{index:04d}", "split": split, "kind": kind,
                         "seed": int(rng.integers(2**31)), "height": height, "width": width,
                         "photo": str(rng.choice(photo_split[split])) if kind == "photo" else "",
                         "blends": blends})
    return jobs


def build_structure(job: dict) -> list[dict]:
    """Write one structure's files (missing ones only) and return its manifest rows."""
    root = Path(job["root"])
    rows = structure_rows(job["id"], job["split"], list(job["blends"]), with_seg=job["kind"] == "scene")

    def make():
        rng = np.random.default_rng(job["seed"])
        if job["kind"] == "scene":
            gt, seg = synthetic.random_scene(rng, job["height"], job["width"])
            over = blend.smooth_spec(gt, job["scene_over_smoother"])
        else:
            photo = synthetic.photo_crop(job["photo"], rng, job["height"], job["width"])
            gt = blend.smooth_spec(photo, job["gt_smoother"])
            over = blend.smooth_spec(photo, job["over_smoother"])
            seg = None
        inputs = {}
        for name, b in job["blends"].items():
            texture = read_image(root / "textures" / f"{name}.png")[..., 0]
            inputs[name] = blend.blend_texture(gt, texture, offset=b["offset"],
                                               amplitude=b["amplitude"], color=b["color"])
        return {"gt": gt, "over": over, "seg": seg, "inputs": inputs}

    write_structure(root, rows, make)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_arguments(p, SIZES)
    p.add_argument("--over-smoother", default=blend.OVER_SMOOTHER,
                   help="smoother for over-smoothed negatives (default %(default)s)")
    p.add_argument("--scene-over-smoother", default=SCENE_OVER_SMOOTHER,
                   help="over-smoother for the procedural scenes; 'a+b' chains (default %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        for spec in (args.gt_smoother, args.over_smoother, args.scene_over_smoother):
            blend.check_spec(spec)
        size = SIZES[args.size]
        out = Path(args.out)
        config = {"size": args.size, "version": VERSION, "gt_smoother": args.gt_smoother,
                  "over_smoother": args.over_smoother, "scene_over_smoother": args.scene_over_smoother}
        identity = {"name": f"csgis-demo-{args.size}", "builder": BUILDER, "seed": args.seed,
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
    textures = plan_textures(rng, size)
    for spec in textures:
        path = out / "textures" / f"{spec['name']}.png"
        if not path.is_file():
            write_image(path, make_texture(spec))
    jobs = plan_structures(rng, size, textures)
    for job in jobs:
        job.update(root=str(out), gt_smoother=args.gt_smoother, over_smoother=args.over_smoother,
                   scene_over_smoother=args.scene_over_smoother)
    try:
        results = parallel_map(build_structure, jobs, args.workers, "demo")
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to continue the build in {out}", file=sys.stderr)
        return 130
    rows = [row for rs in results for row in rs]
    write_manifest(out, rows)
    counts = split_counts(rows)
    info.update(complete=True, counts=counts, skipped=[],
                textures={t["name"]: ("test-only" if t["test_only"] else "all") for t in textures})
    write_dataset_info(out, info)

    print(f"{'resumed' if state == 'resume' else 'built'} {info['name']} in {out} "
          f"({time.time() - start:.1f} s)")
    for split in SPLITS:
        c = counts.get(split, {"samples": 0, "structures": 0})
        print(f"  {split:5s}: {c['samples']:4d} samples from {c['structures']:3d} structure images")
    held = [t["name"] for t in textures if t["test_only"]]
    print(f"  test-only textures: {', '.join(held)}; skipped files: 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
