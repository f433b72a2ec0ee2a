"""What a run trains. A task provides its model, criterion, input, validation and best-metric key;
the loop (csgis.train.loop) is the same for every task.

- smoothing (`SmoothingTask`): the CSGIS-Net smoother with CSGISLoss (docs/method.md §3, §5):
  L1, multi-scale SSIM and edge terms, the contrastive term (frozen VGG16 taps, negatives drawn
  by a seeded coin) and the semantic term (a frozen segmenter on the prediction). Validation:
  PSNR/SSIM in both conventions on uint8-quantised predictions; best model by SSIM (paper).
- segmentation (`SegmentationTask`): pre-trains the DeepLabV3+ MobileNetV2 on the dataset's class
  labels, fed the GT structure images (ImageNet-normalised when loss.seg_normalize); cross-entropy
  ignoring IGNORE_INDEX; validation mIoU; best model by mIoU. Its checkpoints have kind
  "segmenter", so `segmenter.checkpoint` of a smoothing run can point at them.

The builders here (`build_vgg`, `build_loss_segmenter`, `build_task`) are also what the benchmark
uses, so it measures exactly what training runs.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from csgis.config import Config, ConfigError


class SegmenterCheckpointError(FileNotFoundError):
    """loss.segmentation > 0 but segmenter.checkpoint does not name an existing file."""


def segmenter_missing_message(path: str, weight: float) -> str:
    where = f"'{path}' does not exist" if path else "is not set"
    if path and not os.path.isabs(path):
        where += f" (relative to the current folder {os.getcwd()}: run from the repository, or give an absolute path)"
    return (f"loss.segmentation={weight} needs a segmentation network, but segmenter.checkpoint {where}. "
            f"Download DeepLabV3Plus-Pytorch's best_deeplabv3plus_mobilenet_voc_os16.pth "
            f"(github.com/VainF/DeepLabV3Plus-Pytorch, 'Pretrained models') and set "
            f"segmenter.checkpoint to it, or train one on your dataset's labels with "
            f"`python train.py --config configs/demo_segmenter.yaml` (task: segmentation), "
            f"or set loss.segmentation=0.")


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every BatchNorm layer of `module` in eval mode (running statistics used and kept,
    affine parameters still trained) -> how many layers."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.eval()
    return len(layers)


def check_batch_for_batchnorm(cfg: Config, world_size: int) -> None:
    """Train-mode BatchNorm in the segmenter needs 2+ samples per process (ConfigError otherwise).

    The segmenter's BN trains when it is the task, or under the release's setting
    (segmenter.eval_mode: false); its ASPP image-pooling branch normalises a 1x1 map.
    """
    trains = cfg.task == "segmentation" or (cfg.loss.segmentation > 0 and not cfg.segmenter.eval_mode)
    if trains and cfg.train.batch_size // world_size < 2:
        raise ConfigError("the segmenter's BatchNorm runs in train mode here (task: segmentation or "
                          "segmenter.eval_mode: false), which needs at least 2 samples per process; "
                          f"train.batch_size={cfg.train.batch_size} over {world_size} process(es) is too small")


def build_vgg(cfg: Config, device: torch.device, channels_last: bool = False) -> nn.Module | None:
    """Frozen VGG16 taps for the contrastive loss (None when it is off)."""
    if not cfg.loss.contrastive:
        return None
    from csgis.losses import vgg_taps
    from csgis.models.vgg import VGGFeatures
    vgg = VGGFeatures(layers=vgg_taps(cfg.loss.contrastive_form), weights=cfg.loss.vgg_weights,
                      normalize=cfg.loss.vgg_normalize)
    vgg.to(device)
    if channels_last:
        vgg.to(memory_format=torch.channels_last)
    return vgg


def build_loss_segmenter(cfg: Config, device: torch.device, channels_last: bool = False) -> nn.Module | None:
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
    if channels_last:
        segmenter.to(memory_format=torch.channels_last)
    segmenter.requires_grad_(cfg.segmenter.train_segmenter)
    segmenter.train(not cfg.segmenter.eval_mode)
    return segmenter


class Task:
    """The protocol the loop relies on. `model` is what is trained and checkpointed."""
    best_key: str          # validation metric that picks best.pth (higher is better)
    input_key: str         # the batch entry the model is fed
    model: nn.Module
    generators: dict[str, torch.Generator]   # RNGs of the task, carried by the training state
    extra_params: list[nn.Parameter]         # trained parameters outside the model (not DDP-wrapped)

    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.device = cfg, device
        self.generators, self.extra_params = {}, []
        self.notes: list[str] = []  # lines for the run's log

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": self.lr}]

    def prepare(self, batch: dict) -> dict:
        """A batch on the device -> the batch the model and criterion read."""
        return batch

    def train_mode(self) -> None:
        self.model.train()
        if self.cfg.train.freeze_bn:
            freeze_batchnorm(self.model)

    def criterion(self, out, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def validate(self, model: nn.Module, loader, autocast_dtype) -> tuple[dict[str, float], list, str]:
        """Score `model` (self.model or its weight average) -> (metrics, tensorboard images
        [(name, image)], one log line)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What the training state needs besides the model (e.g. a segmenter that changes)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def save_checkpoints(self, models_dir: Path, **common) -> None:
        """Checkpoints besides the model's (latest/best/periodic are written by the loop)."""


