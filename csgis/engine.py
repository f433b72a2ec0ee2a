"""The training loop: one flat function per task, plus the step, validation, AMP and DDP glue.

`train(cfg)` runs `cfg.task`:
- smoothing: the CSGIS-Net smoother with CSGISLoss (SPEC 3, 5); validation PSNR/SSIM in both
  conventions on uint8-quantised predictions, best model by SSIM (paper convention);
- segmentation: the DeepLabV3+ MobileNetV2 on the dataset's class labels, fed the GT structure
  images (what it sees at smoothing time are smoothed predictions, which resemble the GT, not
  the textured inputs), ImageNet-normalised when loss.seg_normalize; cross-entropy ignoring 255,
  validation mIoU from a confusion matrix, best model by mIoU. Its checkpoints have kind
  "segmenter", so `segmenter.checkpoint` of a smoothing run can point at them.

Run folder `experiments/<name>/`: config.yaml (resolved), train.log, tb/ (tensorboard),
models/{latest,best,epoch_XXXX}.pth (csgis.checkpoint format), training_states/latest.state
(everything needed to continue bit-exactly: weights, optimizer, scheduler, GradScaler, counters,
best score, all RNG states, the sampler position, the config).

Reproducibility rule: the training order of epoch e is a function of (seed, e) only (a
DistributedSampler seeded with `seed`, a DataLoader generator reseeded per epoch), augmentation
and the contrastive coin use RNGs whose states are saved. With deterministic: true and
num_workers 0 a resumed run equals an uninterrupted one exactly (also when resumed mid-epoch
from a SIGINT/SIGTERM state, which skips the batches already trained). Under DDP only rank 0's
RNG states are saved; other ranks are reseeded from (seed, rank, step) on resume.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from csgis import distributed as ddp
from csgis.config import Config, ConfigError, save_config, to_dict

SEG_IGNORE_INDEX = 255
STATE_FORMAT = "csgis-training-state"


# ----------------------------------------------------------------------------- errors
class RunExistsError(RuntimeError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


class SegmenterCheckpointError(FileNotFoundError):
    """loss.segmentation > 0 but segmenter.checkpoint does not name an existing file."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped without saving the bad weights."""


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


# ----------------------------------------------------------------------------- set-up helpers
def select_device(name: str, info: ddp.DistInfo | None = None) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> device; under DDP each rank takes cuda:LOCAL_RANK."""
    info = info or ddp.DistInfo()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' requested but CUDA is not available (use device=cpu)")
        if info.enabled or device.index is None:
            device = torch.device("cuda", info.local_rank if info.enabled else 0)
        torch.cuda.set_device(device)
    return device


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """deterministic: deterministic kernels (warn where none exists) and no cuDNN autotuning."""
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible GEMMs; read when CUDA initialises.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a few CUDA backward kernels (bilinear up-sampling in the segmenter) have no
        # deterministic version; failing the paper config for them helps nobody.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: autotuning pays off


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed python/numpy from the worker's torch seed; ignore signals.

    The worker's torch seed is base_seed + worker_id, base_seed drawn from the loader's
    generator, which the engine reseeds per epoch. Signals are left to the main process, which
    finishes its step and saves a state (a dying worker would abort the loader instead).
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the DataLoader generator for one epoch (worker seeds derive from it)."""
    return (seed * 1_000_003 + epoch) % 2**63


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """'off' | 'bf16' | 'fp16' -> autocast dtype of the network's forward pass, or None (float32).

    bf16 runs on CUDA and on CPU (docs/BENCHMARKS.md: 1.45x a float32 training step on a CPU
    with AVX-512 BF16); fp16 needs CUDA (its GradScaler and kernels), elsewhere None.
    """
    if amp == "off" or (amp == "fp16" and device.type != "cuda") or device.type not in ("cuda", "cpu"):
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """Move every tensor of a batch to `device` (4-D float tensors channels_last when asked)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def _float_outputs(out):
    """Cast model outputs (tensor or dataclass of tensors) to float32 for the loss."""
    if isinstance(out, torch.Tensor):
        return out.float()
    if dataclasses.is_dataclass(out):
        return dataclasses.replace(out, **{f.name: getattr(out, f.name).float()
                                           for f in dataclasses.fields(out)
                                           if isinstance(getattr(out, f.name), torch.Tensor)})
    return out


# ----------------------------------------------------------------------------- run folder
@dataclasses.dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path: return self.root / "config.yaml"
    @property
    def log(self) -> Path: return self.root / "train.log"
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


# ----------------------------------------------------------------------------- RNG state
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


# ----------------------------------------------------------------------------- building blocks
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


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every BatchNorm layer of `module` in eval mode (running statistics used and kept,
    affine parameters still trained) -> how many layers."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.eval()
    return len(layers)


def build_optimizer(param_groups, cfg: Config) -> torch.optim.Optimizer:
    """Adam(lr, betas, weight_decay) of train.*; param groups may carry their own lr."""
    return torch.optim.Adam(param_groups, lr=cfg.train.lr, betas=tuple(cfg.train.betas),
                            weight_decay=cfg.train.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config):
    """MultiStepLR over epochs (milestones, gamma of train.*), stepped once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.train.milestones),
                                                gamma=cfg.train.gamma)


