"""Scoring folders of results, trained models and classical baselines (docs/method.md §6-7).

Library side of scripts/evaluate.py and scripts/baselines.py:
- `match_folder` / `match_manifest`: pair prediction files with ground truths (rules below).
- `score_pairs`: per-image PSNR/SSIM in both conventions; unreadable files and size mismatches
  are collected as problems (path named), never raised.
- `evaluate_model`: run a checkpoint over a dataset split and score it (plus the input itself).
- `smoother_scores` / `segmenter_scores`: a network over a loader of dataset items (what training
  validates with); `evaluate_segmenter`: a segmenter checkpoint's mIoU on a dataset split.
- `run_baselines`: each classical smoother, parameters chosen on a validation split, scored on
  the test split with its time per image.
- `summarize`, `format_table`, `write_csv`, `write_json`: outputs; every table names its convention.
- `tone_errors`, `tone_summary`: mean signed error by ground-truth gray level (a tone-curve check).

Matching rules for a prediction `<dir>/<name>.<any image ext>`, first that applies:
1. "name": a GT with the same relative path minus extension, else the same file stem (if unique);
2. "nks":  NKS-style texture suffix, `S12T03` -> GT `S12` (a stem ending in T<digits>);
   "structure": this project's input names, `<structure>__<texture>` -> GT `<structure>`;
3. with a dataset manifest instead of a GT folder: the stem equals a row's id or its input
   file's stem, within the chosen split ("manifest").
"""
from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from csgis.data.manifest import split_sample_id
from csgis.io import ImageReadError, is_within, list_images, read_image, write_image, write_text
from csgis.runtime import parallel_map

METRIC_KEYS = ("psnr_paper", "ssim_paper", "psnr_standard", "ssim_standard")
# Tone bands for evaluate_model(tone=True): ground-truth gray levels (0-255, BT.601 luma) [low, high).
TONE_BANDS = (("dark", 0, 48), ("mid", 48, 208), ("bright", 208, 256))
# PSNR of identical images is infinite (MSE 0): tables and means count it as this many dB, so that
# one perfect image does not make a method's mean infinite and every JSON file stays finite.
PSNR_CAP = 100.0
CONVENTIONS = {
    "paper": "PSNR/SSIM paper convention (zero-padded Gaussian SSIM on [0,1] RGB, docs/method.md §6)",
    "standard": "PSNR/SSIM standard convention (BasicSR/skimage-compatible: valid-window Gaussian "
                "SSIM on uint8 RGB, per channel)",
}
INPUT_ROW = "input"
_NKS_STEM = re.compile(r"^(?P<gt>.+)T\d+$")


# --------------------------------------------------------------------------- matching
@dataclass
class Pair:
    """One prediction and its ground truth; `name` identifies the image in tables."""
    name: str
    pred: Path
    gt: Path
    rule: str


@dataclass
class Matching:
    """Result of pairing a prediction folder with ground truths."""
    pairs: list[Pair] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)     # predictions without a GT
    missing: list[str] = field(default_factory=list)        # GT names without a prediction
    duplicates: list[str] = field(default_factory=list)     # GT names found with several extensions
    repeated: list[str] = field(default_factory=list)       # predictions not scored: another one of the same
                                                            # image was, or the file is a ground truth


