"""The one dataset format: a folder with manifest.csv, dataset.json and one PNG per image.

Layout written by both builders (dataset_utils/build_voc_smooth.py, make_demo_data.py):
  input/<structure>__<texture>.png   textured input (H,W,3)
  gt/<structure>.png                 smoothing ground truth (structure image)
  over/<structure>.png               over-smoothed negative
  edge/<structure>.png               edge label of the GT, gray PNG with values 0 / 255
  seg/<structure>.png                class indices as a palette PNG (0..C-1, IGNORE_INDEX 255); optional
  textures/<texture>.png             (demo only) the gray textures, for online blending
  manifest.csv                       one row per sample: MANIFEST_COLUMNS, paths relative to the
                                     folder with '/' separators, `seg` empty when there is no label
  dataset.json                       name, builder, seed, config, counts, classes, complete flag

dataset.json's identity (name, builder, config) tells a resumable build of the same dataset from a
folder that holds a different one (see `prepare_output_dir`).
"""
from __future__ import annotations

import csv
import io as _io
import json
import os
from pathlib import Path

import numpy as np

from csgis.io import write_text

MANIFEST_NAME = "manifest.csv"
INFO_NAME = "dataset.json"
REQUIRED_COLUMNS = ("id", "split", "input", "gt", "edge", "seg", "over")
MANIFEST_COLUMNS = REQUIRED_COLUMNS + ("structure", "texture")
OUTPUT_SUBDIRS = ("input", "gt", "over", "edge", "seg", "textures")
# Label value of pixels without a class (VOC's boundaries, photographs without labels, pixels that
# augmentation rotated in from outside the image): ignored by the loss and the metrics.
IGNORE_INDEX = 255
# A sample id is "<structure>__<texture>": the structure (GT) image and the texture blended into it.
ID_SEPARATOR = "__"
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


class ManifestError(ValueError):
    """A manifest.csv or dataset.json is missing or malformed (message names the file)."""


class OutputDirError(RuntimeError):
    """The output folder cannot be used (holds a different dataset or other files)."""




def name_problem(name: str) -> str | None:
    """Why `name` (a sample id, which names output files such as <save>/<id>.png) cannot be a file
    name inside a folder, or None: empty, a path ('/', '\\'), '.' or '..', a leading '.' (hidden) or
    a control character."""
    if not name:
        return "is empty"
    if "/" in name or "\\" in name:
        return "is a path, not a name"
    if name.startswith("."):
        return "starts with '.'"
    if any(ord(c) < 32 for c in name):
        return "holds a control character"
    return None