def segmenter_missing_message(path: str, weight: float) -> str:
    where = f"'{path}' does not exist" if path else "is not set"
    return (f"loss.segmentation={weight} needs a segmentation network, but segmenter.checkpoint {where}. "
            f"Download DeepLabV3Plus-Pytorch's best_deeplabv3plus_mobilenet_voc_os16.pth "
            f"(github.com/VainF/DeepLabV3Plus-Pytorch, 'Pretrained models') and set "
            f"segmenter.checkpoint to it, or train one on your dataset's labels with "
            f"`python train.py --config configs/demo_segmenter.yaml` (task: segmentation), "
            f"or set loss.segmentation=0.")


def build_loss_segmenter(cfg: Config, device: torch.device) -> nn.Module | None:
    """The segmentation branch of the smoothing loss, or None when loss.segmentation is 0.

    Frozen (requires_grad False) unless segmenter.train_segmenter; eval mode unless
    segmenter.eval_mode is false (the release: BN layers in train mode, params still frozen).
    """
    if not cfg.loss.segmentation:
        return None
    path = cfg.segmenter.checkpoint
    if not path or not os.path.isfile(path):
        raise SegmenterCheckpointError(segmenter_missing_message(path, cfg.loss.segmentation))
    from csgis.checkpoint import load_segmenter
    segmenter = load_segmenter(path, output_stride=cfg.segmenter.output_stride, map_location="cpu")
    segmenter.to(device)
    if cfg.channels_last:
        segmenter.to(memory_format=torch.channels_last)
    segmenter.requires_grad_(cfg.segmenter.train_segmenter)
    segmenter.train(not cfg.segmenter.eval_mode)
    return segmenter


def build_vgg(cfg: Config, device: torch.device) -> nn.Module | None:
    """Frozen VGG16 taps for the contrastive loss (None when it is off)."""
    if not cfg.loss.contrastive:
        return None
    from csgis.models.vgg import VGGFeatures
    layers = ("relu1_2", "relu2_2") if cfg.loss.contrastive_form == "triplet" else \
        ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    vgg = VGGFeatures(layers=layers, weights=cfg.loss.vgg_weights, normalize=cfg.loss.vgg_normalize)
    return vgg.to(device)


