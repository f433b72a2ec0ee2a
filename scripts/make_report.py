"""Write a results report (docs/RESULTS.md, docs/results.json) from a report definition.

    python scripts/make_report.py                                  # configs/reports/demo.yaml
    python scripts/make_report.py --config configs/reports/demo.yaml --rows full full_8x --no-train

The report is data: its rows (training config, overrides, seeds, step scale) and what to compare
live in one YAML file (`--config`, see configs/reports/demo.yaml). The script works in three steps,
each of which resumes (finished work is read back from its files):
  1. plan     every row x seed is a run <experiments>/<row>_s<seed>, trained by
              `python train.py --config <row config> name=... seed=... <overrides> resume=auto`;
  2. collect  runs are read from their config.yaml and metrics.jsonl (never from training
              states); their final weights (models/latest.pth) and best.pth are scored on the test
              split in both metric conventions, cached in <run>/test_metrics_<weights>.json; the
              classical smoothers get parameters chosen on the validation split (cached in
              <experiments>/baselines.json); per-image scores are grouped by kind of image and by
              seen / test-only texture; the segmenter's mIoU; a comparison grid;
  3. write    <out>/results.json, and the tables of <out>/RESULTS.md. Everything below the notes
              marker in RESULTS.md is written by people and kept as it is.
A run whose config.yaml differs from what its row asks for now (a config edited after training)
is never mixed in: it is reported missing until --retrain-stale retrains it (train.py --overwrite
moves the old folder to <run>_archived_<time>). Runs live outside the repository and are lost with
the machine; --carry-over keeps the rows of runs that have no folder here with the numbers of the
committed results.json, each checked against the training settings it recorded (the report says
which runs it carried), and reads the classical smoothers' scores from the baselines/ folder beside
that file (every report writes them there) when they were made on the same images (their bytes),
grids, code and package versions: on a new machine that saves the hour their grids take.
Exit status: 0 when the report holds every planned run; 1 when it was written without some
(failed, unfinished or stale: listed in it); 2 on bad arguments or a bad report definition.
"""
from __future__ import annotations

import argparse
import copy
import filecmp
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from csgis import evaluation
from csgis.config import ConfigError, flatten, load_config
from csgis.data.manifest import read_dataset_info, read_manifest, split_sample_id
from csgis.io import read_image, write_image, write_text
from csgis.metrics import mean_std
from csgis.train import read_metrics

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PLAN = "configs/reports/demo.yaml"
METRICS = evaluation.METRIC_KEYS
NOTES_MARKER = "<!-- notes: everything below this line is written by people; make_report.py keeps it -->"
# Config keys that only say where a run lives, not what it trains.
NOT_TRAINING_KEYS = ("name", "experiments_dir", "resume")


class ReportError(ValueError):
    """The report definition or the arguments are unusable (the message names the file and key)."""


# ----------------------------------------------------------------------------- the plan
@dataclass
class Row:
    name: str
    title: str
    config: str
    overrides: list[str] = field(default_factory=list)
    step_scale: int = 1
    seeds: str = "all"          # all | first

    @property
    def path(self) -> str:
        """The config file; a relative path is relative to the repository root."""
        return self.config if os.path.isabs(self.config) else str(ROOT / self.config)


@dataclass
class Plan:
    path: str
    data: str
    experiments: str
    out: str
    shipped: str
    seeds: list[int]
    rows: list[Row]
    filters: list[str]
    select_on: str = "val"
    verdicts: list[str] = field(default_factory=list)
    training_length: list[str] = field(default_factory=list)
    train_split: list[str] = field(default_factory=list)
    segmenter: str = ""
    grid: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)
    heldout: dict = field(default_factory=dict)
    also_shipped: list[str] = field(default_factory=list)  # other shipped smoothers, scored beside `shipped`

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)


def load_plan(path: str) -> Plan:
    """Read and check a report definition; ReportError naming the file and the key otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except OSError as e:
        raise ReportError(f"report definition {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ReportError(f"report definition {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list) or not raw["rows"]:
        raise ReportError(f"{path}: a report definition needs a list of 'rows' (is it a training config? "
                          f"the report definitions are in configs/reports/)")
    known = {"data", "experiments", "out", "shipped", "seeds", "baselines", "verdicts", "training_length",
             "train_split", "segmenter", "grid", "rows", "regions", "heldout", "also_shipped"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ReportError(f"{path}: unknown key(s) {unknown}")
    rows = []
    for i, entry in enumerate(raw["rows"]):
        where = f"{path}: rows[{i}]"
        if not isinstance(entry, dict) or not {"name", "config"} <= set(entry):
            raise ReportError(f"{where} needs at least 'name' and 'config'")
        extra = sorted(set(entry) - {f.name for f in Row.__dataclass_fields__.values()})
        if extra:
            raise ReportError(f"{where} ({entry['name']}): unknown key(s) {extra}")
        row = Row(**{"title": entry["name"], **entry})
        if not isinstance(row.step_scale, int) or row.step_scale < 1 or row.seeds not in ("all", "first") \
                or not isinstance(row.overrides, list):
            raise ReportError(f"{where} ({row.name}): step_scale must be an integer >= 1, seeds 'all' or "
                              f"'first', overrides a list of key=value")
        rows.append(row)
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ReportError(f"{path}: row names repeat: {names}")
    baselines = raw.get("baselines") or {}
    plan = Plan(path=path, data=str(raw.get("data", "data/demo")), experiments=str(raw.get("experiments", "experiments/report")),
                out=str(raw.get("out", "docs")), shipped=str(raw.get("shipped", "")),
                seeds=list(raw.get("seeds", [0])), rows=rows, filters=list(baselines.get("filters") or []),
                select_on=str(baselines.get("select_on", "val")), verdicts=list(raw.get("verdicts") or []),
                training_length=list(raw.get("training_length") or []),
                train_split=list(raw.get("train_split") or []), segmenter=str(raw.get("segmenter") or ""),
                grid=dict(raw.get("grid") or {}), regions=dict(raw.get("regions") or {}),
                heldout=dict(raw.get("heldout") or {}), also_shipped=[str(f) for f in raw.get("also_shipped") or []])
    named = [*plan.verdicts, *plan.training_length, *plan.train_split,
             *([plan.segmenter] if plan.segmenter else []), *([plan.grid["run"]] if plan.grid.get("run") else [])]
    missing = sorted({n for n in named if n not in names})
    if missing:
        raise ReportError(f"{path}: names rows that it does not define: {missing}")
    if plan.heldout.get("post") is not None:
        from csgis.inference import check_post
        try:
            check_post(str(plan.heldout["post"]))
        except ValueError as e:
            raise ReportError(f"{path}: heldout.post: {e}") from None
    return plan


@dataclass
class Run:
    """One training run of the plan: a row at one seed."""
    row: Row
    seed: int
    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name


def run_overrides(run: Run, plan: Plan) -> list[str]:
    """The train.py overrides of a run on top of its row's config file."""
    out = [f"name={run.name}", f"seed={run.seed}", f"experiments_dir={plan.experiments}", *run.row.overrides]
    if run.row.step_scale != 1:
        base = load_config(run.row.path, run.row.overrides).train
        out += [f"train.epochs={base.epochs * run.row.step_scale}",
                f"train.milestones={[m * run.row.step_scale for m in base.milestones]}"]
    return out


def planned_runs(plan: Plan) -> list[Run]:
    return [Run(row, seed, ROOT / plan.experiments / f"{row.name}_s{seed}")
            for seed in plan.seeds for row in plan.rows if row.seeds == "all" or seed == plan.seeds[0]]


# ----------------------------------------------------------------------------- run
def stale_keys(run: Run, plan: Plan) -> list[str]:
    """'<key>: <trained> -> <asked now>' for every training setting on which the run's config.yaml
    differs from what its row gives now ([] for a run without config.yaml)."""
    saved = run.dir / "config.yaml"
    if not saved.is_file():
        return []
    have = flatten(load_config(saved))
    want = flatten(load_config(run.row.path, run_overrides(run, plan)))
    return [f"{k}: {have.get(k)!r} -> {v!r}" for k, v in want.items()
            if have.get(k) != v and k not in NOT_TRAINING_KEYS]


