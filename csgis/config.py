"""Typed experiment configuration: YAML file -> dataclasses, with dotted CLI overrides.

Every key has exactly one default, here. `load_config("configs/x.yaml", ["train.lr=5e-4"])`
returns a `Config`; unknown keys (in the file or in an override) raise `ConfigError` naming the
key. The table of keys in docs/CONFIG.md is checked against `flatten(Config())` by the tests.

A config file may start from another one: `base: paper.yaml` (a path relative to the file's own
folder) loads that file first, then applies this file's keys on top (mappings merge key by key,
every other value replaces). So an ablation states only what differs from the paper setting.
The resolved config (what a run saves as config.yaml) has no `base` key.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


@dataclass
class ModelConfig:
    """Smoothing network (docs/method.md §1)."""
    width: int = 64                # channels of every hidden layer
    descriptor_blocks: int = 12    # HDC blocks in the shared descriptor (release test script: 20)
    coarse_blocks: int = 3         # HDC blocks in the coarse head
    refine_blocks: int = 6         # HDC blocks in the refine head
    # Same parameters and checkpoint keys; the flag is stored in a checkpoint's 'arch' entry.
    input_skip: bool = False       # coarse = input + coarse head (residual learning): not the paper's network; paper: false
    # Fine-tuning: the optimizer and schedule start afresh; resume continues a run instead.
    init: str = ""                 # a smoother checkpoint whose weights start the run (same architecture)


@dataclass
class SegmenterConfig:
    """DeepLabV3+ MobileNetV2 segmentation branch (docs/method.md §2)."""
    checkpoint: str = ""           # DeepLabV3Plus-Pytorch file or ours; required when loss.segmentation > 0
    output_stride: int = 16        # 16 as trained by its authors; the release builds it at 8
    num_classes: int = 21          # VOC: 20 classes + background
    eval_mode: bool = True         # frozen BN statistics; the release never calls eval()
    train_segmenter: bool = False  # fine-tune it together with the smoother
    lr: float = 1e-4               # learning rate of the segmenter when fine-tuned or pre-trained


@dataclass
class LossConfig:
    """Loss weights and switches (docs/method.md §3). A weight of 0 switches the term off."""
    l1: float = 1.0                # L1(coarse, gt) + L1(prediction, gt)
    ssim: float = 0.1              # multi-scale SSIM loss weight
    ssim_scales: int = 4           # 2x2 max-pooled scales of the SSIM loss
    edge: float = 0.001            # class-balanced BCE on edge logits, summed
    dtv: float = 0.0               # gradient prior; computed but unused in the release
    dtv_coarse: float = 10.0       # factor of the coarse stage inside the DTV term
    contrastive: float = 1.0       # lambda_c
    contrastive_form: str = "triplet"   # triplet | ratio
    margin_pixel: float = 0.3      # k1: gray-L1 hinge margin
    margin_vgg: float = 0.04       # k2: VGG Gram hinge margin
    gram_normalize: bool = False   # divide Gram distances by |G(gt)|^2 (not the paper: a substitute for a random VGG16)
    negatives: str = "coin"        # coin (release) | per_sample | both | over | input
    vgg_weights: str = "imagenet"  # imagenet | random (tests only) | path to a VGG16 state dict
    vgg_normalize: bool = False    # ImageNet-normalise VGG inputs (the release does not)
    segmentation: float = 1.0      # lambda_s
    seg_input: str = "prediction"  # prediction (intended) | input (release: zero gradient)
    seg_normalize: bool = True     # ImageNet-normalise segmenter inputs (the release does not)


@dataclass
class DataConfig:
    """Datasets (docs/method.md §4-5)."""
    root: str = "data/demo"        # dataset folder (manifest.csv) or the authors' released layout
    format: str = "manifest"       # manifest | released | online
    train_split: str = "train"     # split names of the manifest
    val_split: str = "val"
    test_split: str = "test"
    textures: str = ""             # online mode: folder of texture images
    # Online mode, how each drawn texture is laid over its GT (docs/CONFIG.md). With texture_std 0
    # the texture keeps its own contrast and is tiled as the authors do (gray, plain tiling,
    # amplitude only); with texture_std > 0 it is resized by a factor drawn from `blend_scale`,
    # tiled mirrored, brought to texture_std gray levels and laid in colour with probability
    # blend_colour (csgis.data.blend.blend_layer).
    blend_amplitude: list[float] = field(default_factory=lambda: [0.75, 1.25])  # online: amplitude range of the texture layer
    blend_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])        # online: texture resize range, drawn log-uniformly (needs blend_texture_std)
    blend_colour: float = 0.0      # online: probability of the colour blend, else the authors' gray one (needs blend_texture_std)
    blend_gray_gt: float = 0.0     # online: probability that a training GT (and its over-smoothed image) is made gray before blending
    blend_soft_gt: float = 0.0     # online: probability that a training GT (and its over-smoothed image) is blurred before blending
    blend_soft_sigma: list[float] = field(default_factory=lambda: [1.0, 3.0])  # online: that blur's Gaussian sigma range in pixels
    online_eval: str = "seeded"    # online: val/test inputs: seeded (one fixed draw per GT) | stored (the manifest's own inputs)
    blend_texture_std: float = 0.0 # online: the layer's std in gray levels before amplitude; 0: the authors' blend, texture as stored
    released_n_gt: int = 150       # released layout: number of GT images (index = name % n_gt)
    patch_size: int = 128          # random training crop
    val_crop: int = 0              # 0: validate on full images; >0: deterministic centre crop
    hflip: float = 0.5             # probability
    rotate: float = 45.0           # max absolute rotation in degrees
    brightness: list[float] = field(default_factory=lambda: [0.3, 1.7])  # jitter factor range
    contrast: list[float] = field(default_factory=lambda: [0.3, 1.7])  # jitter factor range
    hue: float = 0.3               # hue shift range [-hue, hue]
    repeat: int = 1                # passes over the training set per epoch (small datasets)
    num_workers: int = 2           # DataLoader workers per process (device pipeline: decoding workers)
    pipeline: str = "workers"      # workers (augment per sample in DataLoader workers) | device (batched, on the training device)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (docs/method.md §5)."""
    epochs: int = 150              # the released checkpoint is from epoch 218
    batch_size: int = 8            # global batch (split across DDP ranks)
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam
    weight_decay: float = 0.0      # Adam weight decay
    milestones: list[int] = field(default_factory=lambda: [40, 80, 120, 150, 190])  # MultiStepLR epochs
    gamma: float = 0.5             # MultiStepLR factor
    grad_clip: float = 0.0         # 0: off
    val_every: int = 1             # epochs
    save_every: int = 10           # epochs; periodic checkpoints
    log_every: int = 20            # iterations
    val_images: int = 4            # validation images written to tensorboard
    max_iters_per_epoch: int = 0   # 0: whole epoch
    # true: the smoother's BatchNorm layers stay in eval mode while training, keeping their
    # initial running statistics (mean 0, variance 1), so each acts as a learned per-channel
    # affine layer (FrozenBatchNorm). Same parameters and checkpoints; for short runs, where
    # train-mode BN (batch 8) hides every batch's mean colour from the heads and the published
    # network needs tens of thousands of steps to reproduce absolute colour. false = the paper.
    freeze_bn: bool = False        # BatchNorm in eval mode while training (see above); paper: false
    # > 0: validation and the checkpoints in models/ use a moving average of the weights, updated
    # after every step (csgis/train/ema.py; BasicSR's ema_decay); the training state keeps both.
    ema_decay: float = 0.0         # weight average: decay per step (e.g. 0.999); 0: off; paper: off


