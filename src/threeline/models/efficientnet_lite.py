"""EfficientNet-Lite (Tan & Le 2019, the mobile variant: ReLU6, no squeeze-excitation), written
out so the pretrained image path needs neither timm nor torchvision to build its network.

The layers and their names are those of timm's ``tf_efficientnet_lite0/1/2`` (TensorFlow's
"same" padding, BatchNorm eps 1e-3), so the same state dict loads into either, in the same key
order, and the outputs agree (``tests/test_efficientnet_lite.py`` checks both against timm).
Importing timm pulls in ``torchvision.ops`` and with it ``torch._dynamo`` (seconds per process),
which is why the registered backbones are built here.

    net = efficientnet_lite(2)            # headless: forward_features -> (B, 1280, H/32, W/32)
    net = efficientnet_lite(0, num_classes=1000)   # with the ImageNet classifier, as the weights
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Each stage: block kind, repeats, kernel, stride, expansion, output channels (before scaling).
STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
STEM, FEATURES, BN_EPS = 32, 1280, 1e-3  # the stem and the last conv are not scaled in Lite


@dataclass(frozen=True)
class LiteConfig:
    """One variant: channel and depth multipliers, and its ImageNet weights' preprocessing."""

    width: float
    depth: float
    size: int
    crop_pct: float
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def data_config(self) -> dict:
        """The preprocessing in timm's ``resolve_data_config`` form."""
        return {"input_size": (3, self.size, self.size), "interpolation": self.interpolation,
                "mean": self.mean, "std": self.std, "crop_pct": self.crop_pct,
                "crop_mode": "center"}


VARIANTS = {0: LiteConfig(1.0, 1.0, 224, 0.875), 1: LiteConfig(1.0, 1.1, 240, 0.882),
            2: LiteConfig(1.1, 1.2, 260, 0.890)}


def round_channels(channels: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor``, never more than 10 % below ``channels``.

    Example:
        >>> round_channels(40 * 1.1), round_channels(112 * 1.1)
        (48, 120)
    """
    out = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * channels else out


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "same": the output has ``ceil(input / stride)``
    pixels, the odd pixel of padding going to the bottom and right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self.weight, self.bias)

    def run(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
            ) -> torch.Tensor:
        """This convolution with other weights (the fused view of a conv -> BatchNorm pair)."""
        pads = []
        for size, k, s, d in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                                 reversed(self.stride), reversed(self.dilation), strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]  # (left, right), then (top, bottom)
        return F.conv2d(F.pad(x, pads), weight, bias, self.stride, 0, self.dilation, self.groups)


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv with "same" padding: static when symmetric, else :class:`SameConv2d`."""
    if stride == 1:
        return nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return SameConv2d(c_in, c_out, kernel, stride, 0, groups=groups, bias=False)


def norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class DepthwiseSeparable(nn.Module):
    """depthwise k x k -> BN -> ReLU6 -> pointwise 1 x 1 -> BN (+ input when shapes agree)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.conv_dw, self.bn1 = conv(c_in, c_in, kernel, stride, groups=c_in), norm(c_in)
        self.conv_pw, self.bn2 = conv(c_in, c_out, 1), norm(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H/s, W/s)
        out = F.relu6(self.bn1(self.conv_dw(x)))
        out = self.bn2(self.conv_pw(out))
        return out + x if self.skip else out


class InvertedResidual(nn.Module):
    """1 x 1 expand -> BN -> ReLU6 -> depthwise k x k -> BN -> ReLU6 -> 1 x 1 project -> BN
    (+ input when shapes agree)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.conv_pw, self.bn1 = conv(c_in, mid, 1), norm(mid)
        self.conv_dw, self.bn2 = conv(mid, mid, kernel, stride, groups=mid), norm(mid)
        self.conv_pwl, self.bn3 = conv(mid, c_out, 1), norm(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H/s, W/s)
        out = F.relu6(self.bn1(self.conv_pw(x)))
        out = F.relu6(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    """stem (3 x 3, stride 2) -> 7 stages of blocks -> 1 x 1 conv to 1280 channels
    [-> average pool -> classifier, with ``num_classes``]."""

    def __init__(self, config: LiteConfig, num_classes: int = 0):
        super().__init__()
        self.config, self.num_features = config, FEATURES
        self.conv_stem, self.bn1 = conv(3, STEM, 3, 2), norm(STEM)
        stages, c_in = [], STEM
        for i, (kind, repeats, kernel, stride, expand, channels) in enumerate(STAGES):
            c_out = round_channels(channels * config.width)
            fixed = i in (0, len(STAGES) - 1)  # Lite keeps the first and last stage's depth
            blocks = []
            for j in range(repeats if fixed else math.ceil(repeats * config.depth)):
                s = stride if j == 0 else 1
                blocks.append(DepthwiseSeparable(c_in, c_out, kernel, s) if kind == "ds"
                              else InvertedResidual(c_in, c_out, kernel, s, expand))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head, self.bn2 = conv(c_in, FEATURES, 1), norm(FEATURES)
        self.classifier = nn.Linear(FEATURES, num_classes) if num_classes else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280, ceil(H/32), ceil(W/32))."""
        x = F.relu6(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        return F.relu6(self.bn2(self.conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.forward_features(x)
        if self.classifier is None:
            return maps
        return self.classifier(maps.mean((2, 3)))  # (B, num_classes)

    def parameter_stages(self) -> list[list[nn.Parameter]]:
        """Parameters from the input side up, grouped as timm groups this network (coarse):
        the stem, one group per stage of blocks, the last stage together with the final conv."""
        stem = [*self.conv_stem.parameters(), *self.bn1.parameters()]
        stages = [list(stage.parameters()) for stage in self.blocks]
        stages[-1] += [*self.conv_head.parameters(), *self.bn2.parameters()]
        return [stem, *stages]


def efficientnet_lite(variant: int, num_classes: int = 0) -> EfficientNetLite:
    """EfficientNet-Lite ``variant`` (0, 1 or 2) with random weights.

    Example:
        >>> net = efficientnet_lite(0).eval()
        >>> net.forward_features(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 1280, 2, 2])
    """
    if variant not in VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(VARIANTS)}, "
                         f"got {variant!r}.")
    return EfficientNetLite(VARIANTS[variant], num_classes)
