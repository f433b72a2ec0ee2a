"""CSGIS-Net smoothing network (docs/method.md §1): HDC descriptor, edge head, coarse head, refine head.

Everything runs at full resolution with 3x3 convolutions whose padding equals their dilation, so
the output has the input's size for any H, W. Module names here are ours; the mapping to the
authors' checkpoint keys lives in csgis/checkpoint.py (AUTHORS_* tables).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Dilations of the three convolutions inside one HDC block (hybrid dilated convolution).
HDC_DILATIONS = (1, 2, 3)


def conv3x3(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with bias and 'same' zero padding (padding = dilation)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=dilation, dilation=dilation)


class HDCBlock(nn.Module):
    """conv d1-BN-ReLU -> conv d2-BN-ReLU -> conv d3-BN-ReLU, plus the block input. (B,C,H,W) -> same."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = conv3x3(width, width, HDC_DILATIONS[0])
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, HDC_DILATIONS[1])
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv3x3(width, width, HDC_DILATIONS[2])
        self.bn3 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = F.relu(self.bn3(self.conv3(y)))
        return y + x


class EdgeHead(nn.Module):
    """[conv-BN-ReLU] x2, conv -> 1 channel. (B,width,H,W) -> edge logits (B,1,H,W)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = conv3x3(width, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv_out = conv3x3(width, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(features)))
        y = F.relu(self.bn2(self.conv2(y)))
        return self.conv_out(y)


class CoarseHead(nn.Module):
    """conv-BN-ReLU, HDC blocks, conv-BN-ReLU, conv -> 3. (B,width+1,H,W) -> coarse (B,3,H,W)."""

    def __init__(self, in_channels: int, width: int, num_blocks: int):
        super().__init__()
        self.conv_in = conv3x3(in_channels, width)
        self.bn_in = nn.BatchNorm2d(width)
        self.blocks = nn.ModuleList(HDCBlock(width) for _ in range(num_blocks))
        self.conv_mid = conv3x3(width, width)
        self.bn_mid = nn.BatchNorm2d(width)
        self.conv_out = conv3x3(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_in(self.conv_in(x)))
        for block in self.blocks:
            y = block(y)
        y = F.relu(self.bn_mid(self.conv_mid(y)))
        return self.conv_out(y)


class RefineHead(nn.Module):
    """conv-BN-ReLU, HDC blocks, conv -> 3. (B,width+4,H,W) -> residual (B,3,H,W)."""

    def __init__(self, in_channels: int, width: int, num_blocks: int):
        super().__init__()
        self.conv_in = conv3x3(in_channels, width)
        self.bn_in = nn.BatchNorm2d(width)
        self.blocks = nn.ModuleList(HDCBlock(width) for _ in range(num_blocks))
        self.conv_out = conv3x3(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_in(self.conv_in(x)))
        for block in self.blocks:
            y = block(y)
        return self.conv_out(y)


@dataclass
class SmootherOutput:
    """Outputs of Smoother.forward; all full resolution, prediction = coarse + residual."""
    edge_logits: torch.Tensor  # (B,1,H,W), no sigmoid
    coarse: torch.Tensor       # (B,3,H,W)
    residual: torch.Tensor     # (B,3,H,W)
    prediction: torch.Tensor   # (B,3,H,W), not clamped


class Smoother(nn.Module):
    """CSGIS-Net smoother: (B,3,H,W) RGB in [0,1] -> SmootherOutput (edge logits, coarse, residual, prediction).

    `channel_order` is "rgb" for networks trained here; networks imported from the authors'
    release were trained on OpenCV's BGR order, and with channel_order="bgr" the input is flipped
    to BGR and the image outputs flipped back, so callers always deal in RGB.

    `input_skip=True` is not the paper's network: the coarse head's output is added to the input
    (coarse = x + head), so the heads learn what to take away and an image with nothing to remove
    passes through unchanged from the start (residual learning, as in DnCNN). Same parameters and
    state-dict keys; the flag travels in a checkpoint's 'arch' entry (present only when true), not
    in its weights.
    """

    def __init__(self, width: int = 64, descriptor_blocks: int = 12, coarse_blocks: int = 3,
                 refine_blocks: int = 6, input_skip: bool = False):
        super().__init__()
        for name, value, least in (("width", width, 1), ("descriptor_blocks", descriptor_blocks, 0),
                                   ("coarse_blocks", coarse_blocks, 0), ("refine_blocks", refine_blocks, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"Smoother: {name} must be an integer >= {least}, got {value!r}")
        if not isinstance(input_skip, bool):
            raise ValueError(f"Smoother: input_skip must be true or false, got {input_skip!r}")
        self.arch = {"width": width, "descriptor_blocks": descriptor_blocks,
                     "coarse_blocks": coarse_blocks, "refine_blocks": refine_blocks}
        if input_skip:  # only then, so the paper's network keeps the arch of every earlier file
            self.arch["input_skip"] = True
        self.channel_order = "rgb"
        self.stem = conv3x3(3, width)  # no BN/ReLU: the first HDC block adds its input back
        self.blocks = nn.ModuleList(HDCBlock(width) for _ in range(descriptor_blocks))
        self.edge_head = EdgeHead(width)
        self.coarse_head = CoarseHead(width + 1, width, coarse_blocks)
        self.refine_head = RefineHead(width + 1 + 3, width, refine_blocks)

    def forward(self, x: torch.Tensor) -> SmootherOutput:
        """x: (B,3,H,W) RGB in [0,1] (no normalisation) -> SmootherOutput at (H,W)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Smoother expects a (B,3,H,W) tensor, got shape {tuple(x.shape)}")
        bgr = self.channel_order == "bgr"
        if bgr:
            x = x.flip(1)
        features = self.stem(x)
        for block in self.blocks:
            features = block(features)
        edge_logits = self.edge_head(features)
        with_edge = torch.cat((features, edge_logits), dim=1)
        coarse = self.coarse_head(with_edge)
        if self.arch.get("input_skip", False):
            coarse = coarse + x
        residual = self.refine_head(torch.cat((with_edge, coarse), dim=1))
        if bgr:
            coarse, residual = coarse.flip(1), residual.flip(1)
        return SmootherOutput(edge_logits=edge_logits, coarse=coarse, residual=residual,
                              prediction=coarse + residual)

    def receptive_radius(self) -> int:
        """Pixels on one side that can influence an output pixel (prediction, the longest path)."""
        block = sum(HDC_DILATIONS)  # a 3x3 conv of dilation d reaches d pixels further
        descriptor = 1 + block * self.arch["descriptor_blocks"]
        edge = 3  # three 3x3 convs
        coarse = 1 + block * self.arch["coarse_blocks"] + 2
        refine = 1 + block * self.arch["refine_blocks"] + 1
        # The refine head sees the coarse output, which sees the edge logits, which see the features.
        return descriptor + edge + coarse + refine


