"""Seeds, RNG capture and the run's counters: what makes a resumed run equal an uninterrupted one.

Reproducibility rule: the training order of epoch e is a function of (seed, e) only (a
ResumableSampler seeded with `seed`, a DataLoader generator reseeded per epoch); augmentation and
the contrastive coin use RNGs whose states the training state carries. With deterministic: true
and num_workers 0, a resumed run equals an uninterrupted one exactly, also when resumed mid-epoch
from a SIGINT/SIGTERM state (the batches already trained are skipped). Under DDP only rank 0's
RNG states are saved; other ranks are reseeded from (seed, rank, step) on resume.
"""
from __future__ import annotations

import math
import os
import random
import signal
from dataclasses import dataclass, field

import numpy as np
import torch

from csgis.checkpoint import TRAINING_STATE_FORMAT as STATE_FORMAT  # noqa: F401  (re-exported; defined once, in csgis.checkpoint)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of a DDP rank's own augmentation stream (rank 0 of a fresh run uses `seed` itself)."""
    return seed + 7919 * rank + step


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed python/numpy from the worker's torch seed; ignore Ctrl-C;
    leave quietly on SIGTERM.

    The worker's torch seed is base_seed + worker_id, base_seed drawn from the loader's
    generator, which the loop reseeds per epoch. Ctrl-C reaches the whole process group: the
    workers ignore it and the main process finishes its step and saves a state. SIGTERM must still
    end a worker, because that is how Python and the DataLoader shut workers down (a worker that
    ignored it would keep the main process waiting forever), but it ends it with exit status 0: a
    worker killed by a signal makes the DataLoader's SIGCHLD handler raise in the main process at
    whatever line it is running, mid-step, so a SIGTERM sent to every process of a job (Slurm's
    scancel, `kill -- -PGID`, a container stop) would abort with a traceback instead of saving a state.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _leave_quietly)


def _leave_quietly(signum, frame) -> None:
    os._exit(0)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the DataLoader generator for one epoch (worker seeds derive from it)."""
    return (seed * 1_000_003 + epoch) % 2**63


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every RNG the run consumes -> a weights_only-loadable dict."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": np_name, "keys": np_keys.tolist(), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    for name, generator in (generators or {}).items():
        state[name] = generator.get_state()
    return state


def restore_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of capture_rng_state."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)
    for name, generator in (generators or {}).items():
        if state.get(name) is not None:
            generator.set_state(state[name])


@dataclass
class Progress:
    """Where a run is: counters, the best validation score, the running sums of this epoch's losses."""
    epoch: int = 0                # epochs finished; the epoch being trained has index `epoch`
    batch_in_epoch: int = 0       # batches of that epoch already trained (mid-epoch resume)
    global_step: int = 0
    best_metric: float = -math.inf
    best_epoch: int | None = None
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0

    def start_epoch(self, epoch: int) -> None:
        """Enter epoch `epoch`; the loss sums carry over only when resuming inside it."""
        resuming_inside = epoch == self.epoch and self.batch_in_epoch > 0
        self.epoch = epoch
        if not resuming_inside:
            self.batch_in_epoch = 0
            self.epoch_sums, self.epoch_count = {}, 0

    def record_step(self, parts: dict[str, float]) -> None:
        self.global_step += 1
        self.batch_in_epoch += 1
        for key, value in parts.items():
            self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + value
        self.epoch_count += 1

    def epoch_means(self) -> dict[str, float]:
        return {key: value / max(1, self.epoch_count) for key, value in self.epoch_sums.items()}

    def finish_epoch(self, metric: float | None) -> bool:
        """Close the epoch; True when `metric` (None: not validated) is a new best."""
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.epoch_sums, self.epoch_count = {}, 0
        if metric is not None and metric > self.best_metric:
            self.best_metric, self.best_epoch = metric, self.epoch
            return True
        return False

    def to_state(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "global_step": self.global_step,
                "best_metric": self.best_metric if self.best_metric > -math.inf else None,
                "best_epoch": self.best_epoch, "epoch_sums": dict(self.epoch_sums),
                "epoch_count": self.epoch_count}

    @classmethod
    def from_state(cls, state: dict) -> "Progress":
        best = state["best_metric"]
        return cls(epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"],
                   global_step=state["global_step"], best_metric=-math.inf if best is None else best,
                   best_epoch=state["best_epoch"], epoch_sums=dict(state.get("epoch_sums", {})),
                   epoch_count=int(state.get("epoch_count", 0)))
