"""Frozen VGG16 feature taps (relu1_2 ... relu4_3) for the contrastive losses (docs/method.md §3).

The layer stack and its state-dict keys (`features.<i>.weight`) are torchvision's VGG16, so
torchvision's ImageNet file loads as is. Weights are never downloaded: `weights="imagenet"` reads
the file from torch's hub cache and raises `WeightsNotFoundError` (naming the path and the URL)
when it is missing; `weights="random"` must be asked for explicitly (tests only).
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from csgis.models.segmenter import imagenet_normalize
from csgis.torchfile import CheckpointError, read_file

VGG16_IMAGENET_FILE = "vgg16-397923af.pth"
VGG16_IMAGENET_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"

# Index (inside torchvision's vgg16().features) of the ReLU that ends each tap.
VGG16_TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on disk (nothing is downloaded)."""


def imagenet_vgg16_path() -> str:
    """Where torchvision keeps vgg16-397923af.pth: $TORCH_HOME/hub/checkpoints (torch.hub.get_dir())."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", VGG16_IMAGENET_FILE)


def _features_state_dict(path: str) -> dict:
    """Read a VGG16 state dict (full model or `features` only) -> {"<i>.weight": ...} of the features."""
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"VGG16 weights file not found: {path}")
    state = read_file(path, "cpu", "a VGG16 state dict (loss.vgg_weights)")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a VGG16 state dict (got {type(state).__name__})")
    features = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith("features."):
            features[key[len("features."):]] = value
        elif key.split(".", 1)[0].isdigit():
            features[key] = value
    return features


class VGGFeatures(nn.Module):
    """Frozen, always-eval VGG16 trunk; forward((B,3,H,W) in [0,1]) -> {tap name: (B,C,h,w)}."""

    def __init__(self, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
                 weights: str = "imagenet", normalize: bool = False):
        super().__init__()
        unknown = [name for name in layers if name not in VGG16_TAPS]
        if unknown or not layers:
            raise ValueError(f"unknown VGG16 taps {unknown or list(layers)}; choose from {list(VGG16_TAPS)}")
        # Ordered shallow -> deep so one pass yields every tap.
        self.layers = tuple(sorted(set(layers), key=VGG16_TAPS.__getitem__))
        self.normalize = normalize
        self.weights = weights
        deepest = VGG16_TAPS[self.layers[-1]]
        # Same modules and key names as torchvision.models.vgg16().features, without building the
        # 120M-parameter classifier; only the layers up to the deepest tap are kept.
        self.features = make_layers(cfgs["D"], batch_norm=False)[: deepest + 1]
        self._load(weights)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def _load(self, weights: str) -> None:
        if weights == "random":
            # torchvision's VGG initialisation (tests only: the features are meaningless).
            for module in self.features:
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(module.bias)
            return
        if weights == "imagenet":
            path = imagenet_vgg16_path()
            if not os.path.isfile(path):
                raise WeightsNotFoundError(
                    f"VGG16 ImageNet weights not found at {path}; nothing is downloaded. Fetch "
                    f"{VGG16_IMAGENET_URL} into that folder (or set TORCH_HOME), or set "
                    f"loss.vgg_weights to a VGG16 state-dict file.")
        else:
            path = weights
        available = _features_state_dict(path)
        own = self.features.state_dict()
        missing = [key for key in own if key not in available]
        if missing:
            raise CheckpointError(f"{path} is not a VGG16 state dict: missing features.{missing[0]} "
                                  f"(and {len(missing) - 1} more)")
        wrong = [key for key in own if tuple(available[key].shape) != tuple(own[key].shape)]
        if wrong:
            raise CheckpointError(f"{path}: features.{wrong[0]} has shape {tuple(available[wrong[0]].shape)}, "
                             f"VGG16 expects {tuple(own[wrong[0]].shape)}")
        self.features.load_state_dict({key: available[key] for key in own})

    def train(self, mode: bool = True) -> "VGGFeatures":
        """Stays in eval mode whatever is asked (frozen feature extractor)."""
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """x (B,3,H,W) RGB in [0,1] -> {tap: features}; `layers` picks a subset (stops at the deepest)."""
        wanted = self.layers if layers is None else tuple(layers)
        missing = [name for name in wanted if name not in self.layers]
        if missing:
            raise ValueError(f"VGG taps {missing} were not built; this VGGFeatures has {list(self.layers)}")
        stop = max(VGG16_TAPS[name] for name in wanted)
        by_index = {VGG16_TAPS[name]: name for name in wanted}
        h = imagenet_normalize(x) if self.normalize else x
        out = {}
        for index, module in enumerate(self.features):
            h = module(h)
            if index in by_index:
                out[by_index[index]] = h
            if index == stop:
                break
        return out