@dataclass
class Config:
    name: str = "csgis"            # run folder name: <experiments_dir>/<name>
    task: str = "smoothing"        # smoothing | segmentation (pre-train the segmenter on data labels)
    seed: int = 0                  # seeds python, numpy, torch and the data loader
    deterministic: bool = False    # deterministic algorithms (bit-exact resume on CPU)
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    amp: str = "off"               # off | bf16 (CUDA or CPU) | fp16 (CUDA only)
    channels_last: bool = False
    sync_bn: bool = False          # SyncBatchNorm under DDP
    compile: bool = False          # torch.compile the smoother
    resume: str = ""               # "" | auto | path to a training state
    experiments_dir: str = "experiments"  # parent folder of run folders
    model: ModelConfig = field(default_factory=ModelConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CHOICES = {
    "task": ("smoothing", "segmentation"),
    "amp": ("off", "bf16", "fp16"),
    "loss.contrastive_form": ("triplet", "ratio"),
    "loss.negatives": ("coin", "per_sample", "both", "over", "input"),
    "loss.seg_input": ("prediction", "input"),
    "data.format": ("manifest", "released", "online"),
    "data.pipeline": ("workers", "device"),
    "data.online_eval": ("seeded", "stored"),
    "segmenter.output_stride": (8, 16),
}


def _at_least(low):
    return lambda v: v >= low, f">= {low}"


def _above(low):
    return lambda v: v > low, f"> {low}"


def _within(low, high):
    return lambda v: low <= v <= high, f"in [{low}, {high}]"


def _pair(check, what):
    return (lambda v: len(v) == 2 and all(check(x) for x in v) and v[0] <= v[1],
            f"two numbers {what}, the first not above the second")


# Values that type-check but mean nothing (a width of 0, a negative learning rate ...): key ->
# (test, what is allowed). Each fails at config time with one line naming the key.
RULES = {
    "model.width": _at_least(1), "model.descriptor_blocks": _at_least(0), "model.coarse_blocks": _at_least(0),
    "model.refine_blocks": _at_least(0),
    "segmenter.num_classes": _at_least(1), "segmenter.lr": _above(0),
    **{f"loss.{k}": _at_least(0) for k in ("l1", "ssim", "edge", "dtv", "dtv_coarse", "contrastive",
                                           "margin_pixel", "margin_vgg", "segmentation")},
    "loss.ssim_scales": _at_least(1),
    "data.released_n_gt": _at_least(1), "data.patch_size": _at_least(16), "data.val_crop": _at_least(0),
    "data.hflip": _within(0, 1), "data.rotate": _within(0, 180), "data.hue": _within(0, 0.5),
    "data.brightness": _pair(lambda x: x > 0, "above 0"), "data.contrast": _pair(lambda x: x > 0, "above 0"),
    "data.blend_amplitude": _pair(lambda x: x >= 0, "at least 0"), "data.blend_scale": _pair(lambda x: x > 0, "above 0"),
    "data.blend_colour": _within(0, 1), "data.blend_texture_std": _at_least(0),
    "data.blend_gray_gt": _within(0, 1), "data.blend_soft_gt": _within(0, 1),
    "data.blend_soft_sigma": _pair(lambda x: x > 0, "above 0"),
    "data.repeat": _at_least(1), "data.num_workers": _at_least(0),
    "train.epochs": _at_least(0), "train.batch_size": _at_least(1), "train.lr": _above(0),
    "train.betas": (lambda v: len(v) == 2 and all(0 <= x < 1 for x in v), "two numbers in [0, 1)"),
    "train.weight_decay": _at_least(0),
    "train.milestones": (lambda v: all(m >= 1 for m in v) and v == sorted(v), "epochs >= 1 in increasing order"),
    "train.gamma": _above(0), "train.grad_clip": _at_least(0), "train.val_every": _at_least(1),
    "train.save_every": _at_least(1), "train.log_every": _at_least(1), "train.val_images": _at_least(0),
    "train.max_iters_per_epoch": _at_least(0),
    "train.ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
}
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


class _Override(str):
    """An override's text as typed, with its YAML reading: a str key keeps the text (name=007 stays
    '007'), every other key takes the parsed value."""

    def __new__(cls, text: str, parsed: Any):
        obj = super().__new__(cls, text)
        obj.parsed = parsed
        return obj


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping names one key twice."""


class _ConfigLoader(yaml.SafeLoader):
    """YAML for config files: a plain scalar value that YAML reads as a number or a boolean keeps its
    text beside that reading (an _Override), so a str key keeps what the file says (name: 0123 is
    '0123', not the octal 83; name: yes is 'yes')."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:  # YAML keeps the last of two equal keys; a config must not lose the first
            key = self.construct_object(key_node, deep=deep)
            if key in lines:
                raise DuplicateKeyError(f"key '{key}' appears twice in one mapping (lines {lines[key]} and "
                                        f"{key_node.start_mark.line + 1})")
            lines[key] = key_node.start_mark.line + 1
        mapping = super().construct_mapping(node, deep=deep)
        for key_node, value_node in node.value:
            if isinstance(value_node, yaml.ScalarNode) and value_node.style is None:
                key = self.construct_object(key_node, deep=deep)
                value = mapping.get(key)
                if isinstance(value, (bool, int, float)):
                    mapping[key] = _Override(value_node.value, value)
        return mapping


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the declared field type, or raise naming the key."""
    if isinstance(value, _Override):
        if typ is str and isinstance(value.parsed, (dict, list)):
            raise ConfigError(f"config key '{key}': expected a single value, got {type(value.parsed).__name__} "
                              f"{str(value)!r}")
        if typ is int and re.fullmatch(r"[-+]?[0-9]+", value.strip()):
            value = int(value, 10)  # what was written: YAML 1.1 reads 012 as the octal 10
        else:
            value = str(value) if typ is str else value.parsed
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
    if typ is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"config key '{key}': expected a single value, got {type(value).__name__} {value!r}")
        return "" if value is None else str(value)
    if typ is list or get_origin(typ) is list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"config key '{key}': expected a list, got {value!r}") from None
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        item = (get_args(typ) or (None,))[0]
        return [_coerce(v, item, f"{key}[{i}]") if item else v for i, v in enumerate(value)]
    return value


def _apply(obj: Any, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = prefix + key
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value or {}, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _validate(cfg: Config) -> None:
    flat = flatten(cfg)
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(f"config key '{key}': {flat[key]!r} is not one of {list(allowed)}")
    for key, (test, allowed) in RULES.items():
        if not test(flat[key]):
            raise ConfigError(f"config key '{key}': {flat[key]!r} is not allowed (must be {allowed})")
    if not re.fullmatch(DEVICE_PATTERN, cfg.device):
        raise ConfigError(f"config key 'device': {cfg.device!r} is not a device (auto, cpu, cuda or cuda:N)")
    data = cfg.data
    if data.format == "online" and data.pipeline == "device":
        raise ConfigError("config keys 'data.format' and 'data.pipeline': online blending makes a new input per "
                          "item, which the device pipeline's decoded-once bank cannot; use data.pipeline=workers")
    if data.blend_texture_std <= 0 and (list(data.blend_scale) != [1.0, 1.0] or data.blend_colour > 0):
        raise ConfigError("config key 'data.blend_texture_std': data.blend_scale other than [1, 1] and "
                          "data.blend_colour > 0 need a layer contrast above 0 (e.g. 25)")
    if not cfg.name or cfg.name in (".", "..") or re.search(r"[/\\]", cfg.name) or cfg.name.startswith("."):
        raise ConfigError(f"config key 'name': {cfg.name!r} is not a folder name (it names "
                          f"<experiments_dir>/<name>: no '/', not empty, not starting with '.')")


def parse_overrides(overrides: list[str] | None) -> dict:
    """['train.lr=5e-4', 'name=x'] -> nested dict of the values (YAML-read, the text kept for str keys)."""
    nested: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. train.lr=5e-4)")
        key, raw = item.split("=", 1)
        try:
            parsed = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise ConfigError(f"override '{item}': the value is not valid YAML (quote it, or write a list "
                              f"as [1, 2])") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override")
        node[parts[-1]] = _Override(raw, parsed)
    return nested


def from_dict(data: dict | None, overrides: list[str] | None = None) -> Config:
    cfg = Config()
    _apply(cfg, data or {})
    _apply(cfg, parse_overrides(overrides))
    _validate(cfg)
    return cfg


BASE_KEY = "base"


def _merge(base: dict, over: dict) -> dict:
    """`over` applied on top of `base`: nested mappings merge key by key, other values replace. An
    empty or null section (`train:` with its keys commented out, `model: ~`) keeps the base's section."""
    out = dict(base)
    for key, value in over.items():
        if value is None and isinstance(out.get(key), dict):
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | os.PathLike, _chain: tuple[str, ...] = ()) -> dict:
    """The raw mapping of a YAML config file with its `base:` chain resolved (no defaults applied)."""
    path = os.path.abspath(path)
    if path in _chain:
        cycle = " -> ".join(os.path.relpath(p) for p in (*_chain, path))
        raise ConfigError(f"config files include each other through '{BASE_KEY}': {cycle}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.load(f, Loader=_ConfigLoader) or {}
    except FileNotFoundError:
        where = f" (the '{BASE_KEY}' of {os.path.relpath(_chain[-1])})" if _chain else ""
        raise ConfigError(f"config file not found: {os.path.relpath(path)}{where}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {os.path.relpath(path)} is not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {os.path.relpath(path)} cannot be read "
                          f"({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {os.path.relpath(path)} must hold a mapping at the top level")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{os.path.relpath(path)}: '{BASE_KEY}' must name a config file, got {base!r}")
    parent = read_config_file(os.path.join(os.path.dirname(path), base), (*_chain, path))
    return _merge(parent, data)


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (its `base:` chain first; only defaults when path is None), apply dotted overrides."""
    data = read_config_file(path) if path is not None else {}
    try:
        return from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def flatten(cfg: Any, prefix: str = "") -> dict:
    """Config -> {'train.lr': 0.001, ...} (leaf keys only)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, prefix + f.name + "."))
        else:
            out[prefix + f.name] = value
    return out
