"""A moving average of the trained weights (train.ema_decay > 0), as BasicSR's `net_g_ema` and
KAIR's `netE`: after every optimizer step each floating-point entry of the state dict (weights and
BatchNorm statistics) becomes decay * average + (1 - decay) * current; integer entries (BatchNorm's
step counter) are copied.

The average starts from the weights the run starts with (the network's initialisation, or
model.init), so their share after n steps is decay^n (0.999: 37 % after 1000 steps, 0.7 % after
5000; 0.995: 0.7 % after 1000). Validation, best.pth, latest.pth and the periodic checkpoints hold
the average; the training state holds both, so --resume continues either exactly.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The average of a model's weights; `model` is a frozen copy in eval mode that holds it."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"WeightAverage: decay must lie in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards `model`'s current weights (same architecture)."""
        current = model.state_dict()
        for key, average in self.model.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[key].to(average.dtype), 1.0 - self.decay)
            else:
                average.copy_(current[key])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Weights and step count from state_dict(); the decay stays this object's (the config's)."""
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
