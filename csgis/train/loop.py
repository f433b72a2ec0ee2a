"""`train(cfg)`: set up a run (`Run`), then the loop (`fit`), which is the same for every task.

Resume, interrupts and DDP: SIGINT/SIGTERM finish the current step, save a training state and
raise TrainingInterrupted; `--resume` continues from it exactly (csgis.train.state). Under
torchrun every process runs this loop on its share of the global batch; rank 0 validates, logs
and writes the run folder.
"""
from __future__ import annotations

import signal
import threading
import time
import warnings
from itertools import islice
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from csgis import distributed as ddp
from csgis.config import Config, ConfigError, flatten, from_dict, to_dict
from csgis.device import amp_dtype, configure_determinism, cpu_has_bf16, resolve_device
from csgis.train.ema import WeightAverage
from csgis.train.run_folder import (RunExistsError, RunLock, RunPaths, append_metrics, close_logger, format_values,
                                    make_logger, metrics_for_resume, prepare_run_folder, run_paths, write_config)
from csgis.train.state import (STATE_FORMAT, Progress, capture_rng_state, epoch_seed, rank_seed,
                               restore_rng_state, seed_everything, seed_worker)
from csgis.train.step import NonFiniteLossError, to_device, train_step
from csgis.train.tasks import TASKS, build_task, check_batch_for_batchnorm


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; the current step finished and a training state was saved."""

    def __init__(self, signum: int, state_path: Path | None):
        self.signum = signum
        self.state_path = state_path
        name = signal.Signals(signum).name
        where = f"training state saved to {state_path}" if state_path else "no state saved (not rank 0)"
        super().__init__(f"interrupted by {name}; {where}; continue with --resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopFlag:
    """SIGINT/SIGTERM -> finish the current step, save a state, stop. A second SIGINT aborts."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handler)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


# ----------------------------------------------------------------------------- builders
def build_train_loader(dataset: Dataset, global_batch: int, seed: int, info: ddp.DistInfo,
                       num_workers: int = 0, pin_memory: bool = False
                       ) -> tuple[DataLoader, ddp.ResumableSampler, torch.Generator]:
    """Shuffled training loader with the per-rank share of the GLOBAL batch; drops the last partial batch.

    Returns (loader, sampler, generator): call sampler.set_epoch(e) and
    generator.manual_seed(epoch_seed(seed, e)) before each epoch.
    """
    batch = ddp.per_rank_batch(global_batch, info.world_size)
    if len(dataset) < global_batch:
        raise ValueError(f"the training set has {len(dataset)} samples, fewer than one global batch "
                         f"(train.batch_size={global_batch}); lower the batch size or raise data.repeat")
    sampler = ddp.ResumableSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=seed,
                                   batch_size=batch, shuffle=True, drop_last=True)
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, 0))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=num_workers,
                        worker_init_fn=seed_worker, generator=generator, drop_last=True,
                        pin_memory=pin_memory, persistent_workers=False)
    return loader, sampler, generator


def build_val_loader(dataset: Dataset, num_workers: int = 0) -> DataLoader:
    """One image per batch: validation images may differ in size."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers,
                      worker_init_fn=seed_worker)


def build_optimizer(param_groups, cfg: Config) -> torch.optim.Optimizer:
    """Adam(lr, betas, weight_decay) of train.*; param groups may carry their own lr."""
    return torch.optim.Adam(param_groups, lr=cfg.train.lr, betas=tuple(cfg.train.betas),
                            weight_decay=cfg.train.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config):
    """MultiStepLR over epochs (milestones, gamma of train.*), stepped once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.train.milestones),
                                                gamma=cfg.train.gamma)


