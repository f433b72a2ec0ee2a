"""Saving and loading models and training states; import of the authors' released checkpoints.

Our model checkpoint is a plain dict that `torch.load(path, weights_only=True)` reads:
    {"format": "csgis", "kind": "smoother" | "segmenter", "arch": {...}, "state_dict": {...},
     "config": dict | None, "epoch", "iteration", "metric", ...extra}
Also readable:
- the authors' CSGIS-Net release: {"net": state_dict, "now_epoch": int, "opt": optimizer state},
  module names of defs/networks.py (class HDC_edge_refine), mapped by AUTHORS_TABLE below;
- DeepLabV3Plus-Pytorch (VainF): {"model_state": state_dict, "best_score": numpy float, ...};
- training states written by the engine ({"model": state_dict, "arch": ..., "optimizer": ...}).
Every file is read with weights_only=True; the only extra globals allowed are numpy scalars and
dtypes, which DeepLabV3Plus-Pytorch pickles as its "best_score".
"""
from __future__ import annotations

import dataclasses
import io
import os
import re
import tempfile
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from csgis.io import check_target, new_file_mode
from csgis.models.smoother import Smoother
from csgis.torchfile import (CheckpointError, CheckpointNotFoundError, describe_load_failure,  # noqa: F401
                             read_file)

FORMAT = "csgis"
RESERVED_KEYS = ("format", "kind", "arch", "state_dict", "config", "epoch", "iteration", "metric",
                 "channel_order")

# State-dict key prefixes added by wrappers: DataParallel/DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# ---------------------------------------------------------------------------------------------
# The authors' module names (defs/networks.py: HDC_edge_refine, Descriptor_rHDC, rHDCblock) and ours.
# Columns: authors' module, our module, the arch field it repeats over (k = 0..count-1), or None.
# {k+3}: the Sequential index of the k-th HDC block (after conv, BN, ReLU at 0, 1, 2);
# {C+n} / {R+n}: indices after the coarse / refine blocks (the release has C = 3, R = 6).
# ReLU layers hold no parameters, which is why indices 2, 5, C+5 ... are absent.
AUTHORS_TABLE = (
    ("descriptor.conv_in",   "stem",                    None),
    ("descriptor.res16.{k}", "blocks.{k}",              "descriptor_blocks"),  # HDC block
    ("interpreter1.0",       "edge_head.conv1",         None),
    ("interpreter1.1",       "edge_head.bn1",           None),
    ("interpreter1.3",       "edge_head.conv2",         None),
    ("interpreter1.4",       "edge_head.bn2",           None),
    ("interpreter1.6",       "edge_head.conv_out",      None),
    ("interpreter2.0",       "coarse_head.conv_in",     None),
    ("interpreter2.1",       "coarse_head.bn_in",       None),
    ("interpreter2.{k+3}",   "coarse_head.blocks.{k}",  "coarse_blocks"),      # HDC block
    ("interpreter2.{C+3}",   "coarse_head.conv_mid",    None),
    ("interpreter2.{C+4}",   "coarse_head.bn_mid",      None),
    ("interpreter2.{C+6}",   "coarse_head.conv_out",    None),
    ("refine.0",             "refine_head.conv_in",     None),
    ("refine.1",             "refine_head.bn_in",       None),
    ("refine.{k+3}",         "refine_head.blocks.{k}",  "refine_blocks"),      # HDC block
    ("refine.{R+3}",         "refine_head.conv_out",    None),
)
# Inside one HDC block (authors' rHDCblock -> our HDCBlock).
AUTHORS_HDC_TABLE = (
    ("conv_3x3_1", "conv1"), ("bn_conv_3x3_1", "bn1"),
    ("conv_3x3_2", "conv2"), ("bn_conv_3x3_2", "bn2"),
    ("conv_3x3_3", "conv3"), ("bn_conv_3x3_3", "bn3"),
)
_HDC_ROWS = {"descriptor_blocks", "coarse_blocks", "refine_blocks"}



