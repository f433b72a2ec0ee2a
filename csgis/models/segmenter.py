"""DeepLabV3+ with a MobileNetV2 backbone, in the DeepLabV3Plus-Pytorch (VainF) layout (docs/method.md §2).

Module names, parameter shapes and the forward computation equal VainF's `deeplabv3plus_mobilenet`
so that its `best_deeplabv3plus_mobilenet_voc_os16.pth` (`{"model_state": state_dict, ...}`) loads
strictly and gives the same logits. Two details differ from torchvision's MobileNetV2 and decide the
logits at the image border: the stem convolution has no padding, and every inverted residual block
zero-pads its *input* (before the 1x1 expansion) by its dilation and then convolves with padding 0.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# MobileNetV2 stages: (expand_ratio, out_channels, blocks, stride), width multiplier 1.0.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LOW_LEVEL_END = 4          # backbone features[0:4] -> 24 channels at stride 4
LOW_LEVEL_CHANNELS = 24
HIGH_LEVEL_CHANNELS = 320  # features[4:-1]; the 1x1 conv to 1280 (features[-1]) is dropped
ASPP_CHANNELS = 256
LOW_LEVEL_PROJECTED = 48
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB in [0,1] -> ImageNet mean/std normalised, differentiable."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                   dilation: int = 1, groups: int = 1) -> Conv2dNormActivation:
    """Conv (no bias, padding 0) -> BN -> ReLU6; module indices 0/1/2 as in VainF's ConvBNReLU."""
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, stride, padding=0,
                                groups=groups, dilation=dilation, activation_layer=nn.ReLU6)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: pad input by `dilation`, [1x1 expand] -> dilated 3x3 depthwise -> 1x1 linear."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int,
                 expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.dilation = dilation
        self.use_residual = stride == 1 and in_channels == out_channels
        hidden = int(round(in_channels * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, dilation, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,Cin,H,W) -> (B,Cout,H',W'); H' = H for stride 1, ceil(H/2) for stride 2."""
        # The padding sits before the 1x1 expansion, so the border the depthwise conv sees is
        # ReLU6(BN(0)), not zero: padding the depthwise conv instead would change border logits.
        d = self.dilation
        out = self.conv(F.pad(x, (d, d, d, d)))
        return x + out if self.use_residual else out


def mobilenet_v2_block_plan(output_stride: int) -> list[tuple[int, int, int, int, int]]:
    """(in_channels, out_channels, stride, dilation, expand_ratio) for backbone features[1:18]."""
    plan = []
    reached_stride = 2  # the stem halves the resolution
    dilation = 1
    in_channels = STEM_CHANNELS
    for expand_ratio, out_channels, blocks, stage_stride in MOBILENET_V2_STAGES:
        # Once the output stride is reached, a stage's stride becomes dilation; its first block
        # still uses the dilation of the stage before (the DeepLab / VainF convention).
        first_dilation = dilation
        if reached_stride == output_stride:
            stride = 1
            dilation *= stage_stride
        else:
            stride = stage_stride
            reached_stride *= stage_stride
        for i in range(blocks):
            plan.append((in_channels, out_channels, stride if i == 0 else 1,
                         first_dilation if i == 0 else dilation, expand_ratio))
            in_channels = out_channels
    return plan


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 features split as low_level_features = [0:4] and high_level_features = [4:18]."""

    def __init__(self, output_stride: int = 16):
        super().__init__()
        blocks = [InvertedResidual(*spec) for spec in mobilenet_v2_block_plan(output_stride)]
        features = [_conv_bn_relu6(3, STEM_CHANNELS, 3, stride=2)] + blocks
        # VainF slices one nn.Sequential, which keeps the original indices: keys of the high
        # level part are high_level_features.4 ... high_level_features.17.
        self.low_level_features = nn.Sequential(
            OrderedDict((str(i), m) for i, m in enumerate(features[:LOW_LEVEL_END])))
        self.high_level_features = nn.Sequential(
            OrderedDict((str(i), m) for i, m in enumerate(features) if i >= LOW_LEVEL_END))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,H,W) -> (low_level (B,24,~H/4,~W/4), high_level (B,320,~H/os,~W/os))."""
        low_level = self.low_level_features(x)
        return low_level, self.high_level_features(low_level)


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average -> 1x1 conv -> BN -> ReLU -> bilinear back to the input size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,Cin,H,W) -> (B,Cout,H,W), constant over space."""
        pooled = super().forward(x)
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, image pooling; 5*256 -> 256, dropout 0.1."""

    def __init__(self, in_channels: int, rates: tuple[int, int, int]):
        super().__init__()
        branches: list[nn.Module] = [
            Conv2dNormActivation(in_channels, ASPP_CHANNELS, 1, padding=0,
                                 activation_layer=nn.ReLU)]
        branches += [Conv2dNormActivation(in_channels, ASPP_CHANNELS, 3, padding=rate,
                                          dilation=rate, activation_layer=nn.ReLU)
                     for rate in rates]
        branches.append(ASPPPooling(in_channels, ASPP_CHANNELS))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * ASPP_CHANNELS, ASPP_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,Cin,h,w) -> (B,256,h,w)."""
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3PlusHead(nn.Module):
    """Decoder: low-level 1x1 -> 48, ASPP resized to low-level size, concat 304 -> 3x3 -> 1x1."""

    def __init__(self, num_classes: int, rates: tuple[int, int, int]):
        super().__init__()
        self.project = Conv2dNormActivation(LOW_LEVEL_CHANNELS, LOW_LEVEL_PROJECTED, 1, padding=0,
                                            activation_layer=nn.ReLU)
        self.aspp = ASPP(HIGH_LEVEL_CHANNELS, rates)
        self.classifier = nn.Sequential(
            nn.Conv2d(LOW_LEVEL_PROJECTED + ASPP_CHANNELS, ASPP_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(inplace=True),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, low_level: torch.Tensor, high_level: torch.Tensor) -> torch.Tensor:
        """(B,24,h4,w4), (B,320,h,w) -> logits (B,classes,h4,w4)."""
        low_level = self.project(low_level)
        context = F.interpolate(self.aspp(high_level), size=low_level.shape[-2:],
                                mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low_level, context], dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ MobileNetV2; state_dict keys equal DeepLabV3Plus-Pytorch's deeplabv3plus_mobilenet."""

    def __init__(self, num_classes: int = 21, output_stride: int = 16):
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise ValueError(f"output_stride must be one of {sorted(ASPP_RATES)}, got {output_stride}")
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.backbone = MobileNetV2Backbone(output_stride)
        self.classifier = DeepLabV3PlusHead(num_classes, ASPP_RATES[output_stride])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) as given (normalise first if the weights expect it) -> logits (B,classes,H,W)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B,3,H,W) tensor, got shape {tuple(x.shape)}")
        low_level, high_level = self.backbone(x)
        logits = self.classifier(low_level, high_level)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplabv3plus_mobilenet(num_classes: int = 21, output_stride: int = 16) -> DeepLabV3Plus:
    """DeepLabV3+ MobileNetV2 with random weights (load VainF's or our checkpoint for real use)."""
    return DeepLabV3Plus(num_classes=num_classes, output_stride=output_stride)


def aspp_rates(model: DeepLabV3Plus) -> tuple[int, ...]:
    """Dilation rates of the three atrous ASPP branches, read from the convolutions themselves."""
    return tuple(branch[0].dilation[0] for branch in model.classifier.aspp.convs[1:4])
