"""Build VOC-smooth (docs/method.md §4) from a PASCAL VOC 2012 tree and a folder of texture images.

    python dataset_utils/build_voc_smooth.py --voc-root VOCdevkit/VOC2012 --textures TEX --out DIR

For each ground-truth (GT) VOC id (default: the authors' 150 ids, dataset_utils/voc_smooth_150_ids.txt):
  gt/<id>.png    GT = --gt-smoother applied to JPEGImages/<id>.jpg (or the file in --gt-dir)
  over/<id>.png  over-smoothed negative = --over-smoother applied to the VOC photo
  edge/<id>.png  edge label of the GT (csgis.data.blend.edge_label), 0 / 255
  seg/<id>.png   SegmentationClass/<id>.png copied byte for byte (class ids 0..20, 255 intact)
  input/<id>__<texture>.png  the GT blended with each texture (csgis.data.blend.blend_texture)
Images keep their full size. Splits are made by GT image (no GT in two splits); with
--test-only-textures N, N textures are used only for test GTs (every test GT gets all textures).
Each file is written atomically and finished ones are skipped, so rerunning an interrupted build
continues it; manifest.csv and dataset.json are completed at the end. Same seed, same output.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from csgis.data import blend
from csgis.data.manifest import (VOC_CLASSES, OutputDirError, SkipStructure,
                                 prepare_output_dir, split_counts, structure_rows,
                                 write_dataset_info, write_manifest, write_structure)
from csgis.io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, read_label
from csgis.runtime import parallel_map

DEFAULT_IDS = Path(__file__).resolve().parent / "voc_smooth_150_ids.txt"
SPLITS = ("train", "val", "test")
BUILDER = "build_voc_smooth"


class BuildError(Exception):
    """Bad input that stops the build (one-line message)."""


def find_voc(root: Path) -> Path:
    """The VOC2012 folder under root (root itself, root/VOC2012 or root/VOCdevkit/VOC2012)."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    raise BuildError(f"no VOC 2012 tree at {root}: expected JPEGImages/ and SegmentationClass/ "
                     f"in it, in {root}/VOC2012 or in {root}/VOCdevkit/VOC2012")