class SmoothingTask(Task):
    best_key, input_key = "ssim_paper", "input"

    def __init__(self, cfg: Config, device: torch.device, channels_last: bool = False):
        super().__init__(cfg, device)
        from csgis.losses import CSGISLoss
        from csgis.models.smoother import build_smoother
        # The order of construction is part of a run's seed: smoother, segmenter, VGG.
        self.model = build_smoother(cfg.model)
        if cfg.model.init:
            from csgis.checkpoint import init_smoother
            init_smoother(self.model, cfg.model.init)
        self.loss_segmenter = build_loss_segmenter(cfg, device, channels_last)
        self.loss = CSGISLoss(cfg.loss, vgg=build_vgg(cfg, device, channels_last),
                              segmenter=self.loss_segmenter, seed=cfg.seed)
        self.lr = cfg.train.lr
        self.generators = {"loss": self.loss.generator}
        if self.loss_segmenter is not None and cfg.segmenter.train_segmenter:
            self.extra_params = [p for p in self.loss_segmenter.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict]:
        groups = super().param_groups()
        if self.extra_params:
            groups.append({"params": self.extra_params, "lr": self.cfg.segmenter.lr})
        return groups

    def train_mode(self) -> None:
        super().train_mode()
        if self.loss_segmenter is not None:
            self.loss_segmenter.train(not self.cfg.segmenter.eval_mode)

    def criterion(self, out, batch):
        return self.loss(out, batch)

    def validate(self, model, loader, autocast_dtype):
        from csgis.evaluation import smoother_scores
        metrics, images = smoother_scores(model, loader, self.device, autocast_dtype,
                                          self.cfg.train.val_images)
        line = (f"PSNR paper {metrics['psnr_paper']:.3f} SSIM paper {metrics['ssim_paper']:.4f} | PSNR "
                f"standard {metrics['psnr_standard']:.3f} SSIM standard {metrics['ssim_standard']:.4f}")
        return metrics, images, line

    def _segmenter_changes(self) -> bool:
        return self.loss_segmenter is not None and (self.cfg.segmenter.train_segmenter
                                                    or not self.cfg.segmenter.eval_mode)

    def state_dict(self) -> dict:
        return {"loss_segmenter": self.loss_segmenter.state_dict() if self._segmenter_changes() else None}

    def load_state_dict(self, state: dict) -> None:
        if self.loss_segmenter is not None and state.get("loss_segmenter") is not None:
            self.loss_segmenter.load_state_dict(state["loss_segmenter"])

    def save_checkpoints(self, models_dir: Path, **common) -> None:
        if self.extra_params:
            from csgis.checkpoint import save_checkpoint
            save_checkpoint(models_dir / "segmenter_latest.pth", self.loss_segmenter, **common)


class SegmentationTask(Task):
    best_key, input_key = "miou", "seg_input"

    def __init__(self, cfg: Config, device: torch.device, channels_last: bool = False):
        super().__init__(cfg, device)
        from csgis.models.segmenter import deeplabv3plus_mobilenet
        if cfg.segmenter.checkpoint:
            from csgis.checkpoint import load_segmenter
            self.model = load_segmenter(cfg.segmenter.checkpoint, output_stride=cfg.segmenter.output_stride)
            self.notes.append(f"segmenter initialised from {cfg.segmenter.checkpoint}")
        else:
            self.model = deeplabv3plus_mobilenet(cfg.segmenter.num_classes, cfg.segmenter.output_stride)
        self.model.requires_grad_(True)
        self.lr = cfg.segmenter.lr

    def prepare(self, batch: dict) -> dict:
        from csgis.models.segmenter import imagenet_normalize
        gt = batch["gt"]
        batch["seg_input"] = imagenet_normalize(gt) if self.cfg.loss.seg_normalize else gt
        return batch

    def criterion(self, logits, batch):
        from csgis.losses import segmentation_loss
        loss = segmentation_loss(logits, batch["seg"])
        return loss, {"segmentation": loss.detach(), "total": loss.detach()}

    def validate(self, model, loader, autocast_dtype):
        from csgis.evaluation import segmenter_scores
        metrics = segmenter_scores(model, loader, self.device, self.cfg.segmenter.num_classes,
                                   self.cfg.loss.seg_normalize, autocast_dtype)
        per_class = " ".join(f"{k[4:]}:{v:.3f}" for k, v in metrics.items() if k.startswith("iou_"))
        line = f"mIoU {metrics['miou']:.4f} pixel_acc {metrics['pixel_acc']:.4f} | IoU per class {per_class}"
        return metrics, [], line


TASKS = {"smoothing": SmoothingTask, "segmentation": SegmentationTask}


def build_task(cfg: Config, device: torch.device, channels_last: bool = False) -> Task:
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task '{cfg.task}'")
    return TASKS[cfg.task](cfg, device, channels_last)