# --------------------------------------------------------------------------------- key mapping
def _expand(template: str, arch: dict, k: int | None = None) -> str:
    """'interpreter2.{C+3}' -> 'interpreter2.6' for coarse_blocks = 3."""
    values = {"k": k, "C": arch["coarse_blocks"], "R": arch["refine_blocks"]}
    return re.sub(r"\{(\w)(?:\+(\d+))?\}",
                  lambda m: str(values[m.group(1)] + int(m.group(2) or 0)), template)


def authors_module_map(arch: dict) -> dict[str, str]:
    """AUTHORS_TABLE expanded for one architecture: authors' module path -> our module path."""
    mapping = {}
    for theirs, ours, repeat in AUTHORS_TABLE:
        if repeat is None:
            mapping[_expand(theirs, arch)] = _expand(ours, arch)
            continue
        for k in range(arch[repeat]):
            block_theirs, block_ours = _expand(theirs, arch, k), _expand(ours, arch, k)
            for layer_theirs, layer_ours in AUTHORS_HDC_TABLE:
                mapping[f"{block_theirs}.{layer_theirs}"] = f"{block_ours}.{layer_ours}"
    return mapping


def _count_blocks(state_dict: dict, pattern: str, first_index: int = 0) -> int:
    """Number of blocks whose keys match pattern (one group: the index); indices must run on from first_index."""
    found = {int(m.group(1)) for key in state_dict if (m := re.fullmatch(pattern, key))}
    if found and found != set(range(first_index, first_index + len(found))):
        raise ValueError(f"block indices {sorted(found)} do not run on from {first_index} ({pattern})")
    return len(found)


def _width(state_dict: dict, key: str) -> int:
    if key not in state_dict:
        raise ValueError(f"missing key '{key}'")
    return int(state_dict[key].shape[0])


def infer_arch_authors(state_dict: dict) -> dict:
    """Smoother arch (width and block counts) read off a state dict in the authors' layout."""
    width = _width(state_dict, "descriptor.conv_in.weight")
    descriptor = _count_blocks(state_dict, r"descriptor\.res16\.(\d+)\.conv_3x3_1\.weight")
    # Head blocks sit at Sequential indices 3, 4, ... (after conv, BN, ReLU).
    coarse = _count_blocks(state_dict, r"interpreter2\.(\d+)\.conv_3x3_1\.weight", first_index=3)
    refine = _count_blocks(state_dict, r"refine\.(\d+)\.conv_3x3_1\.weight", first_index=3)
    return {"width": width, "descriptor_blocks": descriptor, "coarse_blocks": coarse,
            "refine_blocks": refine}


def infer_arch(state_dict: dict) -> dict:
    """Smoother arch (width and block counts) read off a state dict in our layout."""
    return {"width": _width(state_dict, "stem.weight"),
            "descriptor_blocks": _count_blocks(state_dict, r"blocks\.(\d+)\.conv1\.weight"),
            "coarse_blocks": _count_blocks(state_dict, r"coarse_head\.blocks\.(\d+)\.conv1\.weight"),
            "refine_blocks": _count_blocks(state_dict, r"refine_head\.blocks\.(\d+)\.conv1\.weight")}


def _rename(state_dict: dict, module_map: dict[str, str], direction: str) -> dict:
    out, unknown = {}, []
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")  # leaf: weight, bias, running_mean, ...
        if module not in module_map:
            unknown.append(key)
            continue
        out[f"{module_map[module]}.{leaf}"] = value
    if unknown:
        raise ValueError(f"{len(unknown)} keys have no {direction} mapping, e.g. {unknown[:3]}")
    return out


def authors_to_ours(state_dict: dict) -> dict:
    """Authors' HDC_edge_refine state dict -> our Smoother state dict (same tensors, new keys)."""
    arch = infer_arch_authors(state_dict)
    return _rename(state_dict, authors_module_map(arch), "authors->ours")


