"""Residual networks written from scratch, for training from random weights.

Two families, PyTorch ops only:

- `resnet(depth)`: the ResNets of He et al. (2016). Depth 10, 18 and 34 use basic blocks (two
  3x3 convolutions), depth 50 and 101 bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion).
  `small_input=True` swaps the ImageNet stem (7x7 stride 2 and a max pool, for 224 px) for one
  3x3 convolution at full resolution, for 32 px images such as CIFAR.
- `fast_resnet()` (also `resnet(depth=9)`): the nine-layer residual network that trains CIFAR-10
  to 94 % in a few epochs. Three downsampling layers, two of them followed by a residual block,
  max pooling and a scaled linear classifier.

Every residual branch ends in a BatchNorm whose scale starts at zero, so that each block starts
as the identity: deep stacks train from the first step.

    >>> model = resnet(depth=18, n_classes=10, small_input=True)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "FastResNet", "ResNet", "fast_resnet", "resnet"]

# depth -> (block, blocks per stage)
LAYOUTS: dict[int, tuple[str, tuple[int, ...]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, relu: bool = True,
            zero_scale: bool = False) -> nn.Sequential:
    """Convolution (no bias: the BatchNorm has one), BatchNorm, then ReLU if `relu`."""
    bn = nn.BatchNorm2d(c_out)
    if zero_scale:
        nn.init.zeros_(bn.weight)
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), bn]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 convolution and BatchNorm."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return conv_bn(c_in, c_out, kernel=1, stride=stride, relu=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus the input: (B, c_in, H, W) -> (B, c_mid, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, c_in: int, c_mid: int, stride: int = 1):
        super().__init__()
        self.branch = nn.Sequential(
            conv_bn(c_in, c_mid, stride=stride),
            conv_bn(c_mid, c_mid, relu=False, zero_scale=True))
        self.shortcut = shortcut(c_in, c_mid, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 down to c_mid, 3x3 (strided), 1x1 up to 4 * c_mid, plus the input."""

    expansion = 4

    def __init__(self, c_in: int, c_mid: int, stride: int = 1):
        super().__init__()
        c_out = c_mid * self.expansion
        self.branch = nn.Sequential(
            conv_bn(c_in, c_mid, kernel=1),
            conv_bn(c_mid, c_mid, stride=stride),
            conv_bn(c_mid, c_out, kernel=1, relu=False, zero_scale=True))
        self.shortcut = shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, four stages of residual blocks (widths w, 2w, 4w, 8w), average pool, linear."""

    def __init__(self, block: type[BasicBlock | Bottleneck], counts: tuple[int, ...],
                 n_classes: int, small_input: bool, width: int, in_channels: int):
        super().__init__()
        if small_input:  # 32 px: keep full resolution for the first stage
            self.stem = conv_bn(in_channels, width)
        else:  # 224 px: down by 4 before the first stage
            self.stem = nn.Sequential(conv_bn(in_channels, width, kernel=7, stride=2),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        stages, c_in = [], width
        for i, count in enumerate(counts):
            c_mid = width * 2**i
            blocks = []
            for j in range(count):
                blocks.append(block(c_in, c_mid, stride=2 if i > 0 and j == 0 else 1))
                c_in = c_mid * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        x = self.stem(x)  # (B, w, H, W) small stem; (B, w, H/4, W/4) ImageNet stem
        x = self.stages(x)  # (B, 8w * expansion, H/8, W/8) small stem
        return self.head(x)  # (B, n_classes)


class Residual(nn.Module):
    """x + two 3x3 conv-BN-ReLU layers of x (same shape in and out)."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def down(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution, 2x2 max pool, BatchNorm, ReLU: (B, c_in, H, W) -> (B, c_out, H/2, W/2).

    Pooling before the BatchNorm gives the same result as after it for a positive scale, at a
    quarter of the normalisation work.
    """
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FastResNet(nn.Module):
    """The nine-layer residual network for 32 px images (widths w, 2w, 4w, 8w)."""

    def __init__(self, n_classes: int, width: int, in_channels: int, scale: float):
        super().__init__()
        w = width
        self.stem = conv_bn(in_channels, w)
        self.layer1 = nn.Sequential(down(w, 2 * w), Residual(2 * w))
        self.layer2 = down(2 * w, 4 * w)
        self.layer3 = nn.Sequential(down(4 * w, 8 * w), Residual(8 * w))
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8 * w, n_classes, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 32, 32)
        x = self.stem(x)  # (B, w, 32, 32)
        x = self.layer1(x)  # (B, 2w, 16, 16)
        x = self.layer2(x)  # (B, 4w, 8, 8)
        x = self.layer3(x)  # (B, 8w, 4, 4)
        return self.fc(self.pool(x)) * self.scale  # (B, n_classes)


def _check_common(n_classes: int, width: int, in_channels: int) -> None:
    for name, value in (("n_classes", n_classes), ("width", width), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def fast_resnet(n_classes: int = 10, width: int = 64, in_channels: int = 3,
                scale: float = 0.125) -> FastResNet:
    """The nine-layer ResNet for 32 px images: CIFAR-10 to 94 % in a few epochs on a GPU.

    `width` is the stem's channel count (64 gives 64/128/256/512, 6.6 M parameters); `scale`
    multiplies the logits (small logits at the start help the first steps).

        >>> fast_resnet(n_classes=10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    _check_common(n_classes, width, in_channels)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}.")
    return FastResNet(n_classes, width, in_channels, float(scale))


def resnet(depth: int = 18, n_classes: int = 1000, small_input: bool | None = None,
           width: int = 64, in_channels: int = 3) -> nn.Module:
    """A ResNet of `depth` 9, 10, 18, 34, 50 or 101, with random weights.

    `small_input=True` (for 32 px images) uses a 3x3 stem at full resolution and no max pool;
    None means False, except for depth 9, which is `fast_resnet` (a network for small inputs).

        >>> resnet(depth=50, n_classes=5)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 5])
    """
    if depth == 9:
        if small_input is False:
            raise ValueError("resnet(depth=9) is the network for 32 px images; leave "
                             "small_input out, or use depth 10 or more for large images.")
        return fast_resnet(n_classes, width=width, in_channels=in_channels)
    if isinstance(depth, bool) or depth not in LAYOUTS:
        raise ValueError(f"depth must be one of 9, {', '.join(map(str, LAYOUTS))}; got {depth!r}.")
    _check_common(n_classes, width, in_channels)
    small_input = bool(small_input) if small_input is None else small_input
    if not isinstance(small_input, bool):
        raise TypeError(f"small_input must be True or False, got {small_input!r}.")
    kind, counts = LAYOUTS[depth]
    block = BasicBlock if kind == "basic" else Bottleneck
    return ResNet(block, counts, n_classes, small_input, width, in_channels)