# ----------------------------------------------------------------------------- one step
def train_step(model: nn.Module, batch: dict, criterion: Callable, optimizer: torch.optim.Optimizer, *,
               input_key: str = "input", scaler: torch.amp.GradScaler | None = None,
               autocast_dtype: torch.dtype | None = None, grad_clip: float = 0.0,
               info: ddp.DistInfo | None = None, extra_params=(), step: int = 0) -> dict[str, float]:
    """One optimisation step on a batch already on the model's device; returns the loss parts as floats.

    model(batch[input_key]) runs under autocast when autocast_dtype is set; criterion(out, batch)
    -> (total, parts) runs in float32. Under DDP (model wrapped by ddp.wrap_model) backward
    averages gradients over ranks; `extra_params` (trainable modules outside the wrapper) are
    averaged by hand. A non-finite total on any rank raises NonFiniteLossError on every rank
    before backward, so no bad update is applied.
    """
    info = info or ddp.DistInfo()
    device = batch[input_key].device
    optimizer.zero_grad(set_to_none=True)
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else nullcontext())
    with autocast:
        out = model(batch[input_key])
    total, parts = criterion(_float_outputs(out), batch)
    if ddp.any_rank(not bool(torch.isfinite(total)), info, device):
        shown = ", ".join(f"{k}={float(v):.6g}" for k, v in parts.items())
        raise NonFiniteLossError(f"non-finite loss at step {step} ({shown})")
    if scaler is not None and scaler.is_enabled():
        scaler.scale(total).backward()
        ddp.all_reduce_grads(extra_params, info)
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        ddp.all_reduce_grads(extra_params, info)
        if grad_clip > 0:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        optimizer.step()
    return {k: float(v) for k, v in parts.items()}


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate_smoother(model: nn.Module, loader: DataLoader, device: torch.device,
                      autocast_dtype: torch.dtype | None = None, num_images: int = 0
                      ) -> tuple[dict[str, float], list[tuple[str, torch.Tensor]]]:
    """Mean PSNR/SSIM (paper and standard conventions) of uint8-quantised predictions.

    Returns (metrics, images): images are up to num_images (id, (3,H,3W) input|prediction|gt in [0,1]).
    """
    from csgis.metrics import batch_metrics
    was_training = model.training
    model.eval()
    rows, images = [], []
    for batch in loader:
        x = batch["input"].to(device)
        with (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()):
            out = model(x)
        prediction = out.prediction.float().clamp(0, 1).cpu()
        rows.extend(batch_metrics(prediction, batch["gt"]))
        for i in range(prediction.shape[0]):
            if len(images) < num_images:
                images.append((str(batch["id"][i]), torch.cat((batch["input"][i], prediction[i], batch["gt"][i]), dim=2)))
    model.train(was_training)
    if not rows:
        return {}, images
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}, images


def confusion_matrix(prediction: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = label, columns = prediction; 255 ignored."""
    valid = (label != SEG_IGNORE_INDEX) & (label >= 0) & (label < num_classes)
    index = label[valid].long() * num_classes + prediction[valid].long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy, mean IoU over classes present in label or prediction, and per-class IoU."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = tp / union  # NaN for classes absent from both: left out of the mean
    scores = {"pixel_acc": float(tp.sum() / confusion.sum().clamp(min=1)),
              "miou": float(np.nanmean(iou.numpy())) if bool((union > 0).any()) else 0.0}
    for c in range(len(iou)):
        if union[c] > 0:
            scores[f"iou_{c:02d}"] = float(iou[c])
    return scores


@torch.no_grad()
def validate_segmenter(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int,
                       normalize: bool = True, autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """mIoU / pixel accuracy / per-class IoU of the segmenter on the GT images of `loader`."""
    from csgis.models.segmenter import imagenet_normalize
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for batch in loader:
        x = batch["gt"].to(device)
        if normalize:
            x = imagenet_normalize(x)
        with (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()):
            logits = model(x)
        confusion += confusion_matrix(logits.argmax(1).cpu(), batch["seg"], num_classes)
    model.train(was_training)
    return segmentation_scores(confusion)


# ----------------------------------------------------------------------------- logging
class _TqdmHandler(logging.Handler):
    """Console handler that does not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # logging must never kill a run
            self.handleError(record)


def _make_logger(paths: RunPaths | None, info: ddp.DistInfo) -> logging.Logger:
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


def _close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in values.items())


class _StopFlag:
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