def finished(run: Run) -> bool:
    rows = read_metrics(run.dir / "metrics.jsonl")
    saved = run.dir / "config.yaml"
    return bool(rows) and saved.is_file() and rows[-1]["epoch"] >= load_config(saved).train.epochs


def train_runs(plan: Plan, runs: list[Run], retrain_stale: bool) -> list[str]:
    """Train what is missing or unfinished (the first row first: it is the one that ships) -> failed runs.

    Resuming also writes metrics.jsonl for a run from before it existed, from its training state.
    """
    failed = []
    for run in sorted(runs, key=lambda r: (plan.seeds.index(r.seed), plan.verdicts[:1] != [r.row.name])):
        stale = stale_keys(run, plan)
        if (stale and not retrain_stale) or (finished(run) and not stale):
            continue
        # resume=auto: continue a run that has a state, start one that has none
        command = [sys.executable, "train.py", "--config", run.row.path, *(["--overwrite"] if stale else []),
                   *run_overrides(run, plan), *([] if stale else ["resume=auto"])]
        print("$ " + " ".join(command), flush=True)
        if subprocess.call(command, cwd=ROOT) != 0:
            failed.append(run.name)
    return failed


# ----------------------------------------------------------------------------- collect
def _read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")


def _slim(rows: list[dict]) -> list[dict]:
    """Per-image rows reduced to what the report groups: image id, method and the four metrics."""
    return [{"name": r["name"], "method": r.get("method", evaluation.INPUT_ROW), **{k: r[k] for k in METRICS}}
            for r in rows]


def data_identity(data: str) -> dict:
    """What names a build of a dataset folder (its dataset.json's name, builder, seed and config): a cache
    of scores on another build of the same folder (another builder version, seed or size) is not used."""
    info = read_dataset_info(data) or {}
    return json.loads(json.dumps({k: info.get(k) for k in ("name", "builder", "seed", "config")}))


def _cached_scores(cache: Path, weights: Path, data: str, label: str, pred_dir: Path | None = None,
                   scale: float = 1.0, self_ensemble: bool = False, keep_mean: bool = False,
                   post: str | None = None) -> dict | None:
    """score_weights' cache when it holds these scores and is newer than the weights, else None."""
    if cache.is_file() and cache.stat().st_mtime >= weights.stat().st_mtime:
        cached = _read_json(cache)
        if "images" in cached and cached.get("data") == str(data) and cached.get("dataset") == data_identity(data) \
                and cached.get("scale", 1.0) == scale \
                and cached.get("self_ensemble", False) == self_ensemble and cached.get("keep_mean", False) == keep_mean \
                and cached.get("post") == post \
                and label in cached.get("methods", {}) and (pred_dir is None or pred_dir.is_dir()):
            return cached
    return None


def score_weights(weights: Path, data: str, split: str, cache: Path, label: str, pred_dir: Path | None = None,
                  scale: float = 1.0, self_ensemble: bool = False, keep_mean: bool = False,
                  post: str | None = None) -> dict:
    """Scores of a smoother file on a split (per image too; at `scale` x the resolution; with the x8
    self-ensemble; a classical smoother run on the result; shifted to the input's mean colour), cached
    in `cache` while the weights are older than it; pred_dir: also keep the predictions there."""
    cached = _cached_scores(cache, weights, data, label, pred_dir, scale, self_ensemble, keep_mean, post)
    if cached is not None:
        return cached
    report = evaluation.evaluate_model(weights, data, split, save_dir=pred_dir, label=label, progress=False,
                                       scale=scale, self_ensemble=self_ensemble, keep_mean=keep_mean, post=post)
    report["images"], report["dataset"] = _slim(report["images"]), data_identity(data)
    _write_json(cache, report)
    return report


def score_weights_variants(weights: Path, data: str, split: str, variants: list[tuple[Path, str, dict]]) -> list[dict]:
    """score_weights for each (cache, label, options) of one file, options as score_weights takes them
    (scale, self_ensemble, keep_mean, post): the variants that differ only in keep_mean and post share
    one network pass per image (evaluation.evaluate_model_finishes; the x8 self-ensemble is most of
    the report's time), with the same scores as one score_weights each."""
    results: list[dict | None] = [_cached_scores(cache, weights, data, label, **options) for cache, label, options in variants]
    passes: dict[tuple, list[int]] = {}
    for i, (_, _, options) in enumerate(variants):
        if results[i] is None:
            scale = options.get("scale", 1.0)
            key = (scale, options.get("self_ensemble", False)) + ((i,) if scale != 1 else ())
            passes.setdefault(key, []).append(i)
    for (scale, self_ensemble, *_), members in passes.items():
        finishes = [{"label": variants[i][1], "keep_mean": variants[i][2].get("keep_mean", False),
                     "post": variants[i][2].get("post")} for i in members]
        reports = evaluation.evaluate_model_finishes(weights, data, finishes, split, progress=False, scale=scale,
                                                     self_ensemble=self_ensemble)
        for i, report in zip(members, reports):
            report["images"], report["dataset"] = _slim(report["images"]), data_identity(data)
            _write_json(variants[i][0], report)
            results[i] = report
    return results


def score_run(run_dir: Path, data: str, which: str = "latest", split: str = "test", save: bool = False,
              prefix: str = "") -> dict:
    """Scores of <run>/models/<which>.pth on a split, cached in <run>/<prefix><split>_metrics_<which>.json;
    save: predictions in <run>/<split>_predictions_<which>/."""
    return score_weights(run_dir / "models" / f"{which}.pth", data, split,
                         run_dir / f"{prefix}{split}_metrics_{which}.json", run_dir.name,
                         run_dir / f"{split}_predictions_{which}" if save else None)


def _grids(filters: list[str]) -> dict:
    """The validation grids of `filters` as JSON reads them back (a cache made with other grids is stale)."""
    from csgis.filters import PARAM_GRIDS

    return json.loads(json.dumps({name: PARAM_GRIDS.get(name, []) for name in sorted(filters)}))


def _setting(name: str, params: dict) -> str:
    """'(key=value, ...)' of the settings filter `name`'s validation grid varies."""
    from csgis.filters import PARAM_GRIDS

    varied = {k for setting in PARAM_GRIDS.get(name, []) for k in setting} or set(params)
    return "(" + ", ".join(f"{k.rstrip('_')}={v:g}" if isinstance(v, float) else f"{k.rstrip('_')}={v}"
                           for k, v in params.items() if k in varied) + ")"


# What the classical smoothers' scores depend on besides the images and the grids: a cache made with
# another version of one of these files, or of one of these packages, is computed again.
BASELINE_SOURCES = ("csgis/filters.py", "csgis/metrics.py", "csgis/evaluation.py", "csgis/io.py")
BASELINE_PACKAGES = ("cv2", "skimage", "numpy", "scipy")
BASELINE_CACHES = ("baselines.json", "baselines_heldout.json")  # <out>/baselines/: kept for --carry-over