def ours_to_authors(state_dict: dict) -> dict:
    """Our Smoother state dict -> the authors' HDC_edge_refine key layout (same tensors)."""
    arch = infer_arch(state_dict)
    inverse = {ours: theirs for theirs, ours in authors_module_map(arch).items()}
    return _rename(state_dict, inverse, "ours->authors")


def strip_wrapper_prefixes(state_dict: dict) -> dict:
    """Remove DataParallel 'module.' and torch.compile '_orig_mod.' prefixes from every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DataParallel/DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


# ------------------------------------------------------------------------------- reading files
def _describe_keys(state_dict: dict) -> str:
    keys = list(state_dict)
    return f"{len(keys)} keys, e.g. {keys[:3]}"


def _pick_state_dict(obj: Any, path: str, names: tuple[str, ...], expected: str) -> dict:
    """The state dict inside a checkpoint dict (first of `names` present) or a bare state dict."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected {expected}")
    for name in names:
        if isinstance(obj.get(name), dict):
            return strip_wrapper_prefixes(obj[name])
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return strip_wrapper_prefixes(obj)
    raise CheckpointError(f"{path}: no state dict found (top-level keys {sorted(map(str, obj))[:8]}), "
                          f"expected {expected}")


def _load_strict(model: nn.Module, state_dict: dict, path: str, what: str) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise CheckpointError(f"{path}: weights do not fit {what}: {detail}") from e


def _to_device(model: nn.Module, map_location: Any) -> nn.Module:
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model


SMOOTHER_EXPECTED = ("a CSGIS-Net smoother checkpoint (csgis format, a training state with 'model', "
                     "or the authors' {'net': ...})")
SEGMENTER_EXPECTED = ("a DeepLabV3+ MobileNetV2 checkpoint (csgis segmenter format or "
                      "DeepLabV3Plus-Pytorch's {'model_state': ...})")


def load_smoother(path: str | os.PathLike, map_location: Any = "cpu") -> Smoother:
    """Smoother in eval mode from our checkpoint, a training state or the authors' release (strict)."""
    path = os.fspath(path)
    obj = read_file(path, map_location, SMOOTHER_EXPECTED)
    if isinstance(obj, dict):
        kind = obj.get("kind")
        if obj.get("format") == FORMAT and kind not in (None, "smoother"):
            raise CheckpointError(f"{path}: is a csgis '{kind}' checkpoint, expected {SMOOTHER_EXPECTED}")
        if "model_state" in obj:
            raise CheckpointError(f"{path}: looks like a DeepLabV3Plus-Pytorch segmenter checkpoint "
                                  f"('model_state'), expected {SMOOTHER_EXPECTED}")
    state_dict = _pick_state_dict(obj, path, ("state_dict", "model", "net"), SMOOTHER_EXPECTED)
    return _smoother_from_weights(state_dict, obj, path, map_location)


