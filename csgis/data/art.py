"""Datasets from Debian's art packages (csgis.data.packages, csgis.data.collage): the catalogue of
usable files, the texture pools and one structure image's files. The two builders that use it:
dataset_utils/make_art_data.py (training, TRAIN_PACKAGES) and make_art_bench.py (the held-out
benchmark, BENCH_PACKAGES).

A job is a plain dict (it crosses process boundaries): id, split, kind ('collage' | 'photo'), seed,
height, width, cutouts [[path, class], ...] or photo, blends {token: {texture, mode, scale,
amplitude, offset}}, texture_folder, root, gt_smoother, over_smoother, texture_std.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from csgis.data import blend, collage, packages
from csgis.data.manifest import structure_rows, write_structure
from csgis.io import read_image, write_image, write_text
from csgis.runtime import parallel_map

CATALOGUE_NAME = "catalogue.json"


def _describe(job: tuple[str, str]) -> dict:
    package, path = job
    return dict(collage.describe_cutout(path), package=package, path=path,
                cls=packages.art_class(package, path), category=packages.category(package, path))


def art_catalogue(art_packages, out: Path, workers: int, dpkg_info=packages.DPKG_INFO) -> list[dict]:
    """Every art file of the packages with what collage.describe_cutout says of it (accepted or why
    not), kept in out/catalogue.json so that a resumed build does not scan again."""
    path = out / CATALOGUE_NAME
    jobs = [(p, str(f)) for p in art_packages for f in packages.package_files(p, dpkg_info)]
    if path.is_file():
        entries = json.loads(path.read_text(encoding="utf-8"))
        if [(e["package"], e["path"]) for e in entries] == [list(j) for j in jobs]:
            return entries
    entries = parallel_map(_describe, jobs, workers, "cut-outs")
    write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return entries


def split_by_class(entries: list[dict], rng: np.random.Generator, fractions: dict) -> dict:
    """{split: [entry, ...]}: accepted entries divided by file within each class, `fractions` of each."""
    out = {split: [] for split in fractions}
    for cls in sorted({e["cls"] for e in entries}):
        mine = [e for e in entries if e["cls"] == cls]
        order = rng.permutation(len(mine))
        start = 0
        for i, (split, fraction) in enumerate(fractions.items()):
            stop = len(mine) if i == len(fractions) - 1 else start + max(1, round(fraction * len(mine)))
            out[split] += [mine[k] for k in order[start:stop]]
            start = stop
    return out


def split_pool(pool: dict, rng: np.random.Generator, fraction: float) -> tuple[dict, dict]:
    """A {name: path} pool divided at random by name: (about `fraction` of it, at least one; the rest)."""
    names = sorted(pool)
    order = rng.permutation(len(names))
    cut = max(1, round(fraction * len(names)))
    return ({names[k]: pool[names[k]] for k in order[:cut]}, {names[k]: pool[names[k]] for k in order[cut:]})


def pick_cutouts(rng: np.random.Generator, pool: list[dict], count: int) -> list[list]:
    """`count` cut-outs, each of a class drawn uniformly among the pool's classes, then a file of it."""
    by_class: dict[int, list] = {}
    for e in pool:
        by_class.setdefault(e["cls"], []).append(e)
    classes = sorted(by_class)
    picks = []
    for _ in range(count):
        group = by_class[classes[int(rng.integers(len(classes)))]]
        e = group[int(rng.integers(len(group)))]
        picks.append([e["path"], int(e["cls"])])
    return picks


def pattern_files(package_list, dpkg_info=packages.DPKG_INFO) -> dict:
    """{name: path} of the packages' GIMP patterns ('pat_<stem>', made unique)."""
    named = {}
    for package in package_list:
        for path in packages.package_files(package, dpkg_info):
            name = f"pat_{path.stem.lower().replace(' ', '_')}"
            named[name if name not in named else f"{name}_{len(named)}"] = str(path)
    return named


def write_patterns(pool: dict, folder: Path) -> dict:
    """The patterns of `pool` ({name: path}) that have texture (collage.pattern_ok) as PNGs in
    `folder`: {name: path} of those written."""
    written = {}
    for name, path in pool.items():
        target = folder / f"{name}.png"
        if not target.is_file():
            rgb = read_image(path)
            if not collage.pattern_ok(rgb):
                continue
            write_image(target, rgb)
        written[name] = path
    return written


def write_photo_textures(photos: list[str], folder: Path, rng: np.random.Generator, per_photo: int,
                         side: int = 128) -> dict:
    """The most textured regions of each photograph (collage.texture_crops) as PNGs: {name: source}."""
    written = {}
    for path in photos:
        seed = int(rng.integers(2**31))
        names = [f"photo_{Path(path).parent.name}_{Path(path).stem}_{k}".lower() for k in range(per_photo)]
        if all((folder / f"{n}.png").is_file() for n in names):
            written.update({n: path for n in names})
            continue
        crops = collage.texture_crops(collage.photo(path), np.random.default_rng(seed), per_photo, side)
        for name, crop in zip(names, crops):
            write_image(folder / f"{name}.png", crop)
            written[name] = path
    return written


def make_structure(job: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(gt, over-smoothed, label or None) of one job."""
    rng = np.random.default_rng(job["seed"])
    if job["kind"] == "collage":
        cutouts = [(collage.cached_cutout(path), cls) for path, cls in job["cutouts"]]
        gt, label = collage.compose(rng, cutouts, job["height"], job["width"])
        return gt, blend.smooth_spec(gt, job["over_smoother"]), label
    picture = collage.photo_crop(collage.photo(job["photo"]), rng, job["height"], job["width"])
    return (blend.smooth_spec(picture, job["gt_smoother"]), blend.smooth_spec(picture, blend.OVER_SMOOTHER),
            None)


def build_structure(job: dict) -> list[dict]:
    """Write one structure's files (missing ones only) and return its manifest rows."""
    root = Path(job["root"])
    rows = structure_rows(job["id"], job["split"], list(job["blends"]), with_seg=job["kind"] == "collage")

    def make():
        gt, over, seg = make_structure(job)
        inputs = {}
        for token, b in job["blends"].items():
            pattern = read_image(root / job["texture_folder"] / f"{b['texture']}.png")
            inputs[token] = blend.blend_layer(gt, pattern, b["mode"], b["scale"], b["amplitude"], b["offset"],
                                              job["texture_std"])
        return {"gt": gt, "over": over, "seg": seg, "inputs": inputs}

    write_structure(root, rows, make)
    return rows


def sources_record(jobs: list[dict], textures: dict, package_of: dict) -> dict:
    """{path: {package, licence, role, uses}} of every installed file a build read (for dataset.json);
    `package_of`: {path: package} (package_index)."""
    record: dict[str, dict] = {}

    def add(path: str, role: str):
        entry = record.setdefault(path, {"uses": 0, "role": role, "package": package_of[path],
                                         "licence": packages.licence(package_of[path], path)})
        entry["uses"] += 1

    for job in jobs:
        for path, _ in job.get("cutouts", []):
            add(path, "art")
        if job.get("photo"):
            add(job["photo"], "photo")
    for path in textures.values():
        add(path, "texture")
    return record


def package_index(package_list, dpkg_info=packages.DPKG_INFO) -> dict:
    """{installed path: package} of the packages' usable files."""
    return {str(f): p for p in package_list for f in packages.package_files(p, dpkg_info)}
