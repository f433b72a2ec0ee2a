"""DistributedDataParallel glue: process-group set-up, model wrapping, samplers and reductions.

One process per device, launched by `torchrun` (env:// rendezvous) or, in tests, by
`torch.multiprocessing.spawn` with a `file://` init method. Without a process group every helper
degrades to the single-process behaviour, so the engine calls them unconditionally.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import islice

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler


@dataclass
class DistInfo:
    """Where this process sits in the job: rank 0 logs and writes checkpoints."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None, init_method: str = "env://",
                     rank: int | None = None, world_size: int | None = None) -> DistInfo:
    """Join the process group named by torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK) or the args.

    Returns DistInfo(rank 0, world 1) and initialises nothing when the world has one process.
    Backend: nccl when CUDA is available, gloo otherwise (CPU, tests).
    """
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world_size <= 1:
        return DistInfo(0, 1, 0)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method=init_method,
                                rank=rank, world_size=world_size)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def cleanup() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Split the config's GLOBAL batch evenly over ranks; raise ValueError if it does not divide."""
    if global_batch < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {global_batch}")
    if global_batch % world_size != 0:
        raise ValueError(f"train.batch_size={global_batch} (the global batch) is not divisible by "
                         f"the number of processes ({world_size}); choose a multiple of {world_size}")
    return global_batch // world_size


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo, sync_bn: bool = False) -> nn.Module:
    """Return the module to train: `model` itself (one process) or a DDP wrapper around it.

    sync_bn converts BatchNorm layers to SyncBatchNorm in place first (statistics over the global
    batch); the converted model is what the wrapper holds, so always save
    `csgis.checkpoint.unwrap_model(wrapped)`.
    """
    if not info.enabled:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_grads(params, info: DistInfo) -> None:
    """Average gradients of parameters that DDP does not manage (e.g. a fine-tuned segmenter)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(info.world_size)


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when `flag` is true on at least one rank (stop requests, non-finite losses)."""
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Average a dict of floats over ranks (same keys everywhere); identity in one process."""
    if not info.enabled or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= info.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist())}


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose order depends only on (seed, epoch) and that can skip a prefix.

    Used in one process too (num_replicas=1), so single- and multi-process runs share one
    shuffling rule. `start_batch` skips the batches already trained in an interrupted epoch; set
    it once after `set_epoch` and it resets itself when the next epoch is set.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, batch_size: int,
                 shuffle: bool = True, drop_last: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.batch_size = batch_size
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start_batch = 0

    def __iter__(self):
        indices = super().__iter__()
        return islice(indices, self.start_batch * self.batch_size, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start_batch * self.batch_size)