def _smoother_from_weights(state_dict: dict, obj: Any, path: str, map_location: Any = "cpu") -> Smoother:
    """Smoother in eval mode from a state dict of ours or the authors' layout; `obj`: the file's
    top-level object (its 'arch' and 'channel_order' entries are checked when it has them)."""
    if "descriptor.conv_in.weight" in state_dict:
        layout, channel_order = "authors", "bgr"  # the release reads images with cv2.imread
        try:
            state_dict = authors_to_ours(state_dict)
        except ValueError as e:
            raise CheckpointError(f"{path}: authors' key layout not recognised ({e}); "
                                  f"expected {SMOOTHER_EXPECTED}") from e
    elif "stem.weight" in state_dict:
        layout = "csgis"
        channel_order = obj.get("channel_order", "rgb") if isinstance(obj, dict) else "rgb"
    else:
        hint = " (it looks like a DeepLabV3+ segmenter)" if any(
            k.startswith(("backbone.", "classifier.")) for k in state_dict) else ""
        raise CheckpointError(f"{path}: state dict has neither 'stem.weight' nor "
                              f"'descriptor.conv_in.weight' ({_describe_keys(state_dict)}){hint}; "
                              f"expected {SMOOTHER_EXPECTED}")
    try:
        arch = infer_arch(state_dict)
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot read the architecture ({e}); expected {SMOOTHER_EXPECTED}") from e
    stated = obj.get("arch") if isinstance(obj, dict) else None
    if layout == "csgis" and isinstance(stated, dict) and {k: stated.get(k) for k in arch} != arch:
        raise CheckpointError(f"{path}: its 'arch' entry {stated} disagrees with its weights {arch}")
    if layout == "csgis" and _stated_input_skip(obj, path):
        arch["input_skip"] = True
    if channel_order not in ("rgb", "bgr"):
        raise CheckpointError(f"{path}: channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    model = Smoother(**arch)
    _load_strict(model, state_dict, path, f"Smoother({arch}) [{layout} layout]")
    model.channel_order = channel_order
    return _to_device(model, map_location).eval()


def _stated_input_skip(obj: Any, path: str) -> bool:
    """model.input_skip of a csgis file: its 'arch' entry (checkpoints) or its config (training
    states); False when neither names it (older files, plain state dicts). The weights cannot tell."""
    if not isinstance(obj, dict):
        return False
    arch, config = obj.get("arch"), obj.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    for source in (arch, model):
        if isinstance(source, dict) and "input_skip" in source:
            value = source["input_skip"]
            if not isinstance(value, bool):
                raise CheckpointError(f"{path}: input_skip must be true or false, got {value!r}")
            return value
    return False


def load_segmenter(path: str | os.PathLike, output_stride: int = 16, map_location: Any = "cpu") -> nn.Module:
    """DeepLabV3+ MobileNetV2 in eval mode from ours or DeepLabV3Plus-Pytorch's checkpoint (strict)."""
    from csgis.models.segmenter import deeplabv3plus_mobilenet

    path = os.fspath(path)
    obj = read_file(path, map_location, SEGMENTER_EXPECTED)
    if isinstance(obj, dict) and obj.get("format") == FORMAT and obj.get("kind") not in (None, "segmenter"):
        raise CheckpointError(f"{path}: is a csgis '{obj.get('kind')}' checkpoint, expected {SEGMENTER_EXPECTED}")
    state_dict = _pick_state_dict(obj, path, ("model_state", "state_dict", "model", "net"), SEGMENTER_EXPECTED)
    classes_key = "classifier.classifier.3.weight"  # last 1x1 conv: (num_classes, 256, 1, 1)
    if classes_key not in state_dict:
        hint = " (it looks like a CSGIS smoother)" if (
            "stem.weight" in state_dict or "descriptor.conv_in.weight" in state_dict) else ""
        raise CheckpointError(f"{path}: state dict has no '{classes_key}' ({_describe_keys(state_dict)})"
                              f"{hint}; expected {SEGMENTER_EXPECTED}")
    num_classes = int(state_dict[classes_key].shape[0])
    model = deeplabv3plus_mobilenet(num_classes=num_classes, output_stride=output_stride)
    _load_strict(model, state_dict, path, f"deeplabv3plus_mobilenet(num_classes={num_classes})")
    return _to_device(model, map_location).eval()


# ------------------------------------------------------------------------------- writing files
def init_smoother(model: Smoother, path: str | os.PathLike) -> None:
    """Copy the weights of the smoother checkpoint at `path` into `model` (model.init: fine-tuning)."""
    source = load_smoother(path)
    if source.arch != model.arch:
        raise CheckpointError(f"{path}: model.init is a {source.arch} smoother, the config builds {model.arch}")
    if source.channel_order != "rgb":
        raise CheckpointError(f"{path}: model.init reads {source.channel_order.upper()} images; training is RGB")
    model.load_state_dict(source.state_dict())


def atomic_torch_save(obj: Any, path: str | os.PathLike, verify: bool = True) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: readers never see half a file.

    verify: first check that torch.load(weights_only=True) reads the object back, so a file we
    write can always be loaded safely (a dataclass or numpy scalar inside would fail here, not later).
    """
    path = os.fspath(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    if verify:
        buffer.seek(0)
        try:
            torch.load(buffer, map_location="cpu", weights_only=True)
        except Exception as e:
            raise TypeError(f"refusing to write {path}: torch.load(weights_only=True) could not read "
                            f"it back ({describe_load_failure(e)}); store plain dicts, lists, numbers, "
                            f"strings and tensors") from e
    path = os.fspath(check_target(path))  # the one write rule (csgis.io): no device, folder or input replaced
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp makes it 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _plain_config(config: Any) -> dict | None:
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return config
    raise TypeError(f"config must be a Config dataclass, a dict or None, got {type(config).__name__}")


def _plain_number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def model_arch(model: nn.Module) -> tuple[str, dict]:
    """('smoother' | 'segmenter', arch dict) of a model (wrappers removed)."""
    model = unwrap_model(model)
    if isinstance(model, Smoother):
        return "smoother", dict(model.arch)
    if hasattr(model, "num_classes") and hasattr(model, "output_stride") and hasattr(model, "backbone"):
        return "segmenter", {"num_classes": int(model.num_classes), "output_stride": int(model.output_stride)}
    raise TypeError(f"save_checkpoint: unsupported model type {type(model).__name__}")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: Any = None, epoch: int | None = None,
                    iteration: int | None = None, metric: float | None = None, extra: dict | None = None) -> None:
    """Write our plain-dict model checkpoint atomically (readable with weights_only=True)."""
    kind, arch = model_arch(model)
    plain = unwrap_model(model)
    checkpoint = {
        "format": FORMAT,
        "kind": kind,
        "arch": arch,
        "state_dict": {k: v.detach().cpu() for k, v in plain.state_dict().items()},
        "config": _plain_config(config),
        "epoch": _plain_number(epoch),
        "iteration": _plain_number(iteration),
        "metric": _plain_number(metric),
    }
    if kind == "smoother":
        checkpoint["channel_order"] = getattr(plain, "channel_order", "rgb")
    for key, value in (extra or {}).items():
        if key in RESERVED_KEYS:
            raise ValueError(f"save_checkpoint: extra key '{key}' is reserved")
        checkpoint[key] = value
    atomic_torch_save(checkpoint, path)


def save_training_state(path: str | os.PathLike, state: dict) -> None:
    """Write a training state dict (model, optimizer, scheduler, counters ...) atomically."""
    if not isinstance(state, dict):
        raise TypeError(f"save_training_state: state must be a dict, got {type(state).__name__}")
    atomic_torch_save(state, path)


def load_training_state(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a training state written by save_training_state (weights_only=True)."""
    path = os.fspath(path)
    expected = "a csgis training state (a dict written by save_training_state)"
    state = read_file(path, map_location, expected)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected {expected}")
    return state


TRAINING_STATE_FORMAT = "csgis-training-state"  # the "format" entry of the states csgis.train writes
STATE_WEIGHTS = {"trained": "model", "average": "ema"}  # which weights of a training state -> its key


def smoother_from_state(path: str | os.PathLike, which: str = "trained") -> tuple[Smoother, dict]:
    """(Smoother in eval mode, the state) from a smoothing run's training state: its trained weights
    ('model') or their moving average ('ema', written when it trained with train.ema_decay)."""
    path = os.fspath(path)
    if which not in STATE_WEIGHTS:
        raise ValueError(f"which must be one of {list(STATE_WEIGHTS)}, got {which!r}")
    state = load_training_state(path)
    if state.get("format") != TRAINING_STATE_FORMAT or state.get("task") != "smoothing":
        raise CheckpointError(f"{path}: not the training state of a smoothing run (format "
                              f"{state.get('format')!r}, task {state.get('task')!r})")
    entry = state.get(STATE_WEIGHTS[which])
    weights = entry.get("weights") if which == "average" and isinstance(entry, dict) else entry
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: holds no moving average of the weights (the run trained without "
                              f"train.ema_decay)" if which == "average" else f"{path}: holds no weights")
    return _smoother_from_weights(weights, state, path), state
