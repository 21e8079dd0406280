"""Training with frozen BatchNorm statistics: each conv -> BatchNorm pair runs as one conv.

A BatchNorm in eval mode (its running statistics kept, as the learner keeps them unless
``train_bn`` is set) is a per-channel scale and shift. :func:`fused` gives a *view* of a network
that shares every parameter with it, but runs each conv -> BatchNorm pair as a single conv whose
weight and bias are computed from both on every call. Gradients still reach the conv's weight
and the norm's scale and shift, so training the view trains the network; only the large
per-pixel BatchNorm passes, forward and backward, are gone (their share of a training step's
GPU time, and the speed-up, are in ``benchmarks/results/recipes-*.md``).

    view = fused(learn.body, example)   # learn.body is unchanged; view(x) == learn.body(x)

A norm switched to train mode (``train_bn``) is run as it is, so the view is always the network.
Pairs are found as in :mod:`threeline.fold`, and the view is checked against the network on
``example``; when they disagree there is no view (None).
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F
from torch import nn

from threeline.models.efficientnet_lite import SameConv2d
from threeline.vision.fold import close, conv_norm_pairs, conv_norm_weights, silenced


class FusedConv(nn.Module):
    """``conv`` followed by ``norm`` in eval mode, as one conv; just ``conv`` when the norm
    trains (:class:`NormTail` then normalizes). The fused weight and bias are handed in by
    :class:`FusedBody`, which computes those of all pairs at once (fewer kernel launches)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d):
        super().__init__()
        self.conv, self.norm = conv, norm
        self.fused: tuple[torch.Tensor, torch.Tensor] | None = None  # set during a forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if self.norm.training:
            return conv(x)
        weight, bias = self.fused or conv_norm_weights([(self.conv, self.norm)])[0]
        if type(conv) is nn.Conv2d and conv.padding_mode == "zeros":
            return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation,
                            conv.groups)
        if type(conv) is SameConv2d:
            return conv.run(x, weight, bias)
        timm_same = _timm_conv2d_same(conv)
        if timm_same is not None:
            return timm_same(x, weight, bias, conv.stride, conv.padding, conv.dilation,
                             conv.groups)
        return torch.func.functional_call(conv, {"weight": weight, "bias": bias}, (x,))


def _timm_conv2d_same(conv: nn.Module):
    """timm's "same"-padded conv function when ``conv`` is timm's ``Conv2dSame`` (then timm is
    already imported: a network of timm's is what holds one), else None."""
    layers = sys.modules.get("timm.layers")
    if layers is None or type(conv) is not layers.Conv2dSame:
        return None
    from timm.layers.conv2d_same import conv2d_same

    return conv2d_same


class FusedBody(nn.Module):
    """The rebuilt network; each forward first computes every eval-mode pair's fused weight
    and bias in a few batched operations, for its :class:`FusedConv` layers to use.

    Without gradients (validation, prediction) the fused weights are kept and reused until a
    weight, statistic or mode changes (tensors' version counters tell), so inference pays
    for the folding once, not per batch."""

    def __init__(self, network: nn.Module, pairs: list[FusedConv]):
        super().__init__()
        self.network = network
        self.pairs = pairs  # a plain list: these modules are registered inside ``network``
        self._kept: tuple[tuple, list] | None = None  # (versions, weights) for inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        live = [pair for pair in self.pairs if not pair.norm.training]
        weights = self._weights(live)
        for pair, pair_weights in zip(live, weights, strict=True):
            pair.fused = pair_weights
        try:
            return self.network(x)
        finally:
            for pair in live:
                pair.fused = None

    def _weights(self, live: list[FusedConv]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if torch.is_grad_enabled():  # training: the weights must be part of the graph
            self._kept = None
            return conv_norm_weights([(p.conv, p.norm) for p in live])
        key = (tuple(id(p) for p in live), tuple(
            t._version for p in live
            for t in (*p.conv.parameters(), *p.norm.parameters(), *p.norm.buffers())))
        if self._kept is None or self._kept[0] != key:
            with torch.no_grad():
                self._kept = (key, conv_norm_weights([(p.conv, p.norm) for p in live]))
        return self._kept[1]


class NormTail(nn.Module):
    """What is left of ``norm`` after :class:`FusedConv`: its dropout and activation (when it
    is timm's ``BatchNormAct2d``: a plain norm has none), or the whole norm when it trains."""

    def __init__(self, norm: nn.BatchNorm2d):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm.training:
            return self.norm(x)
        for part in (getattr(self.norm, "drop", None), getattr(self.norm, "act", None)):
            if part is not None:
                x = part(x)
        return x


@torch.no_grad()
def fused(network: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """A view of ``network`` sharing its parameters, with conv -> BatchNorm pairs fused; None
    when no pair can be fused or the view does not compute what the network computes.

    Modules without a pair below them are the network's own (same objects, same modes), so
    ``network.train()`` / ``.eval()`` and freezing parameters act on the view too.

    Example:
        >>> from threeline.models.efficientnet_lite import efficientnet_lite
        >>> net = efficientnet_lite(0).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> view = fused(net, x)
        >>> bool(torch.allclose(view(x), net(x), atol=1e-4))
        True
        >>> view.network.conv_stem.conv is net.conv_stem
        True
    """
    modes = {m: m.training for m in network.modules()}
    network.eval()
    try:
        with silenced(network):  # the trial runs are not the network's users' to see
            pairs, expected = conv_norm_pairs(network, example)
            if not pairs:
                return None
            name = {m: n for n, m in network.named_modules()}
            replace: dict[str, nn.Module] = {}
            for conv, norm in pairs:
                replace[name[conv]], replace[name[norm]] = FusedConv(conv, norm), NormTail(norm)
            view = FusedBody(_rebuilt(network, replace, ""),
                             [m for m in replace.values() if isinstance(m, FusedConv)])
            agrees = close(view(example), expected)
    finally:
        for m, training in modes.items():
            m.training = training
    return view if agrees else None


def _rebuilt(module: nn.Module, replace: dict[str, nn.Module], prefix: str) -> nn.Module:
    """``module`` itself when nothing below it is replaced; else a shallow copy (sharing its
    parameters and buffers) whose children are rebuilt the same way."""
    if prefix in replace:
        return replace[prefix]
    below = prefix + "." if prefix else ""
    if not any(key.startswith(below) for key in replace):
        return module
    out = copy.copy(module)
    out._modules = {n: _rebuilt(child, replace, below + n) if child is not None else None
                    for n, child in module._modules.items()}
    return out