def read_manifest(root: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Rows of root/manifest.csv as dicts of str (paths relative to root); optionally one split."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest.csv (is {root} a dataset folder made by "
                            f"dataset_utils/make_demo_data.py or build_voc_smooth.py?)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
        rows, seen = [], {}
        for line, row in enumerate(reader, start=2):
            row = {k: (v or "") for k, v in row.items() if k is not None}
            for col in ("id", "split", "input", "gt"):
                if not row[col]:
                    raise ManifestError(f"{path}:{line}: empty '{col}'")
            problem = name_problem(row["id"])
            if problem:  # ids name output files: '/srv/x' or '../x' would write outside the output folder
                raise ManifestError(f"{path}:{line}: id {row['id']!r} {problem}")
            if row["id"] in seen:
                raise ManifestError(f"{path}:{line}: id {row['id']!r} is also on line {seen[row['id']]}; "
                                    f"every sample needs its own id")
            seen[row["id"]] = line
            if split is None or row["split"] == split:
                rows.append(row)
    return rows


def write_manifest(root: str | os.PathLike, rows: list[dict]) -> Path:
    """Write rows (dicts with at least REQUIRED_COLUMNS) to root/manifest.csv atomically."""
    path = Path(root) / MANIFEST_NAME
    columns = list(MANIFEST_COLUMNS) + sorted({k for r in rows for k in r} - set(MANIFEST_COLUMNS))
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    write_text(path, buf.getvalue())
    return path


def read_dataset_info(root: str | os.PathLike) -> dict | None:
    """root/dataset.json as a dict, or None when there is none."""
    path = Path(root) / INFO_NAME
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path}: not a readable dataset.json ({e})") from None
    if not isinstance(info, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    return info


def write_dataset_info(root: str | os.PathLike, info: dict) -> Path:
    """Write info to root/dataset.json atomically (sorted keys: identical builds, identical bytes)."""
    path = Path(root) / INFO_NAME
    write_text(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def _identity(info: dict) -> tuple:
    return info.get("name"), info.get("builder"), json.dumps(info.get("config"), sort_keys=True)


def prepare_output_dir(out: str | os.PathLike, identity: dict, overwrite: bool) -> str:
    """Make `out` ready for a build described by identity {name, builder, config}.

    Returns "new" (empty or overwritten) or "resume" (same dataset: finished files are kept).
    Raises OutputDirError when out holds a different dataset or foreign files and not overwrite.
    --overwrite replaces only a dataset built here (a folder with dataset.json), and removes only
    what that build recorded: the files its manifest lists, its textures, manifest.csv and
    dataset.json. A folder without dataset.json is never emptied, and any other file stays.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{out} exists and is not a folder")
    entries = [p for p in out.iterdir()] if out.is_dir() else []
    info = read_dataset_info(out) if entries else None
    if entries and info is None:
        raise OutputDirError(f"{out} is not empty and holds no dataset.json, so it is not a dataset built "
                             f"here; choose an empty or new folder (--overwrite only replaces a built dataset)")
    if entries and not overwrite:
        if _identity(info) != _identity(identity):
            raise OutputDirError(
                f"{out} holds a different dataset (name={info.get('name')!r}, "
                f"builder={info.get('builder')!r}, other settings or seed); "
                f"pass --overwrite to replace it or choose another folder")
        _remove_temporaries(out)
        return "resume"
    if entries:
        _remove_recorded(out)
    out.mkdir(parents=True, exist_ok=True)
    return "new"


def _remove_recorded(out: Path) -> None:
    """Delete the files a build recorded (manifest rows, their textures), then the manifest and info."""
    try:
        rows = read_manifest(out)
    except ManifestError:
        rows = []  # an interrupted build: no manifest yet, so nothing is recorded beyond dataset.json
    recorded = {row[k] for row in rows for k in ("input", "gt", "edge", "seg", "over") if row.get(k)}
    recorded |= {f"textures/{row['texture']}.png" for row in rows if row.get("texture")}
    for rel in sorted(recorded):
        path = (out / rel).resolve()
        if path.is_file() and out.resolve() in path.parents:
            path.unlink()
    _remove_temporaries(out)
    for name in OUTPUT_SUBDIRS:
        folder = out / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    for name in (MANIFEST_NAME, INFO_NAME):
        if (out / name).exists():
            (out / name).unlink()


def _remove_temporaries(out: Path) -> None:
    # Atomic writes leave '.<name>.<random>' files behind only when a build was killed mid-write.
    for name in OUTPUT_SUBDIRS:
        folder = out / name
        if folder.is_dir():
            for p in folder.glob(".*"):
                if p.is_file():
                    p.unlink()


def split_counts(rows: list[dict]) -> dict:
    """{split: {"samples": n, "structures": m}} for a list of manifest rows."""
    counts: dict = {}
    for row in rows:
        c = counts.setdefault(row["split"], {"samples": 0, "structures": set()})
        c["samples"] += 1
        c["structures"].add(row.get("structure") or row["gt"])
    return {s: {"samples": c["samples"], "structures": len(c["structures"])}
            for s, c in sorted(counts.items())}


# --- writing one structure image and its textured inputs (shared by both builders) -------------

class SkipStructure(Exception):
    """A structure image cannot be built; args: (path, reason). The builder reports and continues."""


def sample_id(structure: str, texture: str) -> str:
    """The id (and input file stem) of a structure image blended with a texture."""
    return f"{structure}{ID_SEPARATOR}{texture}"


def split_sample_id(sample: str) -> tuple[str, str] | None:
    """'<structure>__<texture>' -> (structure, texture); None for an id of another form."""
    structure, sep, texture = sample.partition(ID_SEPARATOR)
    return (structure, texture) if sep and structure and texture else None


def structure_rows(structure_id: str, split: str, texture_names: list[str], with_seg: bool) -> list[dict]:
    """Manifest rows of one structure image and its textured inputs (paths relative to the root)."""
    rows = []
    for texture in texture_names:
        rows.append({
            "id": sample_id(structure_id, texture), "split": split,
            "input": f"input/{sample_id(structure_id, texture)}.png", "gt": f"gt/{structure_id}.png",
            "edge": f"edge/{structure_id}.png", "seg": f"seg/{structure_id}.png" if with_seg else "",
            "over": f"over/{structure_id}.png", "structure": structure_id, "texture": texture,
        })
    return rows


def write_structure(root: str | os.PathLike, rows: list[dict], make) -> bool:
    """Write the files named by `rows` that are missing (resume); returns True when any was written.

    `make()` -> dict gt (H,W,3) uint8, over (H,W,3) uint8, seg (H,W) uint8 | None, seg_file
    (a palette PNG to copy byte for byte) | None, inputs {texture: (H,W,3) uint8}; it is called
    only when something is missing and may raise SkipStructure. Edges come from blend.edge_label.
    """
    from csgis.data.blend import edge_label
    from csgis.io import copy_file, write_image, write_label

    root = Path(root)
    first = rows[0]
    wanted = [first["gt"], first["edge"], first["over"]] + ([first["seg"]] if first["seg"] else [])
    wanted += [r["input"] for r in rows]
    if all((root / p).is_file() for p in wanted):
        return False
    data = make()
    gt = data["gt"]
    for row in rows:
        if not (root / row["input"]).is_file():
            write_image(root / row["input"], data["inputs"][row["texture"]])
    if not (root / first["edge"]).is_file():
        write_image(root / first["edge"], edge_label(gt) * np.uint8(255))
    if not (root / first["over"]).is_file():
        write_image(root / first["over"], data["over"])
    if first["seg"] and not (root / first["seg"]).is_file():
        if data.get("seg_file"):
            copy_file(Path(data["seg_file"]), root / first["seg"])
        else:
            write_label(root / first["seg"], data["seg"])
    if not (root / first["gt"]).is_file():
        write_image(root / first["gt"], gt)
    return True