# ----------------------------------------------------------------------------- the run
class Run:
    """Everything the loop uses, built in a fixed order (the order is part of a run's seed)."""

    def __init__(self, cfg: Config, paths: RunPaths, state_path: Path | None, info: ddp.DistInfo,
                 device: torch.device, logger, writer, stop: StopFlag):
        from csgis.data import build_dataset, check_dataset

        self.cfg, self.paths, self.info, self.device, self.logger, self.writer, self.stop = \
            cfg, paths, info, device, logger, writer, stop
        check_batch_for_batchnorm(cfg, info.world_size)
        self.autocast_dtype = amp_dtype(cfg.amp, device)
        if cfg.amp != "off" and self.autocast_dtype is None:
            logger.warning(f"amp={cfg.amp} is not available on {device} (fp16 needs CUDA); running in float32")
        if self.autocast_dtype == torch.bfloat16 and device.type == "cpu" and cpu_has_bf16() is False:
            logger.warning("amp=bf16 on a CPU without bfloat16 instructions (avx512_bf16 / amx_bf16) is emulated "
                           "and much slower than float32; amp=off is faster here")
        self.channels_last = cfg.channels_last and device.type == "cuda"
        logger.info(f"run {paths.root} | task {cfg.task} | device {device} | world {info.world_size} | "
                    f"global batch {cfg.train.batch_size} | amp {cfg.amp if self.autocast_dtype else 'off'}")

        # Build everything from the same seed on every rank (random VGG weights, model init).
        seed_everything(cfg.seed)
        train_set = build_dataset(cfg.data, "train", train=True)
        try:
            val_set = build_dataset(cfg.data, "val", train=False)
        except (FileNotFoundError, ValueError) as e:  # a dataset without a validation split
            logger.warning(f"no validation set ({e}); best.pth is not written")
            val_set = None
        val_set = val_set if val_set is not None and len(val_set) else None
        # Every file read later is checked now: a missing or mis-sized file fails the run here, not
        # in the middle of an epoch (or, in a validation file, after a whole epoch of training).
        check_dataset(train_set, f"training split of {cfg.data.root}")
        if val_set is not None:
            check_dataset(val_set, f"validation split of {cfg.data.root}")
        logger.info(f"data {cfg.data.root} ({cfg.data.format}): train {len(train_set)} samples"
                    f"{'' if val_set is None else f', val {len(val_set)} images'}")

        self.task = task = build_task(cfg, device, self.channels_last)
        for note in task.notes:
            logger.info(note)
        task.model.to(device)
        if self.channels_last:
            task.model.to(memory_format=torch.channels_last)
        if info.enabled and cfg.sync_bn:
            if device.type == "cuda":
                task.model = nn.SyncBatchNorm.convert_sync_batchnorm(task.model)
            else:  # torch's SyncBatchNorm has no CPU kernel
                logger.warning("sync_bn needs CUDA; BatchNorm statistics stay per process on CPU")
        # The moving average starts from the weights the run starts with (a resumed run: from the state).
        self.average = WeightAverage(task.model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.optimizer = build_optimizer(task.param_groups(), cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and self.autocast_dtype is not None)
        n_params = sum(p.numel() for p in task.model.parameters())
        logger.info(f"model {type(task.model).__name__}: {n_params:,} parameters"
                    + (" | BatchNorm frozen (train.freeze_bn)" if cfg.train.freeze_bn else "")
                    + (f" | weight average, decay {cfg.train.ema_decay:g} per step (train.ema_decay): "
                       f"validation and models/ use it" if self.average is not None else ""))

        self.progress, self.history = Progress(), []
        if state_path is not None:
            self._restore(state_path)
        elif info.enabled:
            seed_everything(rank_seed(cfg.seed, info.rank))  # different augmentation streams per rank

        self.train_model = ddp.wrap_model(task.model, device, info, sync_bn=False)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.loader, self.sampler, self.loader_generator = build_train_loader(
            train_set, cfg.train.batch_size, cfg.seed, info, cfg.data.num_workers, pin_memory=device.type == "cuda")
        self.val_loader = (build_val_loader(val_set, cfg.data.num_workers)
                           if val_set is not None and info.is_main else None)
        self.steps_per_epoch = min(len(self.loader), cfg.train.max_iters_per_epoch or len(self.loader))
        self.bank = None
        if cfg.data.pipeline == "device":  # the split decoded once onto the device; batches cut there
            from csgis.data.batched import DeviceBank
            if cfg.data.format == "online":
                raise ConfigError("data.pipeline=device needs stored images (data.format manifest or released)")
            started = time.time()
            self.bank = DeviceBank(train_set, device, workers=cfg.data.num_workers)
            logger.info(f"data.pipeline device: {len(self.bank.ids)} training samples on {device} "
                        f"({self.bank.nbytes / 2**20:.0f} MiB), decoded in {time.time() - started:.1f}s")

    # ---- training state
    def state(self) -> dict:
        """The training state: weights, optimizer, scheduler, scaler, counters, RNGs, config."""
        p = self.progress
        return {
            "format": STATE_FORMAT, "task": self.cfg.task, **p.to_state(),
            "model": self.task.model.state_dict(), **self.task.state_dict(),
            "ema": self.average.state_dict() if self.average is not None else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": capture_rng_state(self.task.generators),
            # Order of epoch e = f(seed, e); the loader generator is reseeded from it every epoch.
            "sampler": {"seed": self.cfg.seed, "epoch": p.epoch, "start_batch": p.batch_in_epoch,
                        "loader_seed": epoch_seed(self.cfg.seed, p.epoch)},
            "config": to_dict(self.cfg),
        }

    def save_state(self) -> None:
        from csgis.checkpoint import save_training_state
        save_training_state(self.paths.state, self.state())

    def _restore(self, path: Path) -> None:
        from csgis.checkpoint import load_training_state
        state = load_training_state(path)
        from csgis.checkpoint import CheckpointError
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path}: not a training state of this code (format {state.get('format')!r})")
        trained = flatten(from_dict(state["config"])) if isinstance(state.get("config"), dict) else {}
        trained.setdefault("task", state.get("task"))
        asked = flatten(self.cfg)
        fixed = [k for k in asked if (k == "task" or k.startswith("model.")) and k in trained and trained[k] != asked[k]]
        if fixed:
            raise ConfigError(f"{path}: the run was trained with " + ", ".join(f"{k}={trained[k]}" for k in fixed)
                              + "; --resume cannot change the task or the network (asked for "
                              + ", ".join(f"{k}={asked[k]}" for k in fixed) + ")")
        try:
            self.task.model.load_state_dict(state["model"])
            self.task.load_state_dict(state)
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(f"{path}: its weights do not fit this config's network "
                                  f"({' '.join(str(e).split())[:300]})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_schedule_changes(trained)
        if self.average is not None:
            if state.get("ema") is not None:
                try:
                    self.average.load_state_dict(state["ema"])
                except (RuntimeError, KeyError) as e:
                    raise CheckpointError(f"{path}: its weight average does not fit this config's network "
                                          f"({' '.join(str(e).split())[:300]})") from None
            else:  # the run trained without one so far: it starts here, from the resumed weights
                self.average = WeightAverage(self.task.model, self.cfg.train.ema_decay)
                self.logger.info("train.ema_decay: the training state has no weight average; it starts "
                                 "from the resumed weights")
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = p = Progress.from_state(state)
        if self.info.is_main:
            restore_rng_state(state["rng"], self.task.generators)
            self.history = metrics_for_resume(self.paths, p.epoch, state.get("history"))
        else:  # only rank 0's global RNGs were saved; the task's RNGs are the same on every rank
            seed_everything(rank_seed(self.cfg.seed, self.info.rank, p.global_step))
            for name, generator in self.task.generators.items():
                generator.set_state(state["rng"][name])
        self.logger.info(f"resumed from {path}: epoch {p.epoch}, batch {p.batch_in_epoch}, step "
                         f"{p.global_step}, best {self.task.best_key} {p.best_metric:.4f}")

    def _apply_schedule_changes(self, trained: dict) -> None:
        """A resume that changes train.lr, train.milestones or train.gamma trains on with the new
        values (the restored optimizer and scheduler would otherwise keep the old ones); train.epochs
        is read each epoch. Says which it applied."""
        import bisect
        from collections import Counter
        asked = flatten(self.cfg)
        changed = [k for k in ("train.lr", "train.milestones", "train.gamma") if k in trained and trained[k] != asked[k]]
        if not changed:
            return
        t = self.cfg.train
        if "train.lr" in changed and float(trained["train.lr"]) > 0:
            ratio = float(t.lr) / float(trained["train.lr"])  # groups with their own rate keep their proportion
            self.scheduler.base_lrs = [base * ratio for base in self.scheduler.base_lrs]
        self.scheduler.milestones = Counter(t.milestones)
        self.scheduler.gamma = float(t.gamma)
        passed = bisect.bisect_right(sorted(t.milestones), self.scheduler.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * float(t.gamma) ** passed
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self.logger.info("applied on resume: " + ", ".join(f"{k} {trained[k]} -> {asked[k]}" for k in changed)
                         + f" (learning rate now {self.optimizer.param_groups[0]['lr']:g})")

    @property
    def eval_model(self) -> nn.Module:
        """The weights validated and written to models/: the moving average when there is one."""
        return self.average.model if self.average is not None else self.task.model

    def update_average(self) -> None:
        if self.average is not None:
            self.average.update(self.task.model)

    # ---- pieces of the loop
    def epoch_batches(self, epoch: int):
        """This epoch's batches: order f(seed, epoch); a resumed epoch skips what it trained."""
        self.sampler.set_epoch(epoch)
        self.loader_generator.manual_seed(epoch_seed(self.cfg.seed, epoch))
        remaining = max(0, self.steps_per_epoch - self.progress.batch_in_epoch)
        if self.bank is not None:
            from csgis.data.batched import device_epoch
            batches = device_epoch(self.bank, list(iter(self.sampler)), self.loader.batch_size,
                                   self.progress.batch_in_epoch, self.cfg.data, self.cfg.seed, epoch, self.info.rank)
        else:
            self.sampler.start_batch = self.progress.batch_in_epoch
            batches = self.loader
        # islice stops before fetching (and augmenting) a batch that would not be trained on.
        return tqdm(self._fetch(islice(batches, remaining)), total=remaining, disable=not self.info.is_main,
                    desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}", dynamic_ncols=True,
                    mininterval=1.0, leave=False)

    def _fetch(self, batches):
        """The loader's batches; its failures as one line (a worker's error arrives with the worker's
        traceback in its message), or as an interrupt when a signal also stopped the workers."""
        try:
            yield from batches
        except Exception as error:  # noqa: BLE001 - a signal makes any of them an interrupt
            raise self._loader_failure(error) from None

    def _loader_failure(self, error: Exception) -> Exception:
        """What a failing loader (training or validation) ends the run with: an interrupt when a
        signal also stopped the workers (whatever the error: a worker that leaves while the main
        process is receiving its batch's shared memory raises EOFError or ConnectionResetError there),
        one DatasetError line for a data error (a worker's error carries the worker's traceback in
        its text), else the error itself."""
        from csgis.data import DatasetError
        if self.stop.signum is not None:
            return self.interrupt(self.stop.signum)
        if isinstance(error, EOFError):
            return DatasetError(f"a DataLoader worker left while sending a batch ({type(error).__name__}); "
                                "rerun with data.num_workers=0 to see the error in the main process")
        if not isinstance(error, (OSError, DatasetError, RuntimeError)):
            return error
        if isinstance(error, RuntimeError) and "Original Traceback" not in str(error):
            return error
        return DatasetError(_last_line(error))

    def log_step(self, parts: dict[str, float], lr: float) -> None:
        step = self.progress.global_step
        if self.writer is not None and step % max(1, self.cfg.train.log_every) == 0:
            for key, value in parts.items():
                self.writer.add_scalar(f"train/{key}", value, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.logger.info(f"epoch {self.progress.epoch + 1} step {step} lr {lr:.3g} | {format_values(parts)}")

    def non_finite(self, error: NonFiniteLossError) -> NonFiniteLossError:
        kept = self.paths.latest if self.paths.latest.is_file() else None
        message = (f"{error} in epoch {self.progress.epoch + 1}; stopped without saving these weights; "
                   f"last good checkpoint: {kept if kept else 'none yet'}")
        self.logger.error(message)
        return NonFiniteLossError(message)

    def interrupt(self, signum: int | None) -> TrainingInterrupted:
        """Save a mid-epoch state (rank 0) -> the exception that ends the run."""
        signum = signum if signum is not None else signal.SIGTERM
        saved = None
        if self.info.is_main:
            self.save_state()
            saved = self.paths.state
            p = self.progress
            self.logger.info(f"{signal.Signals(signum).name}: stopped after step {p.global_step} "
                             f"(epoch {p.epoch + 1}, batch {p.batch_in_epoch}); state saved to {saved}")
        ddp.barrier(self.info)
        return TrainingInterrupted(signum, saved)

    def epoch_summary(self, epoch: int, lr: float, started: float) -> dict:
        """This epoch's metrics.jsonl row so far: mean loss terms over all ranks, lr, time."""
        means = ddp.mean_over_ranks(self.progress.epoch_means(), self.info, self.device)
        row = {"epoch": epoch + 1, "step": self.progress.global_step, "lr": lr,
               "seconds": time.time() - started, "train": means}
        self.logger.info(f"epoch {epoch + 1}/{self.cfg.train.epochs} done in {row['seconds']:.1f}s "
                         f"(step {row['step']}) | train {format_values(means)}")
        if self.writer is not None:
            for key, value in means.items():
                self.writer.add_scalar(f"epoch/{key}", value, epoch + 1)
            self.writer.add_scalar("epoch/lr", lr, epoch + 1)
        return row

    def validate(self, epoch: int) -> dict | None:
        """Validation metrics after `epoch` epochs (rank 0, every val_every epochs and the last)."""
        due = epoch % max(1, self.cfg.train.val_every) == 0 or epoch == self.cfg.train.epochs
        if self.val_loader is None or not due:
            return None
        # The epoch's training is saved first (as a state at the end of its last batch): if validation
        # fails, --resume goes straight back to validating this epoch.
        self.save_state()
        try:
            metrics, images, line = self.task.validate(self.eval_model, self.val_loader, self.autocast_dtype)
        except Exception as error:  # noqa: BLE001 - a signal makes any of them an interrupt
            raise self._loader_failure(error) from None
        self.logger.info(f"val epoch {epoch} | {line}")
        if self.writer is not None:
            for name, image in images:
                self.writer.add_image(f"val/{name}", image.clamp(0, 1), epoch)
            for key, value in metrics.items():
                self.writer.add_scalar(f"val/{key}", value, epoch)
        return metrics

    def save(self, row: dict, is_best: bool) -> None:
        """End of an epoch on rank 0: checkpoints, the metrics.jsonl row, then the training state."""
        self.history.append(row)
        if self.info.is_main:
            from csgis.checkpoint import save_checkpoint
            epoch, paths, model = row["epoch"], self.paths, self.eval_model
            common = dict(config=self.cfg, epoch=epoch, iteration=row["step"],
                          metric=row.get("val", {}).get(self.task.best_key))
            save_checkpoint(paths.latest, model, **common)
            if is_best:
                save_checkpoint(paths.best, model, **common)
                self.logger.info(f"new best {self.task.best_key} {self.progress.best_metric:.4f} at epoch "
                                 f"{epoch} -> {paths.best}")
            if epoch % max(1, self.cfg.train.save_every) == 0 or epoch == self.cfg.train.epochs:
                save_checkpoint(paths.epoch_checkpoint(epoch), model, **common)
            self.task.save_checkpoints(paths.models, **common)
            if self.writer is not None:
                self.writer.flush()
            append_metrics(paths.metrics, row)
            self.save_state()
        ddp.barrier(self.info)

    def step_schedule(self) -> None:
        """One MultiStepLR step per epoch. A run resumed at the end of an epoch (after a failed
        validation) makes no optimizer step before it; torch's warning about that does not apply
        to an epoch schedule, so it is silenced."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def summary(self) -> dict:
        p = self.progress
        best = p.best_metric if p.best_epoch else None
        self.logger.info(f"finished: {p.global_step} steps; best {self.task.best_key} "
                         f"{best if best is not None else float('nan'):.4f} (epoch {p.best_epoch})")
        return {"run_dir": str(self.paths.root), "epochs": self.cfg.train.epochs, "global_step": p.global_step,
                "best_metric": best, "best_epoch": p.best_epoch, "best_key": self.task.best_key,
                "history": list(self.history)}


# ----------------------------------------------------------------------------- the loop
def fit(run: Run, stop: StopFlag, step_hook: Callable | None = None) -> dict:
    """Train `run` to its last epoch: steps, then per epoch validation, checkpoints, a metrics row
    and a training state. Raises NonFiniteLossError or TrainingInterrupted."""
    cfg, task, progress = run.cfg, run.task, run.progress
    if progress.epoch >= cfg.train.epochs:
        run.logger.info(f"nothing to do: {progress.epoch} of {cfg.train.epochs} epochs already trained")
    for epoch in range(progress.epoch, cfg.train.epochs):
        progress.start_epoch(epoch)
        batches = run.epoch_batches(epoch)
        task.train_mode()
        lr, started = run.lr, time.time()
        for batch in batches:
            batch = task.prepare(to_device(batch, run.device, run.channels_last))
            try:
                parts = train_step(run.train_model, batch, task.criterion, run.optimizer,
                                   input_key=task.input_key, scaler=run.scaler, autocast_dtype=run.autocast_dtype,
                                   grad_clip=cfg.train.grad_clip, info=run.info, extra_params=task.extra_params,
                                   step=progress.global_step + 1)
            except NonFiniteLossError as e:
                raise run.non_finite(e) from None
            run.update_average()
            progress.record_step(parts)
            batches.set_postfix({k: f"{v:.4f}" for k, v in parts.items()}, refresh=False)
            run.log_step(parts, lr)
            if step_hook is not None:
                step_hook({"epoch": epoch, "step": progress.global_step, "batch_in_epoch": progress.batch_in_epoch,
                           "parts": parts, "model": task.model, "average": run.eval_model, "optimizer": run.optimizer,
                           "request_stop": lambda signum=signal.SIGINT: setattr(stop, "signum", signum)})
            if ddp.any_rank(stop.signum is not None, run.info, run.device):
                batches.close()
                raise run.interrupt(stop.signum)
        batches.close()
        row = run.epoch_summary(epoch, lr, started)
        val = run.validate(epoch + 1)
        if val is not None:
            row["val"] = val
        run.step_schedule()
        is_best = progress.finish_epoch(None if val is None else val[task.best_key])
        run.save(row, is_best)
    return run.summary()


def train(cfg: Config, resume: str | None = None, overwrite: bool = False,
          info: ddp.DistInfo | None = None, step_hook: Callable | None = None) -> dict:
    """Run cfg.task to the end (or to SIGINT/SIGTERM); returns a summary dict.

    resume: None/'' (use cfg.resume), 'auto' (newest state of the run, fresh start if none) or
    the path of a training state. overwrite: move an existing run aside instead of refusing.
    info: DDP placement (default: from torchrun's environment). step_hook(ctx) is called after
    every step with a dict (epoch, step, parts, model, average: the weights validated, which are
    the model's own without train.ema_decay, optimizer, request_stop), for tests and
    experiments. Raises RunExistsError, SegmenterCheckpointError, NonFiniteLossError,
    TrainingInterrupted.
    """
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task '{cfg.task}'")
    resume = resume if resume else (cfg.resume or None)
    info = info or ddp.init_distributed()
    ddp.per_rank_batch(cfg.train.batch_size, info.world_size)  # fail before touching the folder
    try:
        device = resolve_device(cfg.device, info.local_rank if info.enabled else None)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    configure_determinism(cfg.deterministic, device)
    lock = RunLock(run_paths(cfg))
    refused = None
    if info.is_main:
        try:
            lock.acquire()
        except RunExistsError as e:
            refused = e
    if ddp.any_rank(refused is not None, info, device):
        raise refused or RunExistsError(f"{run_paths(cfg).root} is being trained by another process")
    logger, writer, stop = None, None, StopFlag()
    try:
        paths, state_path, archived = prepare_run_folder(cfg, resume, overwrite, info)
        logger = make_logger(paths, info)
        if archived is not None:
            logger.info(f"--overwrite: previous run moved to {archived}")
        if info.is_main:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(log_dir=str(paths.tb))
        stop.install()
        run = Run(cfg, paths, state_path, info, device, logger, writer, stop)
        if info.is_main:  # only once the run is built: a refused resume leaves config.yaml as it was
            write_config(cfg, paths, state_path is not None, logger)
        return fit(run, stop, step_hook)
    finally:
        stop.uninstall()
        if writer is not None:
            writer.close()
        if logger is not None:
            close_logger(logger)
        lock.release()


def _last_line(error: BaseException) -> str:
    """The message of an error raised in a DataLoader worker, without the worker's traceback."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    name, sep, message = last.partition(": ")
    return message if sep and " " not in name else last