def _shallow_first(paths: list[Path], root: Path) -> list[Path]:
    """Predictions in the order they are matched: the top folder's first, so that a copy deeper down
    (a subfolder, a ground-truth folder inside the prediction folder) is the one called repeated."""
    return sorted(paths, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def _rel_stem(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _nks_name(stem: str) -> str | None:
    match = _NKS_STEM.match(stem)
    return match.group("gt") if match else None


def _require_dir(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist or is not a folder")
    return path


def match_folder(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> Matching:
    """Pair every image under pred_dir with one under gt_dir by name or NKS rule (module docstring)."""
    pred_dir, gt_dir = _require_dir(pred_dir, "prediction"), _require_dir(gt_dir, "ground-truth")
    result = Matching()
    by_rel: dict[str, Path] = {}
    for path in list_images(gt_dir):
        key = _rel_stem(path, gt_dir)
        if key in by_rel:
            result.duplicates.append(key)
            continue
        by_rel[key] = path
    by_stem: dict[str, Path | None] = {}
    for key, path in by_rel.items():
        stem = Path(key).name
        by_stem[stem] = None if stem in by_stem else path  # None: ambiguous stem, not used

    def lookup(rel: str) -> Path | None:
        return by_rel.get(rel) or by_stem.get(Path(rel).name)

    used, scored = set(), {}
    gt_inside = gt_dir.resolve() != pred_dir.resolve() and is_within(gt_dir, pred_dir)
    for pred in _shallow_first(list_images(pred_dir), pred_dir):
        rel = _rel_stem(pred, pred_dir)
        if gt_inside and is_within(pred, gt_dir):
            result.repeated.append(f"{pred}: a ground truth (the ground-truth folder lies inside the prediction folder)")
            continue
        gt, rule = lookup(rel), "name"
        if gt is None:
            gt_name = _nks_name(Path(rel).name)
            if gt_name is not None:
                gt, rule = lookup((Path(rel).parent / gt_name).as_posix()), "nks"
        if gt is None and split_sample_id(Path(rel).name):
            structure = split_sample_id(Path(rel).name)[0]
            gt, rule = lookup((Path(rel).parent / structure).as_posix()), "structure"
        if gt is None:
            result.unmatched.append(pred)
            continue
        key = (gt, Path(rel).name)  # one score per ground truth and prediction name (NKS: S12T03, S12T04 both)
        if key in scored:
            result.repeated.append(f"{pred}: the same image as {scored[key]}, which is scored")
            continue
        scored[key] = pred
        used.add(gt)
        result.pairs.append(Pair(rel, pred, gt, rule))
    result.missing = sorted(k for k, p in by_rel.items() if p not in used)
    return result


def match_manifest(pred_dir: str | os.PathLike, data_root: str | os.PathLike, split: str) -> Matching:
    """Pair predictions with the GTs of a dataset split by row id or input file stem."""
    from csgis.data.manifest import read_manifest

    pred_dir, data_root = _require_dir(pred_dir, "prediction"), _require_dir(data_root, "dataset")
    rows = read_manifest(data_root, split)
    if not rows:
        raise ValueError(f"{data_root / 'manifest.csv'}: no rows in split '{split}'")
    by_key: dict[str, dict] = {}
    for row in rows:
        by_key.setdefault(row["id"], row)
        by_key.setdefault(Path(row["input"]).stem, row)
    result = Matching()
    used: dict[str, Path] = {}
    for pred in _shallow_first(list_images(pred_dir), pred_dir):
        row = by_key.get(pred.stem)
        if row is None:
            result.unmatched.append(pred)
            continue
        if row["id"] in used:
            result.repeated.append(f"{pred}: the same image as {used[row['id']]}, which is scored")
            continue
        used[row["id"]] = pred
        result.pairs.append(Pair(row["id"], pred, data_root / row["gt"], "manifest"))
    result.missing = sorted(r["id"] for r in rows if r["id"] not in used)
    return result


# --------------------------------------------------------------------------- scoring
def _read_pair(pred_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both images, or ValueError naming both files when their sizes differ."""
    pred, gt = read_image(pred_path), read_image(gt_path)
    if pred.shape != gt.shape:
        raise ValueError(f"size mismatch: {pred_path} is {pred.shape[1]}x{pred.shape[0]}, "
                         f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}")
    return pred, gt


def _metric_row(name: str, result: np.ndarray, reference: np.ndarray, **extra) -> dict:
    from csgis.metrics import image_metrics

    row = {"name": name, **extra}
    row.update({k: min(v, PSNR_CAP) if k.startswith("psnr") else v
                for k, v in image_metrics(result, reference).items()})
    return row


def tone_errors(result: np.ndarray, reference: np.ndarray) -> dict:
    """Mean signed error (result - reference, gray levels, over all three channels) of the pixels
    in each TONE_BANDS band of the reference's luma: {error_<band>: float | None, pixels_<band>: int}.
    A smoother that keeps flat regions leaves every band near 0; a tone curve (dark regions made
    darker, a contrast stretch) shows as opposite signs in the dark and bright bands."""
    from csgis.data.batched import GRAY_WEIGHTS

    ref = reference.astype(np.float64)
    luma = ref @ np.asarray(GRAY_WEIGHTS)
    diff = result.astype(np.float64) - ref
    out: dict = {}
    for band, low, high in TONE_BANDS:
        inside = (luma >= low) & (luma < high)
        count = int(inside.sum())
        out[f"error_{band}"] = float(diff[inside].mean()) if count else None
        out[f"pixels_{band}"] = count
    return out


def tone_summary(rows: Sequence[dict]) -> dict:
    """{band: {error, share}} pooled over the rows' pixels (rows carrying tone_errors' keys):
    error is the mean signed error of all pixels in the band, share the band's fraction of pixels."""
    total = sum(r[f"pixels_{b}"] for r in rows for b, _, _ in TONE_BANDS)
    out = {}
    for band, _, _ in TONE_BANDS:
        count = sum(r[f"pixels_{band}"] for r in rows)
        error = sum(r[f"error_{band}"] * r[f"pixels_{band}"] for r in rows if r[f"pixels_{band}"])
        out[band] = {"error": error / count if count else None, "share": count / total if total else 0.0}
    return out


def format_tone(summary: dict, label: str) -> str:
    """One line: the tone_summary of a method."""
    parts = []
    for band, low, high in TONE_BANDS:
        entry = summary[band]
        value = "-" if entry["error"] is None else f"{entry['error']:+.2f}"
        parts.append(f"{band} [{low},{high}) {value} ({100 * entry['share']:.0f}% of pixels)")
    return f"{label}: mean error (result - GT, gray levels) by GT level: " + " | ".join(parts)


def _score_pair_job(pair: Pair) -> tuple[dict | None, str | None]:
    try:
        pred, gt = _read_pair(pair.pred, pair.gt)
    except (ImageReadError, ValueError) as e:
        return None, str(e)
    try:
        return _metric_row(pair.name, pred, gt, pred=str(pair.pred), gt=str(pair.gt), rule=pair.rule), None
    except ValueError as e:  # e.g. an image smaller than the SSIM window
        return None, f"{pair.pred}: {e}"


def score_pairs(pairs: Sequence[Pair], workers: int = 1, progress: bool = True) -> tuple[list[dict], list[str]]:
    """Per-image metric rows (name, pred, gt, rule, METRIC_KEYS) and problem lines (path named)."""
    results = parallel_map(_score_pair_job, list(pairs), workers, "scoring", progress)
    rows = [r for r, _ in results if r is not None]
    problems = [p for _, p in results if p is not None]
    return rows, problems


def summarize(rows: Sequence[dict], seconds_per_image: float | None = None) -> dict:
    """{n, <metric>: {mean, std} for METRIC_KEYS[, seconds_per_image]} over per-image rows."""
    from csgis.metrics import mean_std

    summary: dict = {"n": len(rows)}
    for key in METRIC_KEYS:
        summary[key] = dict(zip(("mean", "std"), mean_std([r[key] for r in rows])))
    if seconds_per_image is not None:
        summary["seconds_per_image"] = seconds_per_image
    return summary


def group_means(rows: Sequence[dict], method: str, groups: dict[str, str]) -> dict:
    """{group: {n, <metric>: mean}} of one method's per-image rows, grouped by groups[row name]
    ('?' for a name without a group), and 'all' (e.g. the held-out benchmark's blends)."""
    members: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] == method:
            for g in (groups.get(r["name"], "?"), "all"):
                members.setdefault(g, []).append(r)
    return {g: {"n": len(rs), **{k: sum(r[k] for r in rs) / len(rs) for k in METRIC_KEYS}}
            for g, rs in members.items()}


def sample_groups(info: dict | None, names: Iterable[str], fields: Sequence[str]) -> dict[str, str]:
    """{image name: 'value, value'} from a dataset.json's per-sample records (info['samples']) for the
    given fields (e.g. ('blend', 'kind') on the held-out benchmark). A name that is not a sample (a
    ground truth scored with --clean) takes the values its samples (<name>__*) agree on; '?' where
    there is none. ValueError when the dataset records no samples or none of them has a field."""
    samples = (info or {}).get("samples") or {}
    if not samples:
        raise ValueError("the dataset's dataset.json records no per-sample fields to group by")
    for field_name in fields:
        if not any(field_name in v for v in samples.values()):
            known = sorted({k for v in samples.values() for k in v})
            raise ValueError(f"no sample records '{field_name}' (fields: {', '.join(known)})")
    groups = {}
    for name in names:
        records = [samples[name]] if name in samples else [v for k, v in samples.items() if k.startswith(name + "__")]
        values = []
        for field_name in fields:
            seen = {str(r.get(field_name, "?")) for r in records}
            values.append(seen.pop() if len(seen) == 1 else "?")
        groups[name] = ", ".join(values)
    return groups


def format_group_table(rows: Sequence[dict], groups: dict[str, str], title: str = "") -> str:
    """Text table of every method's means by group (group_means), both conventions, groups sorted."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    labels = sorted(set(groups.values()))
    width = max([len("method")] + [len(m) for m in methods])
    gwidth = max([len("group")] + [len(g) for g in labels])
    header = (f"{'method':<{width}}  {'group':<{gwidth}}  {'N':>5}  {'PSNR':>7}  {'SSIM':>6}  |  "
              f"{'PSNR':>7}  {'SSIM':>6}")
    lines = ([title] if title else []) + [
        f"{'':<{width}}  {'':<{gwidth}}  {'':>5}  {'paper':^15}  |  {'standard':^15}", header, "-" * len(header)]
    for method in methods:
        means = group_means(rows, method, groups)
        for label in labels:
            if label in means:
                m = means[label]
                lines.append(f"{method:<{width}}  {label:<{gwidth}}  {m['n']:>5}  {_fmt(m['psnr_paper'], 2):>7}  "
                             f"{_fmt(m['ssim_paper'], 4):>6}  |  {_fmt(m['psnr_standard'], 2):>7}  "
                             f"{_fmt(m['ssim_standard'], 4):>6}")
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    if math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def format_table(summaries: dict[str, dict], title: str = "") -> str:
    """Text table of method -> summary, both conventions; the header names them (docs/method.md §6)."""
    timed = any("seconds_per_image" in s for s in summaries.values())
    width = max([len("method")] + [len(m) for m in summaries])
    header = (f"{'method':<{width}}  {'N':>5}  {'PSNR':>7}  {'SSIM':>6}  |  {'PSNR':>7}  {'SSIM':>6}"
              + ("  s/image" if timed else ""))
    group = f"{'':<{width}}  {'':>5}  {'paper':^15}  |  {'standard':^15}"
    lines = ([title] if title else []) + [
        f"paper    = {CONVENTIONS['paper']}",
        f"standard = {CONVENTIONS['standard']}",
        f"PSNR in dB, mean over images (an image identical to its ground truth counts as {PSNR_CAP:g} dB).",
        group, header, "-" * len(header)]
    for method, s in summaries.items():
        line = (f"{method:<{width}}  {s['n']:>5}  {_fmt(s['psnr_paper']['mean'], 2):>7}  "
                f"{_fmt(s['ssim_paper']['mean'], 4):>6}  |  {_fmt(s['psnr_standard']['mean'], 2):>7}  "
                f"{_fmt(s['ssim_standard']['mean'], 4):>6}")
        if timed:
            line += f"  {_fmt(s.get('seconds_per_image'), 3):>7}"
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- output files


def write_csv(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Per-image rows to CSV (columns: method, name, pred, gt, rule, METRIC_KEYS, then any others)."""
    rows = list(rows)
    first = ["method", "name", "pred", "gt", "rule", *METRIC_KEYS]
    columns = [c for c in first if any(c in r for r in rows)]
    columns += sorted({k for r in rows for k in r} - set(columns))
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: (repr(row[c]) if isinstance(row.get(c), float) else row.get(c, ""))
                         for c in columns})
    return write_text(path, buf.getvalue())


def write_json(path: str | os.PathLike, report: dict) -> Path:
    """Report to JSON (finite numbers only: identical images count as PSNR_CAP)."""
    return write_text(path, json.dumps(report, indent=2, default=str, allow_nan=False) + "\n")


def shown(path) -> str:
    """A path for messages, whatever bytes its name holds (a non-UTF-8 name must not stop a print)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def write_outputs(report: dict, csv_path: str | None, json_path: str | None) -> int:
    """Write the optional per-image CSV and summary JSON of a report; exit status 1 if it has problems."""
    if csv_path:
        write_csv(csv_path, report["images"])
        print(f"per-image metrics: {shown(csv_path)}")
    if json_path:
        write_json(json_path, report)
        print(f"summary: {shown(json_path)}")
    return 1 if report["problems"] else 0


# --------------------------------------------------------------------------- folder evaluation
def evaluate_folder(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike | None = None,
                    manifest_root: str | os.PathLike | None = None, split: str = "test",
                    label: str | None = None, workers: int = 1, progress: bool = True) -> dict:
    """Match and score a folder of predictions; report {methods, images, problems, unmatched, missing, ...}."""
    if (gt_dir is None) == (manifest_root is None):
        raise ValueError("give exactly one of a ground-truth folder or a dataset manifest folder")
    if manifest_root is not None:
        matching = match_manifest(pred_dir, manifest_root, split)
    else:
        matching = match_folder(pred_dir, gt_dir)
    label = label or Path(pred_dir).resolve().name or "prediction"
    rows, problems = score_pairs(matching.pairs, workers, progress)
    for row in rows:
        row["method"] = label
    return {
        "conventions": CONVENTIONS,
        "pred": str(pred_dir),
        "gt": str(gt_dir) if gt_dir is not None else None,
        "manifest": str(manifest_root) if manifest_root is not None else None,
        "split": split if manifest_root is not None else None,
        "methods": {label: summarize(rows)},
        "matched": len(matching.pairs),
        "unmatched": [str(p) for p in matching.unmatched],
        "missing": matching.missing,
        "duplicates": matching.duplicates,
        "repeated": matching.repeated,
        "problems": problems,
        "images": rows,
    }


# --------------------------------------------------------------------------- datasets
@dataclass
class Sample:
    """One test image of a dataset split: textured input and its GT (absolute paths)."""
    id: str
    input: Path
    gt: Path


def load_split(data_root: str | os.PathLike, split: str, max_images: int = 0) -> list[Sample]:
    """Samples of one split of a manifest dataset (first max_images when > 0)."""
    from csgis.data.manifest import read_manifest

    data_root = _require_dir(data_root, "dataset")
    rows = read_manifest(data_root, split)
    samples = [Sample(r["id"], data_root / r["input"], data_root / r["gt"]) for r in rows]
    return samples[:max_images] if max_images > 0 else samples


def _score_input_job(sample: Sample) -> tuple[dict | None, str | None]:
    try:
        textured, gt = _read_pair(sample.input, sample.gt)
    except (ImageReadError, ValueError) as e:
        return None, str(e)
    try:
        return _metric_row(sample.id, textured, gt, pred=str(sample.input), gt=str(sample.gt)), None
    except ValueError as e:  # e.g. an image smaller than the SSIM window
        return None, f"{sample.input}: {e}"


def score_inputs(samples: Sequence[Sample], workers: int = 1, progress: bool = True) -> tuple[list[dict], list[str]]:
    """The "input" reference: each textured input scored against its GT."""
    results = parallel_map(_score_input_job, list(samples), workers, INPUT_ROW, progress)
    rows = [dict(r, method=INPUT_ROW) for r, _ in results if r is not None]
    return rows, [p for _, p in results if p is not None]


def evaluate_model(checkpoint: str | os.PathLike, data_root: str | os.PathLike, split: str = "test",
                   save_dir: str | os.PathLike | None = None, tile: int | None = None, device: str = "cpu",
                   max_images: int = 0, progress: bool = True, label: str = "model", scale: float = 1.0,
                   self_ensemble: bool = False, clean: bool = False, tone: bool = False,
                   keep_mean: bool = False, post: str | None = None) -> dict:
    """Smooth a split with a checkpoint (at `scale` x the resolution, csgis.regions; with the x8
    geometric self-ensemble, a classical smoother run on the result (`post`, a spec such as
    "l0:lambda=0.02"), or shifted to the input's mean colour with keep_mean,
    csgis.inference.smooth_image) and score it; also scores the inputs as the "input" row.

    clean: smooth each ground truth itself (once, named by its structure) instead of the textured
    inputs, and score the result against it; no "input" row. A smoother should leave an image with
    no texture as it is, so this is a ceiling on what the model reaches on that split.

    tone: add tone_errors' keys to each model row and the pooled tone_summary to the method's
    summary (under "tone")."""
    finishes = [{"label": label, "keep_mean": keep_mean, "post": post, "save_dir": save_dir}]
    return evaluate_model_finishes(checkpoint, data_root, finishes, split, tile, device, max_images, progress,
                                   scale, self_ensemble, clean, tone)[0]


def evaluate_model_finishes(checkpoint: str | os.PathLike, data_root: str | os.PathLike, finishes: Sequence[dict],
                            split: str = "test", tile: int | None = None, device: str = "cpu", max_images: int = 0,
                            progress: bool = True, scale: float = 1.0, self_ensemble: bool = False,
                            clean: bool = False, tone: bool = False) -> list[dict]:
    """evaluate_model for several finishes of one network pass: each finish {label, keep_mean, post,
    save_dir} is applied to the same network result of every image (csgis.inference.finish, as
    smooth_image applies it), so the network (and its 8 views with self_ensemble) runs once per
    image however many finishes there are -> one evaluate_model report per finish. A finish's
    time per image is the network's plus its own. At scale 1 only (a finish at another scale runs
    inside csgis.regions.smooth_strength)."""
    import torch
    from tqdm import tqdm

    from csgis.checkpoint import load_smoother
    from csgis.inference import check_post, finish, smooth_image

    if scale != 1 and len(finishes) > 1:
        raise ValueError("several finishes of one network pass need scale 1")
    for f in finishes:
        if f.get("post") is not None:
            check_post(f["post"])
    samples = load_split(data_root, split, max_images)
    if not samples:
        raise ValueError(f"{Path(data_root) / 'manifest.csv'}: no rows in split '{split}'")
    if clean:
        unique = {s.gt: Sample(s.gt.stem, s.gt, s.gt) for s in samples}
        samples = list(unique.values())
    model = load_smoother(checkpoint, map_location="cpu")
    rows: list[list[dict]] = [[] for _ in finishes]
    seconds: list[list[float]] = [[] for _ in finishes]
    problems: list[str] = []
    desc = " | ".join(f["label"] for f in finishes)
    for sample in tqdm(samples, desc=desc, unit="img", dynamic_ncols=True, disable=not progress, file=sys.stderr):
        try:
            textured, gt = _read_pair(sample.input, sample.gt)
        except (ImageReadError, ValueError) as e:
            problems.append(str(e))
            continue
        start = time.perf_counter()
        with torch.inference_mode():
            if scale == 1:
                network = smooth_image(model, textured, tile=tile, device=device,
                                       self_ensemble=self_ensemble)["prediction"]
            else:
                from csgis.regions import smooth_strength
                only = finishes[0]
                network = smooth_strength(model, textured, 1.0, scale, tile=tile, device=device,
                                          self_ensemble=self_ensemble, keep_mean=only.get("keep_mean", False),
                                          post=only.get("post"))
        network_seconds = time.perf_counter() - start
        for i, f in enumerate(finishes):
            start = time.perf_counter()
            prediction = network if scale != 1 else finish(network, textured, f.get("post"), f.get("keep_mean", False))
            seconds[i].append(network_seconds + time.perf_counter() - start)
            pred_path = ""
            if f.get("save_dir") is not None:
                pred_path = str(Path(f["save_dir"]) / f"{sample.id}.png")
                write_image(pred_path, prediction)
            try:
                row = dict(_metric_row(sample.id, prediction, gt, pred=pred_path, gt=str(sample.gt)), method=f["label"])
                if tone:
                    row.update(tone_errors(prediction, gt))
                rows[i].append(row)
            except ValueError as e:  # e.g. an image smaller than the SSIM window
                if f"{sample.input}: {e}" not in problems:
                    problems.append(f"{sample.input}: {e}")
    input_rows, input_problems = ([], []) if clean else score_inputs(samples, 1, progress=False)
    problems += [p for p in input_problems if p not in problems]
    reports = []
    for f, f_rows, f_seconds in zip(finishes, rows, seconds):
        methods = {} if clean else {INPUT_ROW: summarize(input_rows)}
        methods[f["label"]] = summarize(f_rows, float(np.mean(f_seconds)) if f_seconds else None)
        if tone and f_rows:
            methods[f["label"]]["tone"] = tone_summary(f_rows)
        reports.append({
            "conventions": CONVENTIONS,
            "checkpoint": str(checkpoint),
            "data": str(data_root),
            "split": split,
            "tile": tile,
            "scale": scale,
            "self_ensemble": self_ensemble,
            "keep_mean": f.get("keep_mean", False),
            "post": f.get("post"),
            "clean": clean,
            "tone": tone,
            "device": str(device),
            "methods": methods,
            "problems": list(problems),
            "images": input_rows + f_rows,
        })
    return reports


# --------------------------------------------------------------------------- networks on loaders
def smoother_scores(model, loader, device, autocast_dtype=None, num_images: int = 0) -> tuple[dict, list]:
    """Mean PSNR/SSIM (both conventions) of a smoother's uint8-quantised predictions over a loader.

    Returns (metrics, images): up to num_images (id, (3,H,3W) input|prediction|gt in [0,1]).
    """
    import torch

    from csgis.device import autocast
    from csgis.metrics import batch_metrics

    was_training = model.training
    model.eval()
    rows, images = [], []
    with torch.no_grad():
        for batch in loader:
            with autocast(device, autocast_dtype):
                out = model(batch["input"].to(device))
            prediction = out.prediction.float().clamp(0, 1).cpu()
            rows.extend(batch_metrics(prediction, batch["gt"]))
            for i in range(prediction.shape[0]):
                if len(images) < num_images:
                    images.append((str(batch["id"][i]),
                                   torch.cat((batch["input"][i], prediction[i], batch["gt"][i]), dim=2)))
    model.train(was_training)
    if not rows:
        return {}, images
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}, images


def segmenter_scores(model, loader, device, num_classes: int, normalize: bool = True,
                     autocast_dtype=None) -> dict[str, float]:
    """mIoU / pixel accuracy / per-class IoU of a segmenter on the GT images of a loader's items.

    It segments the GT structure images (ImageNet-normalised when `normalize`): what it meets at
    smoothing time are smoothed predictions, which resemble GTs, not the textured inputs.
    """
    import torch

    from csgis.device import autocast
    from csgis.metrics import confusion_matrix, segmentation_scores
    from csgis.models.segmenter import imagenet_normalize

    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    with torch.no_grad():
        for batch in loader:
            x = batch["gt"].to(device)
            if normalize:
                x = imagenet_normalize(x)
            with autocast(device, autocast_dtype):
                logits = model(x)
            confusion += confusion_matrix(logits.argmax(1).cpu(), batch["seg"], num_classes)
    model.train(was_training)
    return segmentation_scores(confusion)


def evaluate_segmenter(checkpoint: str | os.PathLike, data_cfg, split: str = "test", output_stride: int = 16,
                       normalize: bool = True, device: str = "cpu") -> dict:
    """A segmenter checkpoint scored on the full images of a dataset split (data_cfg: a DataConfig)."""
    import copy

    import torch
    from torch.utils.data import DataLoader

    from csgis.checkpoint import load_segmenter
    from csgis.data import build_dataset

    model = load_segmenter(checkpoint, output_stride=output_stride, map_location=device)
    data_cfg = copy.deepcopy(data_cfg)
    data_cfg.val_crop = 0  # full images
    loader = DataLoader(build_dataset(data_cfg, split, train=False), batch_size=1, shuffle=False)
    scores = segmenter_scores(model, loader, torch.device(device), model.num_classes, normalize)
    return {"checkpoint": str(checkpoint), "split": split, **scores}


# --------------------------------------------------------------------------- regions
def labelled_objects(data_root: str | os.PathLike, split: str = "test", per_structure: int = 1,
                     min_pixels: int = 100) -> list[dict]:
    """Objects of a split's labelled images: {id, input, gt, mask} per connected region of a class
    other than background (0) and ignore, at least `min_pixels`; the first `per_structure` textured
    inputs of each structure image."""
    from scipy import ndimage

    from csgis.data.manifest import IGNORE_INDEX, read_manifest
    from csgis.io import read_label
    data_root = Path(data_root)
    taken: dict[str, int] = {}
    objects = []
    for row in read_manifest(data_root, split):
        if not row.get("seg") or taken.get(row["gt"], 0) >= per_structure:
            continue
        labels = read_label(data_root / row["seg"])
        classes = [c for c in np.unique(labels) if c not in (0, IGNORE_INDEX)]
        if not classes:
            continue
        taken[row["gt"]] = taken.get(row["gt"], 0) + 1
        for c in classes:
            components, n = ndimage.label(labels == c)
            for k in range(1, n + 1):
                mask = components == k
                if mask.sum() >= min_pixels:
                    objects.append({"id": row["id"], "input": data_root / row["input"], "gt": data_root / row["gt"],
                                    "class": int(c), "mask": mask, "labels": labels})
    return objects


def evaluate_interactive(data_root: str | os.PathLike, split: str = "test", segmenter_path: str | None = None,
                         clicks: int = 5, max_clicks: int = 10, target: float = 0.85, per_structure: int = 1,
                         progress: bool = True) -> dict:
    """Interactive segmentation with simulated users (csgis.interactive.simulate_clicks) on the
    labelled objects of a split: per method the mean IoU after 1..clicks clicks and the mean number of
    clicks to reach `target` IoU (max_clicks when never)."""
    from tqdm import tqdm

    from csgis import interactive
    from csgis.io import read_image
    objects = labelled_objects(data_root, split, per_structure)
    methods = ["grabcut", "random_walker"]
    segmenter = None
    if segmenter_path:
        from csgis.checkpoint import load_segmenter
        segmenter = load_segmenter(segmenter_path)
        methods.append("click_object")
    results = {}
    for method in methods:
        curves, needed, start = [], [], time.perf_counter()
        labels_cache: dict = {}
        for obj in tqdm(objects, desc=method, unit="object", disable=not progress, file=sys.stderr):
            rgb = read_image(obj["input"])
            labels = None
            if method == "click_object":
                from csgis.regions import segment
                if obj["id"] not in labels_cache:
                    labels_cache[obj["id"]] = segment(segmenter, rgb)
                labels = labels_cache[obj["id"]]
            curve = interactive.simulate_clicks(method, rgb, obj["mask"], max_clicks, labels)
            curves.append(curve)
            needed.append(next((i + 1 for i, v in enumerate(curve) if v >= target), max_clicks))
        results[method] = {"objects": len(objects), "iou_after": {str(k): float(np.mean([c[k - 1] for c in curves]))
                                                                  for k in range(1, clicks + 1)},
                           f"clicks_to_{int(100 * target)}": float(np.mean(needed)), "max_clicks": max_clicks,
                           "seconds": time.perf_counter() - start}
    return {"data": str(data_root), "split": split, "protocol": "first click at the object's centre, each next at "
            "the centre of the largest error region (a miss: include; a spill: exclude)", "methods": results}


def evaluate_region_smoothing(checkpoint: str | os.PathLike, data_root: str | os.PathLike, split: str = "test",
                              settings=((1.0, 1.0), (0.5, 1.0), (2.0, 1.0), (1.0, 0.5), (1.0, 2.0)),
                              feather_px: float = 8.0, per_structure: int = 1, progress: bool = True) -> dict:
    """Smoothing the labelled objects of each image (their union) and nothing else: MSE, PSNR and SSIM
    inside the region against the GT for the input and each (strength, scale), and the number of
    pixels outside the region and its feather band that changed (must be 0)."""
    from tqdm import tqdm

    from csgis import regions
    from csgis.checkpoint import load_smoother
    from csgis.io import read_image
    from csgis.metrics import region_metrics
    model = load_smoother(checkpoint)
    by_image: dict[str, dict] = {}
    for obj in labelled_objects(data_root, split, per_structure):
        entry = by_image.setdefault(obj["id"], {"input": obj["input"], "gt": obj["gt"], "mask": np.zeros_like(obj["mask"])})
        entry["mask"] |= obj["mask"]
    rows = {"input": []}
    changed_outside, pixels_outside = 0, 0
    for image_id, entry in tqdm(by_image.items(), desc="regions", unit="img", disable=not progress, file=sys.stderr):
        rgb, gt, mask = read_image(entry["input"]), read_image(entry["gt"]), entry["mask"]
        rows["input"].append(region_metrics(rgb, gt, mask))
        outside = regions.feather(mask, feather_px) == 0
        for strength, scale in settings:
            out = regions.smooth_region(model, rgb, mask, feather_px, strength, scale)
            rows.setdefault(f"strength {strength:g}, scale {scale:g}", []).append(region_metrics(out, gt, mask))
            changed_outside += int((out[outside] != rgb[outside]).any(axis=-1).sum())
            pixels_outside += int(outside.sum())
    summary = {name: {k: float(np.mean([min(r[k], PSNR_CAP) if k == "psnr" else r[k] for r in rs]))
                      for k in ("mse", "psnr", "ssim")}
               for name, rs in rows.items()}
    return {"checkpoint": str(checkpoint), "data": str(data_root), "split": split, "images": len(by_image),
            "feather": feather_px, "region": "the union of the labelled objects (every class but background)",
            "inside": summary, "pixels_outside": pixels_outside, "changed_outside": changed_outside}


# --------------------------------------------------------------------------- classical baselines
def _single_thread_worker() -> None:
    # Worker processes each take one image: keep OpenCV from spawning threads per process.
    import cv2

    cv2.setNumThreads(1)


@dataclass
class FilterJob:
    """One filter run on one sample (picklable for worker processes)."""
    filter: str
    params: dict
    sample: Sample
    save: Path | None = None


def _filter_job(job: FilterJob) -> tuple[dict | None, str | None]:
    from csgis.filters import apply_filter

    try:
        textured, gt = _read_pair(job.sample.input, job.sample.gt)
    except (ImageReadError, ValueError) as e:
        return None, str(e)
    start = time.perf_counter()
    smoothed = apply_filter(job.filter, textured, **job.params)
    seconds = time.perf_counter() - start
    if job.save is not None:
        write_image(job.save, smoothed)
    try:
        return _metric_row(job.sample.id, smoothed, gt, method=job.filter, pred=str(job.save or ""),
                           gt=str(job.sample.gt), seconds=seconds), None
    except ValueError as e:  # e.g. an image smaller than the SSIM window
        return None, f"{job.sample.input}: {e}"


def run_filter(name: str, params: dict, samples: Sequence[Sample], workers: int = 1, progress: bool = True,
               desc: str = "", save_dir: Path | None = None) -> tuple[list[dict], list[str]]:
    """One classical smoother with fixed params over samples -> (per-image metric rows, problems)."""
    jobs = [FilterJob(name, dict(params), s, save_dir / name / f"{s.id}.png" if save_dir else None)
            for s in samples]
    results = parallel_map(_filter_job, jobs, workers, desc, progress, _single_thread_worker)
    return [r for r, _ in results if r is not None], [p for _, p in results if p is not None]


def select_params(name: str, grid: Sequence[dict], samples: Sequence[Sample], metric: str = "ssim_paper",
                  workers: int = 1, progress: bool = True, desc: str = "") -> tuple[dict, list[dict], list[str]]:
    """Best setting of `grid` by mean `metric` (higher is better) on samples -> (params, trials, problems)."""
    if metric not in METRIC_KEYS:
        raise ValueError(f"select metric must be one of {METRIC_KEYS}, got {metric!r}")
    trials, problems, best = [], [], None
    # One pool for the whole grid: starting worker processes costs seconds, a setting on a small
    # image milliseconds.
    jobs = [FilterJob(name, dict(params), sample) for params in grid for sample in samples]
    results = parallel_map(_filter_job, jobs, workers, desc or f"{name} val ({len(grid)} settings)", progress,
                           _single_thread_worker)
    for i, params in enumerate(grid):
        part = results[i * len(samples):(i + 1) * len(samples)]
        rows = [r for r, _ in part if r is not None]
        problems += [e for _, e in part if e is not None and e not in problems]
        summary = summarize(rows)
        trials.append({"params": dict(params), metric: summary[metric]["mean"], "n": summary["n"]})
        score = summary[metric]["mean"]
        if rows and (best is None or score > best[0]):
            best = (score, dict(params))
    return (best[1] if best else {}), trials, problems


def grid_edges(grid: Sequence[dict], params: dict) -> list[str]:
    """Names of the settings in `params` whose value is the smallest or largest that `grid` tries
    for it (among settings the grid varies): the best value may then lie outside the grid."""
    edges = []
    for key, value in params.items():
        values = sorted({setting[key] for setting in grid if key in setting})
        if len(values) > 1 and value in (values[0], values[-1]):
            edges.append(key)
    return edges


def selection_groups(data_root: str | os.PathLike, field_name: str, samples: Sequence[Sample]) -> dict[str, str]:
    """{sample id: its value of `field_name`} from the dataset's dataset.json (e.g. 'blend' on the
    held-out benchmark); ValueError naming the file when it records no such field for a sample."""
    from csgis.data.manifest import read_dataset_info

    info = read_dataset_info(data_root)
    where = Path(data_root) / "dataset.json"
    try:
        groups = sample_groups(info, [s.id for s in samples], [field_name])
    except ValueError as e:
        raise ValueError(f"{where}: cannot choose settings per {field_name}: {e}") from None
    missing = [name for name, value in groups.items() if value == "?"]
    if missing:
        raise ValueError(f"{where}: no {field_name} recorded for {len(missing)} sample(s), e.g. {missing[0]}")
    return groups


def _choose(name: str, grid: Sequence[dict], val_samples: Sequence[Sample], metric: str, workers: int,
            progress: bool, desc: str = "") -> tuple[dict, list[dict], list[str], list[str]]:
    """A filter's setting for one run: chosen on val_samples when the grid has several, its first
    setting when one, the defaults when there is no grid or no validation image ->
    (params, trials, at_grid_edge, problems)."""
    if val_samples and len(grid) > 1:
        params, trials, problems = select_params(name, grid, val_samples, metric, workers, progress, desc)
        return params, trials, grid_edges(grid, params), problems
    if val_samples and grid:
        return dict(grid[0]), [], [], []
    return {}, [], [], []


def run_baselines(data_root: str | os.PathLike, split: str = "test", val_split: str | None = "val",
                  filters: Sequence[str] | None = None, select_metric: str = "ssim_paper",
                  workers: int = 1, max_images: int = 0, save_dir: str | os.PathLike | None = None,
                  grids: dict[str, list[dict]] | None = None, progress: bool = True,
                  select_per: str | None = None) -> dict:
    """Classical smoothers scored on `split`, each with its PARAM_GRIDS setting chosen on `val_split`.

    A filter whose validation split is empty (or val_split None) runs with its defaults.
    `select_per`: a per-sample field of dataset.json (e.g. 'blend'): the setting is chosen for each
    of its values on the validation images with that value, and the test images with that value are
    run with it; every test value needs validation images.
    Report: {conventions, methods: {name: summary}, filters: {name: {params, trials, at_grid_edge,
    metrics, seconds_per_image}}, problems, images}; with select_per, a filter's params, trials and
    at_grid_edge are {value: ...} (at_grid_edge only for values chosen at an edge).
    """
    from csgis.filters import FILTERS, PARAM_GRIDS, default_params

    filters = list(filters) if filters else list(FILTERS)
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        raise ValueError(f"unknown filter(s) {', '.join(unknown)}; known: {', '.join(FILTERS)}")
    grids = grids or PARAM_GRIDS
    test_samples = load_split(data_root, split, max_images)
    if not test_samples:
        raise ValueError(f"{Path(data_root) / 'manifest.csv'}: no rows in split '{split}'")
    val_samples = load_split(data_root, val_split, max_images) if val_split else []
    save_dir = Path(save_dir) if save_dir is not None else None

    # Each part of the test split with the validation images it is tuned on: one part, or one per
    # value of select_per.
    parts = {"": (val_samples, test_samples)}
    if select_per and val_samples:
        groups = selection_groups(data_root, select_per, [*val_samples, *test_samples])
        values = sorted({groups[s.id] for s in test_samples})
        parts = {v: ([s for s in val_samples if groups[s.id] == v], [s for s in test_samples if groups[s.id] == v])
                 for v in values}
        untuned = [v for v, (val, _) in parts.items() if not val]
        if untuned:
            raise ValueError(f"{Path(data_root) / 'dataset.json'}: no {val_split} image has {select_per} "
                             f"{', '.join(untuned)}, which test images have")

    input_rows, problems = score_inputs(test_samples, workers, progress)
    methods = {INPUT_ROW: summarize(input_rows)}
    images = list(input_rows)
    report_filters = {}
    for name in filters:
        rows, chosen = [], {}
        for value, (val, test) in parts.items():
            label = f"{name} {value}".rstrip()
            params, trials, edges, errs = _choose(name, grids.get(name, []), val, select_metric, workers, progress,
                                                  f"{label} {val_split} ({len(grids.get(name, []))} settings)")
            problems += [e for e in errs if e not in problems]
            part_rows, errs = run_filter(name, params, test, workers, progress, f"{label} {split}", save_dir)
            problems += [e for e in errs if e not in problems]
            rows += part_rows
            chosen[value] = ({**default_params(name), **params}, trials, edges)
        seconds = float(np.mean([r["seconds"] for r in rows])) if rows else math.nan
        methods[name] = summarize(rows, seconds)
        tuned = any(trials for _, trials, _ in chosen.values())
        if list(chosen) == [""]:
            params, trials, edges = chosen[""]
        else:
            params = {v: c[0] for v, c in chosen.items()}
            trials = {v: c[1] for v, c in chosen.items()}
            edges = {v: c[2] for v, c in chosen.items() if c[2]}
        report_filters[name] = {
            "params": params,
            "selected_on": val_split if tuned else None,
            "select_metric": select_metric if tuned else None,
            "select_per": select_per if list(chosen) != [""] else None,
            "trials": trials,
            "at_grid_edge": edges,
            "metrics": {k: methods[name][k] for k in METRIC_KEYS},
            "n": len(rows),
            "seconds_per_image": seconds,
        }
        images += rows
    return {
        "conventions": CONVENTIONS,
        "data": str(data_root),
        "split": split,
        "val_split": val_split if val_samples else None,
        "select_metric": select_metric,
        "select_per": select_per if list(parts) != [""] else None,
        "n_test": len(test_samples),
        "n_val": len(val_samples),
        "workers": workers,
        "methods": methods,
        "filters": report_filters,
        "problems": problems,
        "images": images,
    }
