"""A small convolutional network for 32 px images whose first layer is computed from the data.

`fast_convnet()` is built to train CIFAR-10 in seconds on one GPU (its GPU times are not
measured yet; the CPU measurements of its parts are in
``benchmarks/results/cifar-cpu-2core-2026-12-08-ablation.md``, where patch whitening is the part
that mattered). Its parts:

- **Patch whitening.** The first layer is a fixed 2x2 convolution whose filters decorrelate the
  pixels of every 2x2 patch: the eigenvectors of the patches' covariance, each scaled by one
  over the square root of its eigenvalue, and their negatives (so a ReLU-like activation keeps
  both signs). The network starts from inputs whose directions all have unit variance, which is
  what the optimizer would otherwise spend its first epochs learning. The filters come from one
  batch of training images: `Learner` calls :meth:`FastConvNet.initialize_from` with the first
  training batch before the first fit (see ``docs/core.md``, "data-dependent initialisation").
- **Three blocks, no residuals**: each is a 3x3 convolution, 2x2 max pool, BatchNorm, GELU,
  then more 3x3 convolution, BatchNorm, GELU; then the largest activation of each channel and a
  linear layer whose logits are scaled down (small logits help the first steps).
- **BatchNorm without a learned scale** (the convolution before it already sets the scale) and
  with its learned shift multiplied by `shift_scale`: a step of the optimizer moves the shift
  `shift_scale ** 2` times further than an unscaled one, so shifts keep up with the
  scale-invariant convolution weights at one learning rate for all.
- **Identity start**: the first `c_in` filters of every 3x3 convolution start as the identity,
  so each block starts close to passing its input through.

    >>> model = fast_convnet(n_classes=10)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FastConvNet", "PatchWhitening", "fast_convnet"]


class PatchWhitening(nn.Module):
    """2x2 convolution (no padding) with fixed whitening filters and a learned bias:
    (B, C, H, W) -> (B, 8C, H - 1, W - 1).

    Until :meth:`fit` is called its filters are random (Kaiming), so the network also trains
    without it, more slowly. The filters and whether they were fitted are saved with the model.
    """

    def __init__(self, in_channels: int, eps: float = 5e-4):
        super().__init__()
        n = 4 * in_channels  # values in a 2x2 patch
        filters = torch.empty(2 * n, in_channels, 2, 2)
        nn.init.kaiming_normal_(filters)
        self.register_buffer("filters", filters)  # (2n, C, 2, 2), not trained
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.bias = nn.Parameter(torch.zeros(2 * n))
        self.eps = eps

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set the filters from images ``x`` (B, C, H, W) as the model will see them."""
        c = x.shape[1]
        patches = F.unfold(x.float(), kernel_size=2)  # (B, 4C, L): one column per patch
        patches = patches.transpose(1, 2).reshape(-1, 4 * c).double().cpu()  # (B * L, 4C)
        patches -= patches.mean(0)
        covariance = patches.T @ patches / len(patches)  # (4C, 4C)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        rows = eigenvectors.T / (eigenvalues.clamp_min(0) + self.eps).sqrt()[:, None]  # (4C, 4C)
        rows = rows.flip(0)  # largest variance first
        filters = torch.cat([rows, -rows]).view(8 * c, c, 2, 2)
        self.filters.copy_(filters.to(self.filters))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.filters.to(x.dtype), self.bias.to(x.dtype))


class ShiftNorm(nn.Module):
    """BatchNorm with no learned scale and a learned shift stored divided by ``shift_scale``."""

    def __init__(self, channels: int, shift_scale: float, momentum: float = 0.4):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False, momentum=momentum, eps=1e-12)
        self.shift = nn.Parameter(torch.zeros(channels))
        self.shift_scale = shift_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return self.norm(x) + (self.shift * self.shift_scale).view(1, -1, 1, 1).to(x.dtype)


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 convolution (no bias: a norm follows) whose first ``c_in`` filters start as the
    identity when there are that many."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    if c_out >= c_in:
        with torch.no_grad():
            nn.init.dirac_(conv.weight[:c_in])
    return conv


class ConvBlock(nn.Sequential):
    """conv, 2x2 max pool, norm, GELU, then (conv, norm, GELU) x (n_convs - 1):
    (B, c_in, H, W) -> (B, c_out, H // 2, W // 2)."""

    def __init__(self, c_in: int, c_out: int, n_convs: int, shift_scale: float):
        layers: list[nn.Module] = [conv3x3(c_in, c_out), nn.MaxPool2d(2),
                                   ShiftNorm(c_out, shift_scale), nn.GELU()]
        for _ in range(n_convs - 1):
            layers += [conv3x3(c_out, c_out), ShiftNorm(c_out, shift_scale), nn.GELU()]
        super().__init__(*layers)


class FastConvNet(nn.Module):
    """Patch whitening, three :class:`ConvBlock` s, global max, scaled linear classifier."""

    def __init__(self, n_classes: int, widths: tuple[int, int, int], in_channels: int,
                 n_convs: int, scale: float, shift_scale: float):
        super().__init__()
        self.whiten = PatchWhitening(in_channels)
        c_in, blocks = 8 * in_channels, []
        for width in widths:
            blocks.append(ConvBlock(c_in, width, n_convs, shift_scale))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, n_classes, bias=False)
        self.scale = scale

    @property
    def initialized(self) -> bool:
        """True once the whitening filters were computed from data (saved with the model)."""
        return bool(self.whiten.fitted)

    def initialize_from(self, x: torch.Tensor) -> None:
        """Compute the whitening filters from a batch of training images (B, C, H, W)."""
        self.whiten.fit(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 32, 32)
        x = F.gelu(self.whiten(x))  # (B, 8C, 31, 31)
        x = self.blocks(x)  # (B, widths[-1], 3, 3)
        x = x.amax(dim=(2, 3))  # (B, widths[-1])
        return self.fc(x) * self.scale  # (B, n_classes)


def fast_convnet(n_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256),
                 in_channels: int = 3, n_convs: int = 2, scale: float = 1 / 9,
                 shift_scale: float = 8.0) -> FastConvNet:
    """The whitened three-block network for 32 px images (2.0 M parameters by default).

    ``widths``: channels of the three blocks; ``n_convs``: convolutions per block; ``scale``
    multiplies the logits; ``shift_scale`` is the norms' shift multiplier (see the module's
    docstring). Train it with SGD (``learn.optimizer = "sgd"``) and a large rate.

        >>> sum(p.numel() for p in fast_convnet().parameters()) > 1_000_000
        True
    """
    for name, value in (("n_classes", n_classes), ("in_channels", in_channels),
                        ("n_convs", n_convs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    widths = tuple(widths)
    if len(widths) != 3 or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                                   for w in widths):
        raise ValueError(f"widths must be three positive integers (the blocks' channels), "
                         f"got {widths!r}.")
    for name, value in (("scale", scale), ("shift_scale", shift_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return FastConvNet(n_classes, widths, in_channels, n_convs, float(scale), float(shift_scale))