def build_smoother(model_cfg) -> Smoother:
    """Smoother from a csgis.config.ModelConfig (or any object/dict with the same fields)."""
    keys = ("width", "descriptor_blocks", "coarse_blocks", "refine_blocks", "input_skip")
    if isinstance(model_cfg, dict):
        return Smoother(**{k: model_cfg[k] for k in keys if k in model_cfg})
    return Smoother(**{k: getattr(model_cfg, k) for k in keys})


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def architecture_flops(width: int = 64, descriptor_blocks: int = 12, coarse_blocks: int = 3,
                       refine_blocks: int = 6, input_skip: bool = False) -> dict[str, int]:
    """Forward cost per output pixel from the layer list (docs/method.md §1): {'conv': 2*9*cin*cout summed, 'elementwise': ...}.

    Every convolution is 3x3, stride 1, 'same' padding, so each costs 9*cin*cout multiply-adds per
    pixel (2 FLOP each). 'elementwise' counts what FlopCounterMode leaves out: conv biases (cout),
    eval-mode BN (2 per channel: scale, shift), ReLU (1), residual and final adds (1).
    """
    w = width
    convs = [(3, w)]                                          # descriptor stem
    convs += [(w, w)] * 3 * descriptor_blocks                 # descriptor HDC blocks
    convs += [(w, w), (w, w), (w, 1)]                         # edge head
    convs += [(w + 1, w)] + [(w, w)] * 3 * coarse_blocks + [(w, w), (w, 3)]   # coarse head
    convs += [(w + 1 + 3, w)] + [(w, w)] * 3 * refine_blocks + [(w, 3)]       # refine head
    conv = sum(2 * 9 * cin * cout for cin, cout in convs)
    blocks = descriptor_blocks + coarse_blocks + refine_blocks
    bn_relu_layers = 3 * blocks + 2 + 2 + 1                   # HDC convs, edge x2, coarse in/mid, refine in
    elementwise = (sum(cout for _, cout in convs)             # biases
                   + bn_relu_layers * w * 3                   # BN scale + shift, ReLU
                   + blocks * w                               # HDC residual adds
                   + 3                                        # prediction = coarse + residual
                   + 3 * input_skip)                          # coarse = input + coarse head
    return {"conv": conv, "elementwise": elementwise}


def counted_flops(model: nn.Module, size: int = 64, batch: int = 1) -> int:
    """FLOPs of one forward pass on a (batch,3,size,size) input, as FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters())
    x = torch.rand(batch, 3, size, size, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
