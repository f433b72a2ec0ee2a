"""The run folder `<experiments_dir>/<name>/` and what is written into it besides checkpoints.

  config.yaml                  the resolved config (on resume a differing old one is kept beside it)
  train.log                    the log (also on the console, between progress bars)
  metrics.jsonl                one JSON row per finished epoch: epoch, step, lr (of that epoch),
                               seconds (training time of the epoch), train (mean loss terms) and,
                               when validated, val (metrics): what reports read
  tb/                          tensorboard scalars and validation images
  models/{latest,best,epoch_XXXX}.pth      csgis.checkpoint model files
  training_states/latest.state             everything needed to continue exactly (csgis.train.state)

A folder holds a run once it has checkpoints or training states; a second fresh start there is
refused, and --overwrite moves the old run aside (it never deletes). While a process trains a run,
it holds a lock on its name (`<experiments_dir>/.<name>.lock`): a second process on the same name
is refused at once, whatever it asks for.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from csgis import distributed as ddp
from csgis.config import Config, ConfigError, flatten, from_dict, save_config, to_dict
from csgis.io import write_text


class RunExistsError(RuntimeError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path: return self.root / "config.yaml"
    @property
    def log(self) -> Path: return self.root / "train.log"
    @property
    def metrics(self) -> Path: return self.root / "metrics.jsonl"
    @property
    def tb(self) -> Path: return self.root / "tb"
    @property
    def models(self) -> Path: return self.root / "models"
    @property
    def states(self) -> Path: return self.root / "training_states"
    @property
    def latest(self) -> Path: return self.models / "latest.pth"
    @property
    def best(self) -> Path: return self.models / "best.pth"
    @property
    def state(self) -> Path: return self.states / "latest.state"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.models / f"epoch_{epoch:04d}.pth"


class RunLock:
    """An exclusive lock on a run name for the life of one training process.

    flock on `<experiments_dir>/.<name>.lock` (beside the folder, so that archiving the folder does
    not move the lock); the kernel drops it when the process ends however it ends, so a crash
    leaves no stale lock. The file holds the owner's PID for the message. On systems without
    fcntl (Windows) there is no lock.
    """

    def __init__(self, paths: RunPaths):
        self.root = paths.root
        self.path = paths.root.parent / f".{paths.root.name}.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunExistsError(f"{self.root} is being trained by another process "
                                 f"(PID {owner}); wait for it to end, or pick another name=...") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def run_paths(cfg: Config) -> RunPaths:
    return RunPaths(Path(cfg.experiments_dir) / cfg.name)


def holds_run(paths: RunPaths) -> bool:
    """A folder holds a run once it has checkpoints or training states.

    A folder left by an attempt that stopped during set-up (only config.yaml and train.log, e.g. a
    missing weights file) is not a run: the next attempt reuses it, appending to its log.
    """
    return any(d.is_dir() and any(d.iterdir()) for d in (paths.models, paths.states))


def archive_run(paths: RunPaths) -> Path:
    """Move an existing run aside to <name>_archived_<time> (--overwrite never deletes)."""
    stamp = time.strftime("%Y%m%d_%H%M%S")
    target = paths.root.with_name(f"{paths.root.name}_archived_{stamp}")
    n = 1
    while target.exists():
        target = paths.root.with_name(f"{paths.root.name}_archived_{stamp}_{n}")
        n += 1
    shutil.move(str(paths.root), str(target))
    return target


def resolve_resume(resume: str | None, paths: RunPaths) -> Path | None:
    """'' -> None; 'auto' -> the run's latest state if any; a path -> that file (must exist)."""
    if not resume:
        return None
    if resume == "auto":
        return paths.state if paths.state.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume: training state {path} does not exist")
    return path


