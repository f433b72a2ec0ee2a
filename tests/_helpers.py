"""Builders shared by several test files (fixtures live in conftest.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from csgis.config import Config, from_dict
from csgis.models.smoother import Smoother

# The smallest smoother that has every part: one HDC block in each stage.
TINY_ARCH = dict(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters, so eval mode is not an identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)


def tiny_smoother(seed: int = 0, **arch) -> Smoother:
    """A tiny smoother (TINY_ARCH unless given) with random weights and BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = Smoother(**(arch or TINY_ARCH))
    randomize_bn(model, seed)
    return model.eval()


def tiny_config(demo_root: Path, exp_dir: Path, name: str, **sections) -> Config:
    """A smoothing run that takes seconds: width-4 smoother, 32 px crops, batch 4, 8 steps per
    epoch, 2 epochs, every loss term but segmentation, deterministic, on the tiny demo data."""
    data = {
        "name": name, "experiments_dir": str(exp_dir), "device": "cpu", "deterministic": True, "seed": 1,
        "model": dict(TINY_ARCH),
        "loss": {"vgg_weights": "random", "segmentation": 0.0, "negatives": "coin"},
        "data": {"root": str(demo_root), "patch_size": 32, "num_workers": 0, "repeat": 2, "val_crop": 32},
        "train": {"epochs": 2, "batch_size": 4, "log_every": 2, "save_every": 1, "val_images": 2,
                  "milestones": [1], "gamma": 0.5},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return from_dict(data)


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def assert_resume_is_exact(demo_root: Path, exp_dir: Path, stop_step: int = 5, **sections) -> dict:
    """A tiny run stopped by SIGINT after `stop_step` steps and resumed ends with the weights of an
    uninterrupted one; returns the uninterrupted run's summary."""
    import os
    import signal

    import pytest

    from csgis.checkpoint import load_training_state
    from csgis.train import TrainingInterrupted, train
    straight = train(tiny_config(demo_root, exp_dir, "straight", **sections))

    def stop(ctx):
        if ctx["step"] == stop_step:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(tiny_config(demo_root, exp_dir, "resumed", **sections), step_hook=stop)
    train(tiny_config(demo_root, exp_dir, "resumed", **sections), resume="auto")
    states = [load_training_state(exp_dir / n / "training_states" / "latest.state") for n in ("straight", "resumed")]
    assert_same_tensors(states[0]["model"], states[1]["model"], "weights")
    assert (states[0].get("ema") is None) == (states[1].get("ema") is None)
    if states[0].get("ema") is not None:  # train.ema_decay: the weight average resumes exactly too
        assert_same_tensors(states[0]["ema"]["weights"], states[1]["ema"]["weights"], "weight average")
        assert states[0]["ema"]["updates"] == states[1]["ema"]["updates"] == states[0]["global_step"]
    return straight