VOC_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def read_ids(path: Path) -> list[str]:
    """Ids one per line; blank lines and '#' comments ignored; duplicates removed (order kept)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise BuildError(f"cannot read id list {path}: {e.strerror or e}") from None
    ids = [s.split("#")[0].strip() for s in lines]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise BuildError(f"id list {path} holds no ids")
    bad = [i for i in ids if not VOC_ID.fullmatch(i)]
    if bad:  # an id names output files: '../x' would write outside --out
        raise BuildError(f"id list {path}: {bad[0]!r} is not an image id (letters, digits, '_', '-', '.'; "
                         f"not starting with '.')")
    return ids


def choose_ids(args, voc: Path, rng: np.random.Generator) -> list[str]:
    """The GT ids: --ids file, or --num-gt ids drawn (seeded) from the segmentation trainval list."""
    if args.num_gt is None:
        return read_ids(Path(args.ids) if args.ids else DEFAULT_IDS)
    listing = voc / "ImageSets" / "Segmentation" / "trainval.txt"
    if listing.is_file():
        pool = read_ids(listing)
    else:  # a tree without ImageSets: every image that has a label
        pool = sorted(p.stem for p in (voc / "SegmentationClass").glob("*.png"))
    if len(pool) < args.num_gt:
        raise BuildError(f"--num-gt {args.num_gt} but only {len(pool)} labelled images in {voc}")
    return [pool[i] for i in sorted(rng.choice(len(pool), args.num_gt, replace=False))]


def load_textures(folder: Path, skipped: list) -> list[tuple[str, str]]:
    """(name, path) of readable textures, sorted; unreadable ones appended to skipped."""
    if not folder.is_dir():
        raise BuildError(f"texture folder {folder} does not exist")
    textures, names = [], set()
    for path in list_images(folder):
        try:
            read_image(path)
        except ImageReadError as e:
            skipped.append((str(path), str(e).split(": ", 1)[-1]))
            continue
        name = path.relative_to(folder).with_suffix("").as_posix().replace("/", "_")
        while name in names:  # brick.jpg and brick.png
            name += "_"
        names.add(name)
        textures.append((name, str(path)))
    if not textures:
        raise BuildError(f"texture folder {folder} holds no readable images "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    return textures


def split_sizes(n: int, fractions: list[float]) -> list[int]:
    """GT counts per split summing to n; a split with a positive fraction gets >= 1 when n allows."""
    counts = [int(round(n * f)) for f in fractions]
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0 and n >= sum(1 for x in fractions if x > 0):
            counts[i] = 1
    counts[0] = n - sum(counts[1:])
    return counts


def find_gt_file(gt_dir: Path, voc_id: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for name in (voc_id + ext, voc_id + ext.upper()):
            if (gt_dir / name).is_file():
                return gt_dir / name
    return None


@functools.lru_cache(maxsize=256)
def _texture(path: str) -> np.ndarray:
    return blend.texture_to_gray(read_image(path))


def build_gt(job: dict) -> tuple[list[dict], list]:
    """Write one GT's files (missing ones only); return (manifest rows, skipped [(path, reason)])."""
    rows = structure_rows(job["id"], job["split"], [t[0] for t in job["textures"]], with_seg=True)

    def make():
        photo_path, label_path = Path(job["photo"]), Path(job["label"])
        try:
            label = read_label(label_path)
            photo = read_image(photo_path)
            gt = read_image(job["gt_file"]) if job["gt_file"] else None
        except ImageReadError as e:
            path, _, reason = str(e).partition(": ")
            raise SkipStructure(path, reason) from None
        if label.shape != photo.shape[:2]:
            raise SkipStructure(str(photo_path), f"size {photo.shape[1]}x{photo.shape[0]} differs from "
                                f"label {label_path} ({label.shape[1]}x{label.shape[0]})")
        if gt is None:
            gt = blend.smooth_spec(photo, job["gt_smoother"])
        elif gt.shape[:2] != label.shape:
            raise SkipStructure(job["gt_file"], f"size {gt.shape[1]}x{gt.shape[0]} differs from "
                                f"label {label_path} ({label.shape[1]}x{label.shape[0]})")
        inputs = {name: blend.blend_texture(gt, _texture(path), offset=offset)
                  for name, path, offset in job["textures"]}
        seg_file = str(label_path) if label_path.suffix.lower() == ".png" else None
        return {"gt": gt, "over": blend.smooth_spec(photo, job["over_smoother"]), "seg": label,
                "seg_file": seg_file, "inputs": inputs}

    try:
        write_structure(job["root"], rows, make)
    except SkipStructure as e:
        return [], [e.args]
    return rows, []


