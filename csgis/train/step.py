"""One optimisation step: forward under autocast, the loss in float32, backward, update.

The same function serves both tasks, one process or DDP, float32, bf16 or fp16 (GradScaler).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from csgis import distributed as ddp
from csgis.device import autocast


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped without saving the bad weights."""


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


def float_outputs(out):
    """Model outputs (a tensor or a dataclass of tensors) cast to float32 for the loss."""
    if isinstance(out, torch.Tensor):
        return out.float()
    if dataclasses.is_dataclass(out):
        return dataclasses.replace(out, **{f.name: getattr(out, f.name).float()
                                           for f in dataclasses.fields(out)
                                           if isinstance(getattr(out, f.name), torch.Tensor)})
    return out


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
    with autocast(device, autocast_dtype):
        out = model(batch[input_key])
    total, parts = criterion(float_outputs(out), batch)
    if ddp.any_rank(not bool(torch.isfinite(total)), info, device):
        shown = ", ".join(f"{k}={float(v):.6g}" for k, v in parts.items())
        raise NonFiniteLossError(f"non-finite loss at step {step} ({shown})")
    scaled = scaler is not None and scaler.is_enabled()
    (scaler.scale(total) if scaled else total).backward()
    ddp.all_reduce_grads(extra_params, info)
    if grad_clip > 0:
        if scaled:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    if scaled:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return {k: float(v) for k, v in parts.items()}