# ----------------------------------------------------------------------------- the run
def _prepare_run_folder(cfg: Config, resume: str | None, overwrite: bool, info: ddp.DistInfo
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


def _write_config(cfg: Config, paths: RunPaths, resuming: bool, logger: logging.Logger) -> None:
    """config.yaml = the resolved config; on resume a differing old one is kept beside it."""
    if resuming and paths.config.is_file():
        import yaml
        with open(paths.config, encoding="utf-8") as f:
            old = yaml.safe_load(f) or {}
        if old != to_dict(cfg):
            from csgis.config import flatten, from_dict
            try:
                old_flat = flatten(from_dict(old))
                changed = [k for k, v in flatten(cfg).items() if old_flat.get(k) != v]
            except ConfigError:
                changed = ["<unreadable>"]
            keep = paths.root / f"config.before_resume_{time.strftime('%Y%m%d_%H%M%S')}.yaml"
            os.replace(paths.config, keep)
            logger.info(f"config changed on resume ({', '.join(changed)}); previous kept as {keep.name}")
    save_config(cfg, paths.config)


def train(cfg: Config, resume: str | None = None, overwrite: bool = False,
          info: ddp.DistInfo | None = None, step_hook: Callable | None = None) -> dict:
    """Run cfg.task to the end (or to SIGINT/SIGTERM); returns a summary dict.

    resume: None/'' (use cfg.resume), 'auto' (newest state of the run, fresh start if none) or
    the path of a training state. overwrite: move an existing run aside instead of refusing.
    info: DDP placement (default: from torchrun's environment). step_hook(ctx) is called after
    every step with a dict (epoch, step, parts, model, optimizer, request_stop) — for tests and
    experiments. Raises RunExistsError, SegmenterCheckpointError, NonFiniteLossError,
    TrainingInterrupted.
    """
    if cfg.task not in ("smoothing", "segmentation"):
        raise ConfigError(f"unknown task '{cfg.task}'")
    resume = resume if resume else (cfg.resume or None)
    info = info or ddp.init_distributed()
    ddp.per_rank_batch(cfg.train.batch_size, info.world_size)  # fail before touching the folder
    device = select_device(cfg.device, info)
    configure_determinism(cfg.deterministic, device)
    paths, state_path, archived = _prepare_run_folder(cfg, resume, overwrite, info)
    logger = _make_logger(paths, info)
    writer = None
    stop = _StopFlag()
    try:
        if archived is not None:
            logger.info(f"--overwrite: previous run moved to {archived}")
        if info.is_main:
            _write_config(cfg, paths, state_path is not None, logger)
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(log_dir=str(paths.tb))
        stop.install()
        return _run(cfg, paths, state_path, info, device, logger, writer, stop, step_hook)
    finally:
        stop.uninstall()
        if writer is not None:
            writer.close()
        _close_logger(logger)


def _run(cfg: Config, paths: RunPaths, state_path: Path | None, info: ddp.DistInfo,
         device: torch.device, logger: logging.Logger, writer, stop: _StopFlag,
         step_hook: Callable | None) -> dict:
    from csgis.checkpoint import load_training_state, save_checkpoint, save_training_state
    from csgis.data import build_dataset

    segmentation_task = cfg.task == "segmentation"
    segmenter_bn_trains = segmentation_task or (cfg.loss.segmentation > 0 and not cfg.segmenter.eval_mode)
    if segmenter_bn_trains and cfg.train.batch_size // info.world_size < 2:
        # The ASPP image-pooling branch normalises a 1x1 map: train-mode BN needs 2+ samples.
        raise ConfigError("the segmenter's BatchNorm runs in train mode here (task: segmentation or "
                          "segmenter.eval_mode: false), which needs at least 2 samples per process; "
                          f"train.batch_size={cfg.train.batch_size} over {info.world_size} process(es) is too small")
    autocast_dtype = amp_dtype(cfg.amp, device)
    if cfg.amp != "off" and autocast_dtype is None:
        logger.warning(f"amp={cfg.amp} is not available on {device} (fp16 needs CUDA); running in float32")
    channels_last = cfg.channels_last and device.type == "cuda"
    logger.info(f"run {paths.root} | task {cfg.task} | device {device} | world {info.world_size} | "
                f"global batch {cfg.train.batch_size} | amp {cfg.amp if autocast_dtype else 'off'}")

    # Build everything from the same seed on every rank (random VGG weights, model init).
    seed_everything(cfg.seed)
    train_set = build_dataset(cfg.data, "train", train=True)
    try:
        val_set = build_dataset(cfg.data, "val", train=False)
    except (FileNotFoundError, ValueError) as e:  # a dataset without a validation split
        logger.warning(f"no validation set ({e}); best.pth is not written")
        val_set = None
    if val_set is not None and len(val_set) == 0:
        val_set = None
    logger.info(f"data {cfg.data.root} ({cfg.data.format}): train {len(train_set)} samples"
                f"{'' if val_set is None else f', val {len(val_set)} images'}")

    # ---- model, loss, optimizer
    loss_segmenter = None
    if segmentation_task:
        from csgis.losses import segmentation_loss
        from csgis.models.segmenter import deeplabv3plus_mobilenet, imagenet_normalize
        if cfg.segmenter.checkpoint:
            from csgis.checkpoint import load_segmenter
            model = load_segmenter(cfg.segmenter.checkpoint, output_stride=cfg.segmenter.output_stride)
            logger.info(f"segmenter initialised from {cfg.segmenter.checkpoint}")
        else:
            model = deeplabv3plus_mobilenet(cfg.segmenter.num_classes, cfg.segmenter.output_stride)
        model.requires_grad_(True)
        lr = cfg.segmenter.lr
        best_key = "miou"
        input_key = "seg_input"

        def criterion(logits, batch):
            loss = segmentation_loss(logits, batch["seg"])
            return loss, {"segmentation": loss.detach(), "total": loss.detach()}
        generators: dict[str, torch.Generator] = {}
    else:
        from csgis.losses import CSGISLoss
        from csgis.models.smoother import build_smoother
        model = build_smoother(cfg.model)
        loss_segmenter = build_loss_segmenter(cfg, device)
        vgg = build_vgg(cfg, device)
        criterion = CSGISLoss(cfg.loss, vgg=vgg, segmenter=loss_segmenter, seed=cfg.seed)
        lr = cfg.train.lr
        best_key = "ssim_paper"
        input_key = "input"
        generators = {"loss": criterion.generator}
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if info.enabled and cfg.sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # torch's SyncBatchNorm has no CPU kernel
            logger.warning("sync_bn needs CUDA; BatchNorm statistics stay per process on CPU")
    param_groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    extra_params: list[nn.Parameter] = []
    if loss_segmenter is not None and cfg.segmenter.train_segmenter:
        extra_params = [p for p in loss_segmenter.parameters() if p.requires_grad]
        param_groups.append({"params": extra_params, "lr": cfg.segmenter.lr})
    optimizer = build_optimizer(param_groups, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and autocast_dtype is not None)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(f"model {type(model).__name__}: {n_params:,} parameters"
                + (" | BatchNorm frozen (train.freeze_bn)" if cfg.train.freeze_bn else ""))

    # ---- resume
    start_epoch, start_batch, global_step = 0, 0, 0
    best_metric, best_epoch = -math.inf, None
    history: list[dict] = []
    epoch_sums: dict[str, float] = {}
    epoch_count = 0
    if state_path is not None:
        state = load_training_state(state_path)
        if state.get("format") != STATE_FORMAT or state.get("task") != cfg.task:
            raise ValueError(f"{state_path}: not a {cfg.task} training state of this code "
                             f"(format {state.get('format')!r}, task {state.get('task')!r})")
        model.load_state_dict(state["model"])
        if loss_segmenter is not None and state.get("loss_segmenter") is not None:
            loss_segmenter.load_state_dict(state["loss_segmenter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, start_batch = state["epoch"], state["batch_in_epoch"]
        global_step = state["global_step"]
        best_metric = state["best_metric"] if state["best_metric"] is not None else -math.inf
        best_epoch = state["best_epoch"]
        history = list(state.get("history", []))
        epoch_sums = dict(state.get("epoch_sums", {}))
        epoch_count = int(state.get("epoch_count", 0))
        if info.is_main:
            restore_rng_state(state["rng"], generators)
        else:
            # Only rank 0's global RNGs were saved; the loss coin is the same on every rank.
            seed_everything(cfg.seed + 7919 * info.rank + global_step)
            for name, generator in generators.items():
                generator.set_state(state["rng"][name])
        logger.info(f"resumed from {state_path}: epoch {start_epoch}, batch {start_batch}, "
                    f"step {global_step}, best {best_key} {best_metric:.4f}")
    elif info.enabled:
        seed_everything(cfg.seed + 7919 * info.rank)  # different augmentation streams per rank

    train_model = ddp.wrap_model(model, device, info, sync_bn=False)
    if cfg.compile:
        train_model = torch.compile(train_model)

    loader, sampler, loader_generator = build_train_loader(
        train_set, cfg.train.batch_size, cfg.seed, info, cfg.data.num_workers,
        pin_memory=device.type == "cuda")
    val_loader = build_val_loader(val_set, cfg.data.num_workers) if val_set is not None and info.is_main else None
    steps_per_epoch = len(loader) if not cfg.train.max_iters_per_epoch else min(len(loader), cfg.train.max_iters_per_epoch)

    def make_state(epoch: int, batch_in_epoch: int) -> dict:
        return {
            "format": STATE_FORMAT, "task": cfg.task,
            "epoch": epoch, "batch_in_epoch": batch_in_epoch, "global_step": global_step,
            "model": model.state_dict(),
            "loss_segmenter": (loss_segmenter.state_dict() if loss_segmenter is not None and
                               (cfg.segmenter.train_segmenter or not cfg.segmenter.eval_mode) else None),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "best_metric": best_metric if best_metric > -math.inf else None, "best_epoch": best_epoch,
            "rng": capture_rng_state(generators),
            # Order of epoch e = f(seed, e); the loader generator is reseeded from it every epoch.
            "sampler": {"seed": cfg.seed, "epoch": epoch, "start_batch": batch_in_epoch,
                        "loader_seed": epoch_seed(cfg.seed, epoch)},
            "history": history, "epoch_sums": dict(epoch_sums), "epoch_count": epoch_count,
            "config": to_dict(cfg),
        }

    def prepare(batch: dict) -> dict:
        batch = to_device(batch, device, channels_last)
        if segmentation_task:
            gt = batch["gt"]
            batch["seg_input"] = imagenet_normalize(gt) if cfg.loss.seg_normalize else gt
        return batch

    def set_modes() -> None:
        model.train()
        if cfg.train.freeze_bn:
            freeze_batchnorm(model)
        if loss_segmenter is not None:
            loss_segmenter.train(not cfg.segmenter.eval_mode)

    if start_epoch >= cfg.train.epochs:
        logger.info(f"nothing to do: {start_epoch} of {cfg.train.epochs} epochs already trained")
    for epoch in range(start_epoch, cfg.train.epochs):
        sampler.set_epoch(epoch)
        loader_generator.manual_seed(epoch_seed(cfg.seed, epoch))
        batch_in_epoch = 0
        if epoch == start_epoch and start_batch:
            sampler.start_batch = start_batch
            batch_in_epoch = start_batch
        else:
            epoch_sums, epoch_count = {}, 0
        set_modes()
        lr_now = optimizer.param_groups[0]["lr"]
        remaining = max(0, steps_per_epoch - batch_in_epoch)
        # islice stops before fetching (and augmenting) a batch that would not be trained on.
        bar = tqdm(islice(loader, remaining), total=remaining, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not info.is_main, dynamic_ncols=True, mininterval=1.0, leave=False)
        t0 = time.time()
        for batch in bar:
            batch = prepare(batch)
            try:
                parts = train_step(train_model, batch, criterion, optimizer, input_key=input_key, scaler=scaler,
                                   autocast_dtype=autocast_dtype, grad_clip=cfg.train.grad_clip, info=info,
                                   extra_params=extra_params, step=global_step + 1)
            except NonFiniteLossError as e:
                kept = paths.latest if paths.latest.is_file() else None
                msg = (f"{e} in epoch {epoch + 1}; stopped without saving these weights; "
                       f"last good checkpoint: {kept if kept else 'none yet'}")
                logger.error(msg)
                raise NonFiniteLossError(msg) from None
            global_step += 1
            batch_in_epoch += 1
            for k, v in parts.items():
                epoch_sums[k] = epoch_sums.get(k, 0.0) + v
            epoch_count += 1
            bar.set_postfix({k: f"{v:.4f}" for k, v in parts.items()}, refresh=False)
            if writer is not None and global_step % max(1, cfg.train.log_every) == 0:
                for k, v in parts.items():
                    writer.add_scalar(f"train/{k}", v, global_step)
                writer.add_scalar("train/lr", lr_now, global_step)
                logger.info(f"epoch {epoch + 1} step {global_step} lr {lr_now:.3g} | {_fmt(parts)}")
            if step_hook is not None:
                step_hook({"epoch": epoch, "step": global_step, "batch_in_epoch": batch_in_epoch,
                           "parts": parts, "model": model, "optimizer": optimizer,
                           "request_stop": lambda signum=signal.SIGINT: setattr(stop, "signum", signum)})
            if ddp.any_rank(stop.signum is not None, info, device):
                signum = stop.signum if stop.signum is not None else signal.SIGTERM
                saved = None
                if info.is_main:
                    save_training_state(paths.state, make_state(epoch, batch_in_epoch))
                    saved = paths.state
                    logger.info(f"{signal.Signals(signum).name}: stopped after step {global_step} "
                                f"(epoch {epoch + 1}, batch {batch_in_epoch}); state saved to {saved}")
                ddp.barrier(info)
                bar.close()
                raise TrainingInterrupted(signum, saved)
        bar.close()
        scheduler.step()

        # ---- end of epoch: summary, validation, checkpoints, state
        summary = ddp.mean_over_ranks({k: v / max(1, epoch_count) for k, v in epoch_sums.items()}, info, device)
        record = {"epoch": epoch + 1, "step": global_step, "lr": lr_now, "seconds": time.time() - t0,
                  "train": summary}
        logger.info(f"epoch {epoch + 1}/{cfg.train.epochs} done in {record['seconds']:.1f}s "
                    f"(step {global_step}) | train {_fmt(summary)}")
        last_epoch = epoch + 1 == cfg.train.epochs
        is_best = False
        if info.is_main:
            if writer is not None:
                for k, v in summary.items():
                    writer.add_scalar(f"epoch/{k}", v, epoch + 1)
                writer.add_scalar("epoch/lr", lr_now, epoch + 1)
            if val_loader is not None and ((epoch + 1) % max(1, cfg.train.val_every) == 0 or last_epoch):
                if segmentation_task:
                    metrics = validate_segmenter(model, val_loader, device, cfg.segmenter.num_classes,
                                                 cfg.loss.seg_normalize, autocast_dtype)
                    per_class = " ".join(f"{k[4:]}:{v:.3f}" for k, v in metrics.items() if k.startswith("iou_"))
                    logger.info(f"val epoch {epoch + 1} | mIoU {metrics['miou']:.4f} pixel_acc "
                                f"{metrics['pixel_acc']:.4f} | IoU per class {per_class}")
                else:
                    metrics, images = validate_smoother(model, val_loader, device, autocast_dtype,
                                                        cfg.train.val_images)
                    logger.info(f"val epoch {epoch + 1} | PSNR paper {metrics['psnr_paper']:.3f} "
                                f"SSIM paper {metrics['ssim_paper']:.4f} | PSNR standard "
                                f"{metrics['psnr_standard']:.3f} SSIM standard {metrics['ssim_standard']:.4f}")
                    if writer is not None:
                        for name, image in images:
                            writer.add_image(f"val/{name}", image.clamp(0, 1), epoch + 1)
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(f"val/{k}", v, epoch + 1)
                record["val"] = metrics
                if metrics[best_key] > best_metric:
                    best_metric, best_epoch, is_best = metrics[best_key], epoch + 1, True
            history.append(record)
            common = dict(config=cfg, epoch=epoch + 1, iteration=global_step)
            metric = record.get("val", {}).get(best_key)
            save_checkpoint(paths.latest, model, metric=metric, **common)
            if is_best:
                save_checkpoint(paths.best, model, metric=metric, **common)
                logger.info(f"new best {best_key} {best_metric:.4f} at epoch {epoch + 1} -> {paths.best}")
            if (epoch + 1) % max(1, cfg.train.save_every) == 0 or last_epoch:
                save_checkpoint(paths.epoch_checkpoint(epoch + 1), model, metric=metric, **common)
            if loss_segmenter is not None and cfg.segmenter.train_segmenter:
                save_checkpoint(paths.models / "segmenter_latest.pth", loss_segmenter, **common)
            if writer is not None:
                writer.flush()
        else:
            history.append(record)
        epoch_sums, epoch_count = {}, 0
        if info.is_main:
            save_training_state(paths.state, make_state(epoch + 1, 0))
        ddp.barrier(info)

    logger.info(f"finished: {global_step} steps; best {best_key} "
                f"{best_metric if best_epoch else float('nan'):.4f} (epoch {best_epoch})")
    return {"run_dir": str(paths.root), "epochs": cfg.train.epochs, "global_step": global_step,
            "best_metric": best_metric if best_epoch else None, "best_epoch": best_epoch,
            "best_key": best_key, "history": history}