def plan(args, out: Path, skipped: list) -> tuple[list[dict], dict]:
    """Deterministic jobs (one per GT id) and the dataset identity, from the arguments."""
    voc = find_voc(Path(args.voc_root))
    textures = load_textures(Path(args.textures), skipped)
    gt_dir = Path(args.gt_dir) if args.gt_dir else None
    if gt_dir is not None and not gt_dir.is_dir():
        raise BuildError(f"--gt-dir {gt_dir} does not exist")
    try:
        fractions = [float(f) for f in args.split.split(",")]
    except ValueError:
        raise BuildError(f"--split must be three numbers like 0.8,0.1,0.1, got '{args.split}'") from None
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise BuildError(f"--split must be three non-negative fractions summing to 1, got '{args.split}'")
    if not 0 <= args.test_only_textures < len(textures):
        raise BuildError(f"--test-only-textures {args.test_only_textures} must leave at least one of "
                         f"the {len(textures)} textures for training")
    for spec in (args.gt_smoother, args.over_smoother):
        try:
            blend.check_spec(spec)
        except ValueError as e:
            raise BuildError(str(e)) from None

    rng = np.random.default_rng(args.seed)
    ids = choose_ids(args, voc, rng)
    order = rng.permutation(len(ids))
    bounds = np.cumsum(split_sizes(len(ids), fractions))
    held = set(int(i) for i in rng.choice(len(textures), args.test_only_textures, replace=False))
    seen = [t for i, t in enumerate(textures) if i not in held]
    jobs = []
    for index, voc_id in enumerate(ids):
        split = SPLITS[int(np.searchsorted(bounds, order[index], side="right"))]
        pool = textures if split == "test" else seen
        if args.textures_per_gt and args.textures_per_gt < len(pool):
            pool = [pool[i] for i in sorted(rng.choice(len(pool), args.textures_per_gt, replace=False))]
        chosen = []
        for name, path in pool:
            offset = [int(v) for v in rng.integers(0, 1024, 2)] if args.random_offset else [0, 0]
            chosen.append((name, path, offset))
        gt_file = find_gt_file(gt_dir, voc_id) if gt_dir else None
        if gt_dir and gt_file is None:
            skipped.append((str(gt_dir / voc_id), "no ready-made GT with this id in --gt-dir"))
            continue
        photo = voc / "JPEGImages" / f"{voc_id}.jpg"
        label = voc / "SegmentationClass" / f"{voc_id}.png"
        missing = [p for p in (photo, label) if not p.is_file()]
        if missing:
            skipped.append((str(missing[0]), "file not found"))
            continue
        jobs.append({"id": voc_id, "split": split, "photo": str(photo), "label": str(label),
                     "gt_file": str(gt_file) if gt_file else "", "textures": chosen,
                     "root": str(out), "gt_smoother": args.gt_smoother,
                     "over_smoother": args.over_smoother})
    if not jobs:
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise BuildError(f"none of the {len(ids)} ids has its image and label in {voc}{first}")
    config = {"ids": ids, "textures": [t[0] for t in textures], "split": fractions,
              "seed": args.seed, "gt_smoother": args.gt_smoother if not gt_dir else f"files:{gt_dir.name}",
              "over_smoother": args.over_smoother, "test_only_textures": sorted(textures[i][0] for i in held),
              "textures_per_gt": args.textures_per_gt, "random_offset": args.random_offset}
    identity = {"name": args.name, "builder": BUILDER, "seed": args.seed, "config": config}
    return jobs, identity


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voc-root", required=True, help="VOCdevkit/VOC2012 (or a folder holding it)")
    p.add_argument("--textures", required=True, help="folder of texture images (searched recursively)")
    p.add_argument("--out", required=True, help="output dataset folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ids", default="", help=f"file of VOC ids, one per line (default: {DEFAULT_IDS.name})")
    g.add_argument("--num-gt", type=int, default=None,
                   help="instead of an id list: this many ids drawn (seeded) from ImageSets/Segmentation/trainval.txt")
    p.add_argument("--gt-dir", default="", help="folder of ready-made GTs named <id>.<ext> (instead of --gt-smoother)")
    p.add_argument("--gt-smoother", default=blend.GT_SMOOTHER,
                   help="'name:key=value,...' from csgis.data.blend.SMOOTHERS (default %(default)s)")
    p.add_argument("--over-smoother", default=blend.OVER_SMOOTHER, help="(default %(default)s)")
    p.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions of the GT images")
    p.add_argument("--test-only-textures", type=int, default=0,
                   help="number of textures (drawn with the seed) used only in test")
    p.add_argument("--textures-per-gt", type=int, default=0,
                   help="textures blended per GT, drawn with the seed (0: all, as the authors)")
    p.add_argument("--random-offset", action="store_true",
                   help="tile each texture from a random offset (default: top-left, as the authors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="parallel processes (1: in this process)")
    p.add_argument("--name", default="voc-smooth", help="dataset name written to dataset.json")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a different dataset in --out (without it, only resume the same one)")
    args = p.parse_args(argv)
    if args.num_gt is not None and args.num_gt < 1:
        p.error("--num-gt must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    skipped: list = []
    try:
        jobs, identity = plan(args, out, skipped)
        state = prepare_output_dir(out, identity, args.overwrite)
    except (BuildError, OSError, OutputDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.time()
    info = dict(identity, classes=list(VOC_CLASSES), complete=False, edge_values="0/255",
                seg_ignore_index=255)
    write_dataset_info(out, info)
    try:
        results = parallel_map(build_gt, jobs, args.workers, "voc-smooth")
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to continue the build in {out}", file=sys.stderr)
        return 130
    rows = [row for rs, _ in results for row in rs]
    skipped += [tuple(s) for _, ss in results for s in ss]
    write_manifest(out, rows)
    counts = split_counts(rows)
    info.update(complete=True, counts=counts, skipped=[f"{p}: {r}" for p, r in skipped])
    write_dataset_info(out, info)

    print(f"{'resumed' if state == 'resume' else 'built'} {args.name} in {out} ({time.time() - start:.1f} s)")
    for split in SPLITS:
        c = counts.get(split, {"samples": 0, "structures": 0})
        print(f"  {split:5s}: {c['samples']:6d} samples from {c['structures']:4d} GT images")
    for path, reason in skipped:
        print(f"  skipped {path}: {reason}")
    print(f"  skipped files: {len(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