def prepare_run_folder(cfg: Config, resume: str | None, overwrite: bool, info: ddp.DistInfo
                       ) -> tuple[RunPaths, Path | None, Path | None]:
    """Check/create the run folder; returns (paths, state to resume from or None, archived folder)."""
    paths = run_paths(cfg)
    state_path = resolve_resume(resume, paths)
    archived = None
    if state_path is None and holds_run(paths):
        if resume == "auto" and not paths.state.is_file() and not overwrite:
            raise RunExistsError(f"{paths.root} holds a run but no training state "
                                 f"({paths.state} is missing); use --overwrite to move it aside "
                                 f"and start again, or another name=...")
        if not overwrite:
            raise RunExistsError(f"{paths.root} already holds a run; continue it with --resume, "
                                 f"or start afresh with --overwrite (the old run is moved to "
                                 f"{paths.root.name}_archived_<time>), or pick another name=...")
        if info.is_main:
            archived = archive_run(paths)
    ddp.barrier(info)
    if info.is_main:
        for folder in (paths.root, paths.models, paths.states, paths.tb):
            folder.mkdir(parents=True, exist_ok=True)
    ddp.barrier(info)
    return paths, state_path, archived


def write_config(cfg: Config, paths: RunPaths, resuming: bool, logger: logging.Logger) -> None:
    """config.yaml = the resolved config; on resume a differing old one is kept beside it."""
    if resuming and paths.config.is_file():
        import yaml
        with open(paths.config, encoding="utf-8") as f:
            old = yaml.safe_load(f) or {}
        if {**old, "resume": ""} != {**to_dict(cfg), "resume": ""}:  # how it was resumed changes nothing
            try:
                old_flat = flatten(from_dict(old))
                changed = [k for k, v in flatten(cfg).items() if old_flat.get(k) != v]
            except ConfigError:
                changed = ["<unreadable>"]
            keep = paths.root / f"config.before_resume_{time.strftime('%Y%m%d_%H%M%S')}.yaml"
            os.replace(paths.config, keep)
            logger.info(f"config changed on resume ({', '.join(changed)}); previous kept as {keep.name}")
    save_config(cfg, paths.config)


# ----------------------------------------------------------------------------- metrics.jsonl
def _read_metrics(path: Path) -> tuple[list[dict], bool]:
    """(rows, whether a torn last row was dropped): a crash while appending leaves half a row at the
    end, which is dropped with a warning; a bad row anywhere else is a ValueError naming its line."""
    if not path.is_file():
        return [], False
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number - 1 == last:
                print(f"warning: {path}:{number}: the last row is torn (a crash while it was written); dropped",
                      file=sys.stderr)
                return rows, True
            raise ValueError(f"{path}:{number}: not a JSON row ({e.msg})") from None
    return rows, False


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl ([] when the file does not exist); a torn last row is dropped."""
    return _read_metrics(Path(path))[0]


def write_metrics(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write metrics.jsonl anew (atomically), one row per line."""
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def append_metrics(path: str | os.PathLike, row: dict) -> None:
    """Append one epoch's row (flushed to disk before the training state that follows it)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def metrics_for_resume(paths: RunPaths, epochs_done: int, state_history: list[dict] | None) -> list[dict]:
    """The rows of the epochs a resumed run has finished, with the file made to hold exactly those.

    Rows past the state (written just before a crash that lost the state) are dropped, since
    those epochs are trained again. A run from before metrics.jsonl existed carries its rows in
    the state's 'history': they are written out here.
    """
    on_disk, torn = _read_metrics(Path(paths.metrics))
    kept = [row for row in (on_disk or state_history or []) if row["epoch"] <= epochs_done]
    if kept != on_disk or torn:
        write_metrics(paths.metrics, kept)
    return kept


# ----------------------------------------------------------------------------- logging
class _TqdmHandler(logging.Handler):
    """Console handler that does not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # logging must never kill a run
            self.handleError(record)


def make_logger(paths: RunPaths | None, info: ddp.DistInfo) -> logging.Logger:
    """A per-run logger: train.log and the console on rank 0; silent elsewhere."""
    logger = logging.getLogger(f"csgis.run.{id(paths)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if info.is_main and paths is not None:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        file_handler = logging.FileHandler(paths.log, mode="a", encoding="utf-8")
        file_handler.setFormatter(fmt)
        console = _TqdmHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(file_handler)
        logger.addHandler(console)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def format_values(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in values.items())