def _files_digest(root: Path, names) -> str:
    """sha256 of the names (relative to root, so not of where the folder lives) and bytes of files."""
    digest = hashlib.sha256()
    for name in names:
        path = Path(root) / name
        digest.update(str(name).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    return digest.hexdigest()


def baseline_key(data: str, filters: list[str], select_per: str | None, splits: tuple[str, ...]) -> dict:
    """Everything the classical smoothers' scores on `data` depend on: the build (data_identity), the
    bytes of every input and GT of `splits`, the grids, the per-value selection, the code
    (BASELINE_SOURCES) and the packages' versions. A cache is used only under an equal key."""
    import importlib

    try:
        rows = [r for split in splits for r in read_manifest(data, split)]
    except (OSError, ValueError):
        rows = []
    images = [r[col] for r in rows for col in ("input", "gt")]
    return json.loads(json.dumps({
        "filters": sorted(filters), "data": str(data), "dataset": data_identity(data), "grids": _grids(filters),
        "select_per": select_per, "splits": list(splits), "images": len(rows),
        "images_sha256": _files_digest(Path(data), [*images, "dataset.json"]),
        "code_sha256": _files_digest(ROOT, BASELINE_SOURCES),
        "packages": {name: getattr(importlib.import_module(name), "__version__", "?") for name in BASELINE_PACKAGES}}))


def baselines(plan: Plan, data: str, filters: list[str], workers: int, name: str = "baselines.json",
              select_per: str | None = None, committed: Path | None = None) -> dict:
    """The classical smoothers on `data`'s test split, parameters chosen on its validation split (for
    each value of the sample field `select_per` when given), cached in <experiments>/<name>.
    `committed`: a folder of such caches kept with an earlier report (--carry-over), read when the
    experiments folder has none under the same baseline_key; the report then says it carried them."""
    key = baseline_key(data, filters, select_per, ("test", plan.select_on) if plan.select_on else ("test",))
    cache = ROOT / plan.experiments / name
    for path in [cache] + ([committed / name] if committed else []):
        if path.is_file():
            cached = _read_json(path)
            if cached.get("key") == key and "images" in cached:
                if path != cache:
                    print(f"classical smoothers on {data}: carried over from {path} (same images, grids, code and "
                          f"package versions)", flush=True)
                    cached["carried_from"] = str(path)
                    _write_json(cache, cached)  # the experiments folder holds what this report used
                return cached
    report = evaluation.run_baselines(data, "test", plan.select_on, filters=filters, workers=workers, progress=True,
                                      select_per=select_per)
    report["images"], report["dataset"] = _slim(report["images"]), data_identity(data)
    report["grids"], report["key"] = _grids(filters), key
    _write_json(cache, report)
    return report


def image_groups(image_id: str, test_only: set[str]) -> list[str]:
    """A demo image's groups: its kind (photo/scene: the structure name without digits) and whether
    its texture is seen in training; [] for ids of another form."""
    parts = split_sample_id(image_id)
    if parts is None:
        return []
    structure, texture = parts
    return [structure.rstrip("0123456789"), "test-only textures" if texture in test_only else "seen textures"]


def by_group(rows: list[dict], method: str, test_only: set[str]) -> dict:
    """{group: {n, psnr_paper, ssim_paper}}: means of one method's per-image rows."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] == method:
            for g in image_groups(r["name"], test_only):
                groups.setdefault(g, []).append(r)
    return {g: {"n": len(rs), **{k: sum(r[k] for r in rs) / len(rs) for k in ("psnr_paper", "ssim_paper")}}
            for g, rs in groups.items()}


def mean_over(cells: list[dict]) -> dict:
    """Group cells of several seeds -> one cell per group (mean over seeds of each seed's group mean)."""
    return {g: {"n": cells[0][g]["n"], **{k: sum(c[g][k] for c in cells) / len(cells)
                                           for k in ("psnr_paper", "ssim_paper")}} for g in cells[0]}


def training_settings(cfg) -> dict:
    """A config's training settings: every flattened key but where the run lives (NOT_TRAINING_KEYS)."""
    return {k: v for k, v in flatten(cfg).items() if k not in NOT_TRAINING_KEYS}


def run_record(run: Run, data: str) -> dict:
    """What the report knows of a finished run: its training (from metrics.jsonl and config.yaml) and
    its test scores."""
    rows = read_metrics(run.dir / "metrics.jsonl")
    validated = [r for r in rows if "val" in r]
    best = max(validated, key=lambda r: r["val"]["ssim_paper"], default=None)  # first of equals, as training
    test = score_run(run.dir, data, "latest")
    return {
        "row": run.row.name, "seed": run.seed, "config": training_settings(load_config(run.dir / "config.yaml")),
        "train": {"steps": rows[-1]["step"], "epochs": rows[-1]["epoch"],
                  "train_seconds": float(sum(r["seconds"] for r in rows)),
                  "best_epoch": best["epoch"] if best else None,
                  "best_val_ssim_paper": best["val"]["ssim_paper"] if best else None,
                  "val_curve": [[r["step"], r["val"]["psnr_paper"], r["val"]["ssim_paper"]] for r in validated]},
        "test": test["methods"][run.name],
        "test_best": score_run(run.dir, data, "best")["methods"][run.name] if best else None,
        "images": test["images"],
    }


def _train_split_groups(previous: dict, run: Run) -> dict | None:
    """The training-split scores an earlier results.json holds for `run` ({'input': .., row: ..}):
    only for the seed that table was made with."""
    fit, seeds = previous.get("training_split") or {}, previous.get("seeds") or []
    if run.row.name not in fit or not seeds or run.name != f"{run.row.name}_s{seeds[0]}":
        return None
    return {"input": fit.get("input"), run.row.name: fit[run.row.name]}


def carry_over(plan: Plan, runs: list[Run], previous_path: Path) -> tuple[dict, list[str]]:
    """Runs of the plan that have no folder here, taken from an earlier results.json -> ({name: record},
    problems). A record that stored its training settings is carried only when they equal what its row
    asks for now; an older one (no settings stored) when its row's definition (config file, overrides,
    step scale) is unchanged, marked config_checked False."""
    if not previous_path.is_file():
        return {}, [f"--carry-over: {previous_path} does not exist; nothing carried over"]
    try:
        previous = _read_json(previous_path)
        old_runs, old_rows = previous["runs"], previous["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"--carry-over: {previous_path} is not a results.json of this script ({e})") from None
    carried, problems = {}, []
    for run in runs:
        record = old_runs.get(run.name)
        if run.dir.exists() or record is None:
            continue
        if "config" in record:
            want = training_settings(load_config(run.row.path, run_overrides(run, plan)))
            changed = [f"{k}: {record['config'].get(k)!r} -> {v!r}" for k, v in want.items() if record["config"].get(k) != v]
            if changed:
                problems.append(f"{run.name} in {previous_path} was trained with another config than its row gives "
                                f"now ({'; '.join(changed)}); not carried over")
                continue
            checked = True
        else:
            old = old_rows.get(run.row.name) or {}
            if [old.get("config"), old.get("overrides"), old.get("step_scale")] != \
                    [run.row.config, run.row.overrides, run.row.step_scale]:
                problems.append(f"{run.name} in {previous_path}: its row was defined otherwise then; not carried over")
                continue
            checked = False
        heldout = (previous.get("heldout") or {})
        same_heldout = bool(plan.heldout) and heldout.get("data") == plan.heldout.get("data")
        carried[run.name] = {**record, "carried_from": str(previous_path), "config_checked": checked,
                             "heldout": heldout.get("runs", {}).get(run.name) if same_heldout else None,
                             "row_groups": (previous.get("by_image_group") or {}).get(run.row.name),
                             "train_split_groups": _train_split_groups(previous, run)}
    return carried, problems


def aggregate(plan: Plan, records: dict[str, dict]) -> dict:
    """{row: {seeds, steps, <metric>: (mean, std over seeds), train_seconds: (mean, std)}}."""
    out = {}
    for row in plan.rows:
        rs = [r for r in records.values() if r["row"] == row.name]
        if not rs:
            continue
        entry = {"seeds": sorted(r["seed"] for r in rs), "steps": rs[0]["train"]["steps"]}
        for key in METRICS:
            entry[key] = mean_std([r["test"][key]["mean"] for r in rs], ddof=1)
        entry["train_seconds"] = mean_std([r["train"]["train_seconds"] for r in rs], ddof=1)
        out[row.name] = entry
    return out


def shortfalls(entry: dict, base: dict) -> list[str]:
    """Every (smoother, metric) where a row's seed mean does not beat a classical smoother ([] = beats all)."""
    return [f"{name} {key} ({f['metrics'][key]['mean']:.4f} >= {entry[key][0]:.4f})"
            for name, f in base["filters"].items() for key in METRICS if entry[key][0] <= f["metrics"][key]["mean"]]


def training_length(plan: Plan, records: dict[str, dict], data: str) -> list[dict]:
    """Test scores (first seed) against training steps: the final weights of each training_length row,
    and inside the longest one its periodic checkpoints at whole multiples of the first row's epochs."""
    seed = plan.seeds[0]
    present = [name for name in plan.training_length if f"{name}_s{seed}" in records]
    if len(present) < 2:
        return []
    rows = []
    longest = ROOT / plan.experiments / f"{present[-1]}_s{seed}"
    epochs = {r["epoch"]: r for r in read_metrics(longest / "metrics.jsonl")}
    step_epochs = records[f"{present[0]}_s{seed}"]["train"]["epochs"]
    for epoch in range(step_epochs, max(epochs), step_epochs):
        weights = longest / "models" / f"epoch_{epoch:04d}.pth"
        if weights.is_file() and epoch in epochs:
            m = score_run(longest, data, weights.stem)["methods"][longest.name]
            rows.append({"run": longest.name, "weights": weights.stem, "steps": epochs[epoch]["step"],
                         "lr": epochs[epoch]["lr"], "final": False,
                         **{k: m[k]["mean"] for k in ("psnr_paper", "ssim_paper")}})
    for name in present:
        run_dir = ROOT / plan.experiments / f"{name}_s{seed}"
        last = read_metrics(run_dir / "metrics.jsonl")[-1]
        test = records[run_dir.name]["test"]
        rows.append({"run": run_dir.name, "weights": "latest", "steps": last["step"], "lr": last["lr"], "final": True,
                     **{k: test[k]["mean"] for k in ("psnr_paper", "ssim_paper")}})
    return sorted(rows, key=lambda r: (r["steps"], r["final"]))


def shipped_run(plan: Plan, shipped: str, records: dict[str, dict]) -> str | None:
    """The run whose final weights are byte for byte the shipped smoother, if any."""
    path = ROOT / shipped if shipped else None
    if path is None or not path.is_file():
        return None
    for name in records:
        latest = ROOT / plan.experiments / name / "models" / "latest.pth"
        if latest.is_file() and filecmp.cmp(latest, path, shallow=False):
            return name
    return None


def comparison_grid(plan: Plan, data: str, filters: dict, run_name: str, out: Path) -> list[str]:
    """Rows: input | classical smoothers (validated parameters) | the run's prediction | GT."""
    from csgis.filters import apply_filter
    from csgis.visualize import image_grid, pick_samples

    root = Path(data)
    chosen = pick_samples(read_manifest(root, "test"), int(plan.grid.get("rows", 5)), seed=0)
    names = [f for f in plan.grid.get("filters", []) if f in filters]
    predictions = ROOT / plan.experiments / run_name / "test_predictions_latest"
    cells = []
    for row in chosen:
        textured = read_image(root / row["input"])
        cells.append([textured] + [apply_filter(f, textured, **filters[f]["params"]) for f in names]
                     + [read_image(predictions / f"{row['id']}.png"), read_image(root / row["gt"])])
    write_image(out, image_grid(cells, 200, ["input", *(f.upper() for f in names), run_name, "GT"]))
    return [r["id"] for r in chosen]


def environment() -> dict:
    import torch

    from csgis.runtime import cpu_name
    return {"machine": f"{cpu_name()}, {os.cpu_count()} cores, no GPU used", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}


def heldout_evaluation(plan: Plan, args, records: dict[str, dict], carried: dict[str, dict] | None = None) -> dict:
    """The held-out benchmark (plan.heldout.data, built when missing): input, the classical smoothers
    tuned on its val split, every finished run (carried-over runs with the scores their file holds)
    and the shipped smoother, per blend."""
    data = plan.heldout["data"]
    if not (Path(data) / "manifest.csv").is_file():
        command = [sys.executable, "dataset_utils/make_heldout.py", "--out", data, "--size",
                   plan.heldout.get("size", "default")]
        print("$ " + " ".join(command), flush=True)
        if subprocess.call(command, cwd=ROOT) != 0:
            raise ReportError(f"could not build the held-out benchmark in {data}")
    info = read_dataset_info(data) or {}
    samples = info.get("samples") or {}
    blends = evaluation.sample_groups(info, samples, ["blend"]) if samples else {}
    # The same images by blend and kind of structure (cartoon, photo-derived), for the rows scored here.
    kinds = evaluation.sample_groups(info, samples, ["blend", "kind"]) if samples else {}
    print("held-out benchmark: classical smoothers (cached in baselines_heldout.json) and every run", flush=True)
    base = baselines(plan, data, args.filters, args.workers, "baselines_heldout.json", plan.heldout.get("select_per"),
                     committed_baselines(args))
    table = {"input": evaluation.group_means(base["images"], evaluation.INPUT_ROW, blends)}
    by_kind = {"input": evaluation.group_means(base["images"], evaluation.INPUT_ROW, kinds)}
    for name in base["filters"]:
        table[name.upper()] = evaluation.group_means(base["images"], name, blends)
        by_kind[name.upper()] = evaluation.group_means(base["images"], name, kinds)
    per_run, per_run_kind = {}, {}
    for name in records:
        scores = score_run(ROOT / plan.experiments / name, data, "latest", "test", prefix="heldout_")
        per_run[name] = evaluation.group_means(scores["images"], name, blends)
        per_run_kind[name] = evaluation.group_means(scores["images"], name, kinds)
    for name, record in (carried or {}).items():
        if record.get("heldout"):
            per_run[name] = record["heldout"]

    def mean_of(runs: list[dict]) -> dict:
        return {g: {"n": runs[0][g]["n"], **{k: sum(r[g][k] for r in runs) / len(runs) for k in METRICS}} for g in runs[0]}

    for row in plan.rows:
        members = [n for n, r in {**records, **(carried or {})}.items() if r["row"] == row.name and n in per_run]
        if members:
            table[row.name] = mean_of([per_run[n] for n in members])
            if all(n in per_run_kind for n in members):  # every seed scored here, none carried over
                by_kind[row.name] = mean_of([per_run_kind[n] for n in members])
    # Shipped files at 1x, at each show.py --scale, with --self-ensemble, --keep-mean and both, and with
    # --post (alone, with --keep-mean, with both options): the shipped smoother as "shipped", the others by
    # file. Variants: (row-name suffix, cache-name suffix, score_weights options); the 1x, keep-mean and
    # post + keep-mean rows also by kind of structure.
    variants = [("", "", {})] + [(f", scale {s:g}", f"_scale{s:g}", {"scale": s}) for s in plan.heldout.get("scales", [])]
    if plan.heldout.get("self_ensemble"):
        variants.append((", self-ensemble", "_x8", {"self_ensemble": True}))
    if plan.heldout.get("keep_mean"):
        variants.append((", keep mean", "_mean", {"keep_mean": True}))
    if plan.heldout.get("self_ensemble") and plan.heldout.get("keep_mean"):
        variants.append((", self-ensemble, keep mean", "_x8_mean", {"self_ensemble": True, "keep_mean": True}))
    post = plan.heldout.get("post")
    if post:  # a classical smoother run on the result (show.py --post); with keep mean; and the self-ensemble
        variants.append((f", then {post}", "_post", {"post": post}))
    if post and plan.heldout.get("keep_mean"):
        variants.append((f", then {post}, keep mean", "_post_mean", {"post": post, "keep_mean": True}))
        if plan.heldout.get("self_ensemble"):
            variants.append((f", self-ensemble, then {post}, keep mean", "_x8_post_mean",
                             {"self_ensemble": True, "post": post, "keep_mean": True}))
    shipped = [(args.shipped, "shipped", "shipped")] if args.shipped and (ROOT / args.shipped).is_file() else []
    for weights, label, stem in shipped + [(f, f, f"also_{Path(f).stem}") for f in plan.also_shipped]:
        scores = score_weights_variants(ROOT / weights, data, "test", [
            (ROOT / plan.experiments / f"heldout_{stem}{file_suffix}.json", label + name_suffix, options)
            for name_suffix, file_suffix, options in variants])
        for (name_suffix, _, options), scored in zip(variants, scores):
            name = label + name_suffix
            table[name] = evaluation.group_means(scored["images"], name, blends)
            if not options or options in ({"keep_mean": True}, {"post": post, "keep_mean": True}):
                by_kind[name] = evaluation.group_means(scored["images"], name, kinds)
    return {"data": data, "params": {n: f["params"] for n, f in base["filters"].items()},
            "at_grid_edge": {n: f["at_grid_edge"] for n, f in base["filters"].items() if f.get("at_grid_edge")},
            "select_per": base.get("select_per"), "n_val": base["n_val"], "table": table, "runs": per_run,
            "by_kind": by_kind if kinds else {}, "gt_smoother": (info.get("config") or {}).get("gt_smoother"),
            "post": post, "carried_from": base.get("carried_from")}


def region_evaluation(plan: Plan, data: str) -> dict:
    """Interactive segmentation and region smoothing (plan.regions: smoother, segmenter, per_structure),
    cached in <experiments>/regions.json while the weights, the data and the settings stay the same."""
    spec = plan.regions
    smoother = ROOT / spec["smoother"]
    segmenter = ROOT / spec["segmenter"] if spec.get("segmenter") else None
    key = {"spec": spec, "data": data, "dataset": data_identity(data), "mtimes": [p.stat().st_mtime for p in (smoother, segmenter) if p]}
    cache = ROOT / plan.experiments / "regions.json"
    if cache.is_file() and _read_json(cache).get("key") == json.loads(json.dumps(key)):
        return _read_json(cache)["results"]
    print("interactive segmentation and region smoothing", flush=True)
    per = int(spec.get("per_structure", 1))
    results = {"interactive": evaluation.evaluate_interactive(data, "test", str(segmenter) if segmenter else None,
                                                              per_structure=per),
               "smoothing": evaluation.evaluate_region_smoothing(smoother, data, "test", per_structure=per)}
    results["smoothing"]["checkpoint"] = spec["smoother"]
    _write_json(cache, {"key": key, "results": results})
    return results


def committed_baselines(args) -> Path | None:
    """Where --carry-over finds the classical smoothers' caches of the earlier report: baselines/ beside
    its results.json (written there by every report, BASELINE_CACHES)."""
    return Path(args.carry_over).parent / "baselines" if args.carry_over else None


def collect(plan: Plan, args, runs: list[Run], failed: list[str], carried: dict[str, dict] | None = None) -> dict:
    """Everything the report states, as one JSON-ready dict; `carried`: records of runs not on this
    machine (carry_over)."""
    carried = carried or {}
    records = {}
    order = [r.name for r in plan.rows]
    for run in sorted(runs, key=lambda r: (order.index(r.row.name), r.seed)):
        if run.name in carried:
            continue
        stale = stale_keys(run, plan)
        if stale:
            print(f"error: {run.dir} was trained with another config than its row gives now ({'; '.join(stale)}); "
                  f"it is left out. Rerun with --retrain-stale to retrain it (the old run is moved aside, not "
                  f"deleted).", file=sys.stderr)
        if stale or not finished(run):
            if run.name not in failed:
                failed.append(run.name)
            continue
        print(f"scoring {run.dir} on the test split", flush=True)
        records[run.name] = run_record(run, args.data)
    if not records and not carried:
        raise ReportError("no finished run to report")
    base = baselines(plan, args.data, args.filters, args.workers, committed=committed_baselines(args))
    info = read_dataset_info(args.data) or {}
    test_only = {k for k, v in info.get("textures", {}).items() if v == "test-only"}
    seed = plan.seeds[0]
    for name, record in records.items():
        record["groups"] = by_group(record["images"], name, test_only)

    groups = {"input": by_group(base["images"], evaluation.INPUT_ROW, test_only)}
    for name in base["filters"]:
        groups[name.upper()] = by_group(base["images"], name, test_only)
    for row in plan.rows:
        old = [r for r in carried.values() if r["row"] == row.name]
        cells = [r["groups"] for r in [*records.values(), *old] if r["row"] == row.name and r.get("groups")]
        if old and not cells and old[0].get("row_groups"):  # every run carried from a file without per-run groups
            groups[row.name] = old[0]["row_groups"]
        elif cells and cells[0]:
            groups[row.name] = mean_over(cells)
    fit = {}
    for name in plan.train_split:
        if f"{name}_s{seed}" in records:
            print(f"scoring {name}_s{seed} on the training split", flush=True)
            scores = score_run(ROOT / plan.experiments / f"{name}_s{seed}", args.data, "latest", "train")
            fit.setdefault("input", by_group(scores["images"], evaluation.INPUT_ROW, test_only))
            fit[name] = by_group(scores["images"], f"{name}_s{seed}", test_only)
        elif (carried.get(f"{name}_s{seed}") or {}).get("train_split_groups"):  # as the earlier file had it
            old = carried[f"{name}_s{seed}"]["train_split_groups"]
            fit.setdefault("input", old["input"])
            fit[name] = old[name]

    agg = aggregate(plan, {**records, **carried})
    grid_run = f"{plan.grid['run']}_s{seed}" if plan.grid.get("run") else None
    grid = {}
    if grid_run in records:
        score_run(ROOT / plan.experiments / grid_run, args.data, "latest", save=True)
        path = Path(args.out) / "results_grid.png"
        grid = {"run": grid_run, "file": path.name,
                "images": comparison_grid(plan, args.data, base["filters"], grid_run, path)}
    segmenter = {}
    if plan.segmenter:
        cfg = load_config(plan.row(plan.segmenter).path, plan.row(plan.segmenter).overrides)
        if cfg.segmenter.checkpoint:
            data_cfg = copy.deepcopy(cfg.data)
            data_cfg.root = args.data
            segmenter = evaluation.evaluate_segmenter(cfg.segmenter.checkpoint, data_cfg, "test",
                                                      cfg.segmenter.output_stride, cfg.loss.seg_normalize)
            segmenter["classes"] = info.get("classes")
    region_results = region_evaluation(plan, args.data) if plan.regions else {}
    heldout_results = heldout_evaluation(plan, args, records, carried) if plan.heldout else {}
    shipped_test = {}
    if args.shipped and (ROOT / args.shipped).is_file():
        shipped_test = score_weights(ROOT / args.shipped, args.data, "test", ROOT / plan.experiments / "test_shipped.json",
                                     "shipped")["methods"]["shipped"]
    also_test = {f: score_weights(ROOT / f, args.data, "test", ROOT / plan.experiments / f"test_also_{Path(f).stem}.json",
                                  f)["methods"][f] for f in plan.also_shipped}
    return {
        "environment": environment(), "report": plan.path, "data": args.data, "seeds": plan.seeds,
        "dataset": {"name": info.get("name"), "counts": info.get("counts"), "test_only_textures": sorted(test_only),
                    "gt_smoother": (info.get("config") or {}).get("gt_smoother")},
        "rows": {r.name: {"title": r.title, "config": r.config, "overrides": r.overrides, "step_scale": r.step_scale,
                          **agg[r.name]} for r in plan.rows if r.name in agg},
        "runs": {run.name: {k: v for k, v in (records.get(run.name) or carried[run.name]).items()
                            if k not in ("images", "heldout", "row_groups", "train_split_groups")}
                 for run in sorted(runs, key=lambda r: (order.index(r.row.name), r.seed))
                 if run.name in records or run.name in carried},
        "carried_over": {"file": str(args.carry_over), "runs": list(carried)} if carried else {},
        "baselines": {"input": base["methods"]["input"], "select_on": base["val_split"], "n_val": base["n_val"],
                      "carried_from": base.get("carried_from"),
                      "select_metric": base["select_metric"],
                      "filters": {n: {"params": f["params"], "at_grid_edge": f.get("at_grid_edge", []),
                                      **f["metrics"], "seconds_per_image": f["seconds_per_image"]}
                                  for n, f in base["filters"].items()}},
        "verdicts": {name: {"steps": agg[name]["steps"], "seeds": agg[name]["seeds"],
                            "beats_all_classical": not shortfalls(agg[name], base),
                            "shortfalls": shortfalls(agg[name], base)} for name in plan.verdicts if name in agg},
        "by_image_group": groups, "training_split": fit,
        "training_length": training_length(plan, records, args.data),
        "segmenter": segmenter, "grid": grid,
        "shipped": {"file": args.shipped, "run": shipped_run(plan, args.shipped, records)} if args.shipped else {},
        "regions": region_results,
        "heldout": heldout_results,
        "shipped_test": shipped_test,
        "also_shipped_test": also_test,
        "failed": failed,
    }


# ----------------------------------------------------------------------------- write
def _f(v, digits: int) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pm(pair, digits: int, show_std: bool) -> str:
    return _f(pair[0], digits) + (f" ± {_f(pair[1], digits)}" if show_std else "")


def _cell(cell: dict) -> str:
    return f"{cell['psnr_paper']:.2f} / {cell['ssim_paper']:.4f}"


def tables(plan: Plan, res: dict) -> str:
    """The generated part of RESULTS.md: tables and facts from `res` (results.json), no explanations."""
    lines: list[str] = []
    add = lines.append
    env, ds, base = res["environment"], res["dataset"], res["baselines"]
    counts = ds["counts"] or {}
    title_of = {r.name: r.title for r in plan.rows}
    add("# Results on the embedded demo dataset")
    add("")
    add(f"Tables generated by `scripts/make_report.py` from `{plan.path}` (rows, configs, seeds); rerun with "
        f"`python scripts/make_report.py --config {plan.path}`. Explanations are in [Notes](#notes) at the end.")
    add("")
    add(f"Machine: {env['machine']}; torch {env['torch']}; torch threads: {env['threads']}. Generated {env['date']}.")
    add("")
    add("## Setting")
    add("")
    if counts:
        add(f"- **Data**: `{res['data']}` ({ds['name']}): train {counts['train']['samples']} samples "
            f"({counts['train']['structures']} structure images), val {counts['val']['samples']} "
            f"({counts['val']['structures']}), test {counts['test']['samples']} ({counts['test']['structures']}). "
            f"GT: `{ds['gt_smoother']}`. Textures only in the test split: {', '.join(ds['test_only_textures'])}.")
    add(f"- **Rows**: each row is a training config (with the overrides shown) trained once per seed "
        f"({', '.join(map(str, res['seeds']))}; rows marked *first* only for seed {res['seeds'][0]}); "
        f"*steps* x*N* multiplies the config's epochs and LR milestones. Scores are of the final weights "
        f"(`models/latest.pth`).")
    add("- **Metrics**: PSNR (dB) and SSIM on the full test images in two conventions (docs/method.md §6): "
        "*paper* (zero-padded Gaussian SSIM on [0,1] RGB) and *standard* (scikit-image/BasicSR: valid "
        "window, uint8). Mean over the test images; for rows with several seeds, mean ± sample standard "
        "deviation over seeds.")
    add(f"- **Classical smoothers**: `csgis.filters`, parameters chosen by {base['select_metric']} on the "
        f"{base['n_val']} {base['select_on']} images among `csgis.filters.PARAM_GRIDS`; time per image, one process.")
    add("")
    add("| row | config | seeds | steps |")
    add("|---|---|---|---|")
    for r in plan.rows:
        if r.name in res["rows"]:
            e = res["rows"][r.name]
            how = [f"`{r.config}`", *(f"`{o}`" for o in r.overrides)] + ([f"steps x{r.step_scale}"] if r.step_scale > 1 else [])
            add(f"| {r.name} | {' '.join(how)} | {', '.join(map(str, e['seeds']))} | {e['steps']} |")
    add("")
    add("## Test split")
    add("")
    add("| method | PSNR paper | SSIM paper | PSNR standard | SSIM standard | time |")
    add("|---|---|---|---|---|---|")
    inp = base["input"]
    add(f"| input (textured) | {_f(inp['psnr_paper']['mean'], 2)} | {_f(inp['ssim_paper']['mean'], 4)} | "
        f"{_f(inp['psnr_standard']['mean'], 2)} | {_f(inp['ssim_standard']['mean'], 4)} | |")
    for name, f in base["filters"].items():
        params = ", ".join(f"{k}={v}" for k, v in f["params"].items())
        if f.get("at_grid_edge"):
            params += f"; {', '.join(f['at_grid_edge'])} at the edge of its grid"
        add(f"| {name.upper()} ({params}) | {_f(f['psnr_paper']['mean'], 2)} | {_f(f['ssim_paper']['mean'], 4)} | "
            f"{_f(f['psnr_standard']['mean'], 2)} | {_f(f['ssim_standard']['mean'], 4)} | "
            f"{_f(f['seconds_per_image'], 3)} s/image |")
    for name, e in res["rows"].items():
        show = len(e["seeds"]) > 1
        train = tuple(x / 60 for x in e["train_seconds"])
        add(f"| CSGIS-Net {e['title']} | {_pm(e['psnr_paper'], 2, show)} | {_pm(e['ssim_paper'], 4, show)} | "
            f"{_pm(e['psnr_standard'], 2, show)} | {_pm(e['ssim_standard'], 4, show)} | "
            f"train {_pm(train, 1, show)} min |")
    st = res.get("shipped_test") or {}
    if st:
        add(f"| shipped `{res['shipped']['file']}` | {_f(st['psnr_paper']['mean'], 2)} | {_f(st['ssim_paper']['mean'], 4)} | "
            f"{_f(st['psnr_standard']['mean'], 2)} | {_f(st['ssim_standard']['mean'], 4)} | |")
    for file, st in (res.get("also_shipped_test") or {}).items():
        add(f"| shipped `{file}` | {_f(st['psnr_paper']['mean'], 2)} | {_f(st['ssim_paper']['mean'], 4)} | "
            f"{_f(st['psnr_standard']['mean'], 2)} | {_f(st['ssim_standard']['mean'], 4)} | |")
    add("")
    add("Training time: the sum of the training epochs' wall time (validation and checkpoints not included).")
    add("")
    for name, v in res["verdicts"].items():
        who = f"**{title_of[name]}** ({v['steps']} steps, {'mean of seeds ' if len(v['seeds']) > 1 else 'seed '}" \
              f"{', '.join(map(str, v['seeds']))})"
        if v["beats_all_classical"]:
            add(f"- {who} beats every classical smoother in PSNR and SSIM, in both conventions.")
        else:
            add(f"- {who} does not beat every classical smoother: " + "; ".join(v["shortfalls"]) + ".")
    shipped = res.get("shipped") or {}
    if shipped.get("run"):
        add(f"- The shipped smoother `{shipped['file']}` is the final weights of `{shipped['run']}`.")
    add("")
    groups = res["by_image_group"]
    order = [g for g in groups.get("input", {}) if "textures" not in g] + \
        [g for g in ("seen textures", "test-only textures") if g in groups.get("input", {})]
    if order:
        add("### By kind of test image")
        add("")
        add("PSNR / SSIM, paper convention, mean over the images of each group (rows: mean over seeds). *photo*: "
            "bundled photographs; *scene*: procedural shapes on smooth backgrounds. Every image is in one kind "
            "and one texture group.")
        add("")
        add("| method | " + " | ".join(f"{g} (n={groups['input'][g]['n']})" for g in order) + " |")
        add("|---|" + "---|" * len(order))
        for label, cells in groups.items():
            add(f"| {title_of.get(label, label)} | " + " | ".join(_cell(cells[g]) if g in cells else "" for g in order)
                + " |")
        add("")
    held = res.get("heldout") or {}
    if held:
        table = held["table"]
        blends = [g for g in ("gray", "colour") if g in table["input"]]
        add("## Held-out benchmark")
        add("")
        add(f"`{held['data']}` (`dataset_utils/make_heldout.py`): structures and textures from sources no training "
            f"builder reads (cartoon and photo-derived structures, five texture families), blended the authors' way "
            f"(*gray*) and with the texture's colours (*colour*) at three texture scales. Classical smoothers: "
            f"parameters chosen on its {held['n_val']} validation images"
            + (f", for each {held['select_per']} on the images of that {held['select_per']}" if held.get("select_per")
               else "") + ". Rows: final weights, mean over seeds; "
            "a shipped file also with `show.py --scale S` (*scale S*), `--self-ensemble` (the 8 rotations and "
            "mirror images averaged) and `--keep-mean` (the result shifted to the input's mean colour, which L0 "
            "and FGS keep by construction), or both"
            + (f", and `--post {held['post']}` (*then {held['post']}*: that classical smoother run on the "
               f"network's result; a pipeline of the network and a classical smoother, not the network alone)"
               if held.get("post") else "") + ". PSNR / SSIM paper / SSIM standard:")
        add("")
        add("| method | " + " | ".join(f"{b} (n={table['input'][b]['n']})" for b in blends) + " |")
        add("|---|" + "---|" * len(blends))
        def held_title(label: str) -> str:
            return (f"CSGIS-Net {title_of[label]}" if label in title_of else
                    "shipped `{}`{}{}".format(*label.partition(",")) if label.partition(",")[0]
                    in (res.get("also_shipped_test") or {}) else
                    label.replace("shipped", f"shipped `{res['shipped']['file']}`", 1) if label.startswith("shipped")
                    else label)

        for label, cells in table.items():
            add(f"| {held_title(label)} | " + " | ".join(
                f"{cells[b]['psnr_paper']:.2f} / {cells[b]['ssim_paper']:.4f} / {cells[b]['ssim_standard']:.4f}"
                if b in cells else "" for b in blends) + " |")
        add("")
        per = held.get("select_per")
        if per:
            add(f"Classical smoothers' settings, chosen for each {per} on the validation images of that {per} "
                f"(`scripts/baselines.py --select-per {per}`): "
                + "; ".join(f"{n.upper()} " + ", ".join(f"{v} {_setting(n, by[v])}" for v in sorted(
                    by, key=lambda v: blends.index(v) if v in blends else len(blends)))
                            for n, by in held["params"].items()) + ".")
            add("")
        edges = {n: ([f"{', '.join(k)} ({v})" for v, k in keys.items()] if per else [", ".join(keys)])
                 for n, keys in (held.get("at_grid_edge") or {}).items()}
        if edges:
            add("Chosen at the edge of its grid (`csgis.filters.PARAM_GRIDS`; a better setting may lie outside "
                "it): " + "; ".join(f"{n.upper()} {', '.join(keys)}" for n, keys in edges.items()) + ".")
            add("")
        by_kind = held.get("by_kind") or {}
        if by_kind:
            groups = sorted((g for g in by_kind["input"] if g not in ("all", "?")),
                            key=lambda g: (g.split(", ")[0] != "gray", g))
            add("### Held-out benchmark by kind of structure")
            add("")
            add("The same test images by blend and kind: *cartoon* structures are flat colours with dark outlines; "
                "*photo* structures are photographs smoothed by the ground-truth smoother of every builder, "
                f"`{held.get('gt_smoother')}`, the smoother of the L0 row at another λ. Rows whose runs were scored "
                "here (a carried-over run has only its per-blend means). PSNR / SSIM paper:")
            add("")
            add("| method | " + " | ".join(f"{g} (n={by_kind['input'][g]['n']})" for g in groups) + " |")
            add("|---|" + "---|" * len(groups))
            for label, cells in by_kind.items():
                add(f"| {held_title(label)} | " + " | ".join(
                    f"{cells[g]['psnr_paper']:.2f} / {cells[g]['ssim_paper']:.4f}" if g in cells else ""
                    for g in groups) + " |")
            add("")
    fit = res["training_split"]
    if fit:
        kinds = [g for g in fit["input"] if "textures" not in g]
        add(f"### On the training split (seed {res['seeds'][0]}, final weights)")
        add("")
        add("| | " + " | ".join(f"{g} (n={fit['input'][g]['n']})" for g in kinds) + " |")
        add("|---|" + "---|" * len(kinds))
        for label, cells in fit.items():
            add(f"| {title_of.get(label, label)} | " + " | ".join(_cell(cells[g]) for g in kinds) + " |")
        add("")
    if res["training_length"]:
        add(f"### Training length (seed {res['seeds'][0]}, test split, paper convention)")
        add("")
        add("*end of run*: the final weights of a run; *inside*: a periodic checkpoint of the longest run. "
            "LR: the learning rate of the last epoch before those weights.")
        add("")
        add("| steps | weights | LR | PSNR | SSIM |")
        add("|---|---|---|---|---|")
        for r in res["training_length"]:
            where = f"end of run `{r['run']}`" if r["final"] else f"inside `{r['run']}` ({r['weights']})"
            add(f"| {r['steps']} | {where} | {r['lr']:.2g} | {r['psnr_paper']:.2f} | {r['ssim_paper']:.4f} |")
        add("")
    add("### Per run")
    add("")
    add("Final weights as above, and `best.pth` (the epoch with the best validation SSIM, paper convention):")
    add("")
    add("| run | steps | PSNR paper | SSIM paper | PSNR standard | SSIM standard | best.pth: epoch, PSNR / SSIM | train time |")
    add("|---|---|---|---|---|---|---|---|")
    for name, r in res["runs"].items():
        t, b = r["test"], r["test_best"]
        best = f"{r['train']['best_epoch']}, {_f(b['psnr_paper']['mean'], 2)} / {_f(b['ssim_paper']['mean'], 4)}" if b else ""
        add(f"| {name} | {r['train']['steps']} | {_f(t['psnr_paper']['mean'], 2)} | {_f(t['ssim_paper']['mean'], 4)} | "
            f"{_f(t['psnr_standard']['mean'], 2)} | {_f(t['ssim_standard']['mean'], 4)} | {best} | "
            f"{_f(r['train']['train_seconds'] / 60, 1)} min |")
    carried = res.get("carried_over") or {}
    if carried:
        unchecked = [n for n in carried["runs"] if not res["runs"][n].get("config_checked")]
        add("")
        add(f"Carried over from `{carried['file']}` (their run folders are not on this machine; numbers as that "
            f"file holds them): {', '.join(carried['runs'])}."
            + (f" The file predates recorded training settings for {', '.join(unchecked)}: those were matched by "
               f"their row's definition (config file, overrides, step scale) only." if unchecked else ""))
    from_files = [f"`{src}`" for src in ((res.get("baselines") or {}).get("carried_from"),
                                         (res.get("heldout") or {}).get("carried_from")) if src]
    if from_files:
        add("")
        add(f"Classical smoothers carried over from {' and '.join(from_files)}: scored by an earlier report on "
            f"the same images (their bytes), with the same grids, code and package versions; their seconds per "
            f"image are that machine's.")
    if res["failed"]:
        add("")
        add(f"Missing (failed, unfinished, or trained with another config than its row gives now): "
            f"{', '.join(res['failed'])}.")
    add("")
    add("## Learning curves")
    add("")
    add("Validation PSNR / SSIM (paper convention, validation crops, so not comparable with the test scores) "
        "from each run's metrics.jsonl:")
    add("")
    runs = res["runs"]
    for length in sorted({r["train"]["steps"] for r in runs.values()}):
        curves = {n: r["train"]["val_curve"] for n, r in runs.items() if r["train"]["steps"] == length}
        axis = sorted({p[0] for c in curves.values() for p in c})
        while len(axis) > 12:  # keep the table readable: every other validation
            axis = axis[1::2]
        if not axis:
            continue
        add("| run | " + " | ".join(f"step {s}" for s in axis) + " |")
        add("|---|" + "---|" * len(axis))
        for n, curve in curves.items():
            at = {p[0]: p for p in curve}
            add(f"| {n} | " + " | ".join(f"{at[s][1]:.2f} / {at[s][2]:.3f}" if s in at else "" for s in axis) + " |")
        add("")
    seg = res["segmenter"]
    if seg:
        add("## Segmentation branch")
        add("")
        classes = seg.get("classes") or []
        per_class = ", ".join(f"{classes[int(k[4:])] if int(k[4:]) < len(classes) else k} {v:.3f}"
                              for k, v in seg.items() if k.startswith("iou_"))
        add(f"`{seg['checkpoint']}` on the {seg['split']} split's GT images, full size: **mIoU {seg['miou']:.4f}**, "
            f"pixel accuracy {seg['pixel_acc']:.4f} (mean over the classes present in label or prediction; "
            f"unlabelled pixels ignored). Per class: {per_class}.")
        add("")
    reg = res.get("regions") or {}
    if reg:
        inter, smooth = reg["interactive"], reg["smoothing"]
        any_method = next(iter(inter["methods"].values()))
        add("## Regions: interactive segmentation and region smoothing")
        add("")
        add(f"Interactive segmentation (`csgis.interactive`; `app.py`) of the {any_method['objects']} labelled objects "
            f"of the test split ({inter['split']}, one texture per structure image) with simulated users: "
            f"{inter['protocol']}. Mean IoU with the object after each click, and the mean number of clicks to "
            f"reach 85 % IoU ({any_method['max_clicks']} when never):")
        add("")
        keys = list(any_method["iou_after"])
        add("| method | " + " | ".join(f"IoU after {k}" for k in keys) + " | clicks to 85 % |")
        add("|---|" + "---|" * (len(keys) + 1))
        for name, m in inter["methods"].items():
            add(f"| {name} | " + " | ".join(f"{m['iou_after'][k]:.3f}" for k in keys) + f" | {m['clicks_to_85']:.2f} |")
        add("")
        add(f"Region smoothing (`show.py --mask`, `app.py`) with `{smooth['checkpoint']}`: in each of "
            f"{smooth['images']} test images, {smooth['region']}, feather {smooth['feather']:g} px. MSE (on 0..255), "
            f"PSNR and SSIM (paper convention) of the pixels inside the region against the GT:")
        add("")
        add("| inside the region | MSE | PSNR | SSIM |")
        add("|---|---|---|---|")
        for name, m in smooth["inside"].items():
            add(f"| {name} | {m['mse']:.1f} | {m['psnr']:.2f} | {m['ssim']:.4f} |")
        add("")
        add(f"Outside the regions and their feather bands: {smooth['changed_outside']} of {smooth['pixels_outside']} "
            f"pixels changed (over every setting).")
        add("")
    if res["grid"]:
        add("## Comparison")
        add("")
        add(f"![comparison grid]({res['grid']['file']})")
        add("")
        add(f"Test images, top to bottom: {', '.join(res['grid']['images'])}. Classical smoothers with their "
            f"validated parameters; `{res['grid']['run']}` is the final weights of that run.")
        add("")
    return "\n".join(lines)


def write_report(path: Path, generated: str) -> None:
    """RESULTS.md = the generated tables, the notes marker, and the notes kept from the file as it was."""
    notes = "\n## Notes\n\n(none yet)\n"
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1]
    write_text(path, generated.rstrip("\n") + "\n\n" + NOTES_MARKER + notes)


def keep_baselines(plan: Plan, out: Path) -> None:
    """Copies of the classical smoothers' caches this report used, in <out>/baselines/, where a later
    --carry-over reads them (a machine without the experiments folder then skips their hour)."""
    for name in BASELINE_CACHES[:2 if plan.heldout else 1]:
        cache = ROOT / plan.experiments / name
        if cache.is_file():
            report = _read_json(cache)
            report.pop("carried_from", None)
            _write_json(out / "baselines" / name, report)


# ----------------------------------------------------------------------------- command line
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_PLAN, help=f"report definition (default {DEFAULT_PLAN})")
    p.add_argument("--ablations", "--rows", dest="rows", nargs="+", default=None,
                   help="only these rows of the definition (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the definition's)")
    p.add_argument("--data", default=None, help="dataset folder (default: the definition's; built when missing)")
    p.add_argument("--experiments", default=None, help="folder of the training runs (default: the definition's)")
    p.add_argument("--out", default=None, help="where RESULTS.md, results.json and results_grid.png go")
    p.add_argument("--workers", type=int, default=2, help="processes for the classical smoothers")
    p.add_argument("--filters", default="", help="comma-separated classical smoothers (default: the definition's)")
    p.add_argument("--grid-rows", type=int, default=None, help="test images in the comparison grid")
    p.add_argument("--shipped", default=None, help="the shipped smoother; the report names the run whose final "
                                                   "weights it is (default: the definition's)")
    p.add_argument("--no-train", action="store_true", help="do not train: report only the runs that have finished")
    p.add_argument("--carry-over", nargs="?", const="", default=None, metavar="RESULTS_JSON",
                   help="report runs that have no folder under --experiments (another machine trained them) with "
                        "the numbers an earlier results.json holds (default: <out>/results.json), when their "
                        "training settings (or, in older files, their row's definition) are unchanged")
    p.add_argument("--retrain-stale", action="store_true",
                   help="retrain runs whose config.yaml differs from what their row asks for now (train.py "
                        "--overwrite: the old run folder is moved to <run>_archived_<time>)")
    return p.parse_args(argv)


def resolve(args) -> Plan:
    """The report definition with the command line's choices applied."""
    plan = load_plan(args.config)
    if args.rows:
        unknown = [r for r in args.rows if r not in [row.name for row in plan.rows]]
        if unknown:
            raise ReportError(f"{args.config} has no row(s) {unknown}; rows: {[r.name for r in plan.rows]}")
        keep = set(args.rows)
        plan.rows = [r for r in plan.rows if r.name in keep]
        plan.verdicts = [n for n in plan.verdicts if n in keep]
        plan.training_length = [n for n in plan.training_length if n in keep]
        plan.train_split = [n for n in plan.train_split if n in keep]
        plan.segmenter = plan.segmenter if plan.segmenter in keep else ""
        if plan.grid.get("run") not in keep:
            plan.grid = {}
    plan.seeds = args.seeds or plan.seeds
    plan.experiments = args.experiments or plan.experiments
    if args.grid_rows is not None:
        plan.grid["rows"] = args.grid_rows
    args.data = args.data or plan.data
    args.out = args.out or plan.out
    if args.carry_over == "":
        args.carry_over = str(Path(args.out) / "results.json")
    args.shipped = plan.shipped if args.shipped is None else args.shipped
    args.filters = [f for f in args.filters.split(",") if f] or plan.filters
    from csgis.filters import FILTERS
    args.filters = args.filters or list(FILTERS)
    unknown = [f for f in args.filters if f not in FILTERS]
    if unknown:
        raise ReportError(f"unknown classical smoother(s) {unknown}; known: {list(FILTERS)}")
    for row in plan.rows:
        load_config(row.path, row.overrides)  # a bad row config fails here, before any training
    return plan


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        plan = resolve(args)
    except (ReportError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not (Path(args.data) / "manifest.csv").is_file():
        command = [sys.executable, "dataset_utils/make_demo_data.py", "--out", args.data]
        print("$ " + " ".join(command), flush=True)
        if subprocess.call(command, cwd=ROOT) != 0:
            print(f"error: could not build the demo dataset in {args.data}", file=sys.stderr)
            return 1
    runs = planned_runs(plan)
    carried = {}
    try:
        if args.carry_over:  # read before anything is written: it may be the file this run rewrites
            carried, problems = carry_over(plan, runs, Path(args.carry_over))
            for line in problems:
                print(f"warning: {line}", file=sys.stderr)
            if carried:
                print(f"carried over from {args.carry_over} (no run folder here, not trained): "
                      f"{', '.join(carried)}", flush=True)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [] if args.no_train else train_runs(plan, [r for r in runs if r.name not in carried], args.retrain_stale)
    try:
        res = collect(plan, args, runs, failed, carried)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    _write_json(out / "results.json", res)
    keep_baselines(plan, out)
    write_report(out / "RESULTS.md", tables(plan, res))
    print(f"wrote {out / 'RESULTS.md'}, {out / 'results.json'}" + (f", {out / res['grid']['file']}" if res["grid"] else ""))
    for name, v in res["verdicts"].items():
        print(f"{name} beats every classical smoother: " + ("yes" if v["beats_all_classical"] else
                                                             "NO: " + "; ".join(v["shortfalls"])))
    return 0 if not res["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
