"""BatchNorm folded into the convolution before it, for inference with a frozen network.

In eval mode a BatchNorm is a per-channel scale and shift, so it can be merged into the weights
and bias of the convolution that feeds it. The network then runs one kernel fewer per layer
(measured in ``benchmarks/results/lesson1-*.md``). Precompute runs its pass over the images
with a folded copy; the learner's own network is never changed.

    fast = folded(learn.body, example)   # a new module; learn.body is untouched

Pairs are found by running ``example`` through the network once: a BatchNorm whose input is
exactly the output of a ``nn.Conv2d`` is folded into it. timm's ``BatchNormAct2d`` keeps its
activation; other normalization layers are left as they are. A trace cannot see a conv's output
used elsewhere too (a residual sum, say), so the folded copy is checked against the network on
``example``; when they disagree the copy is returned unfolded.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import nn


@torch.no_grad()
def folded(network: nn.Module, example: torch.Tensor) -> nn.Module:
    """An eval-mode copy of ``network`` with each conv -> BatchNorm pair merged into the conv.

    Example:
        >>> from threeline.models.efficientnet_lite import efficientnet_lite
        >>> net = efficientnet_lite(0).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> fast = folded(net, x)
        >>> any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
        False
        >>> bool(torch.allclose(fast(x), net(x), atol=1e-4))
        True
    """
    copied = copy.deepcopy(network).eval()
    with silenced(copied):  # the copy keeps its owner's hooks; trial runs are not theirs to see
        pairs, expected = conv_norm_pairs(copied, example)
        parents = {child: (parent, name) for parent in copied.modules()
                   for name, child in parent.named_children()}
        for (conv, norm), (weight, bias) in zip(pairs, conv_norm_weights(pairs), strict=True):
            conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
            conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
            parent, name = parents[norm]
            kept = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None))
                    if m is not None and not isinstance(m, nn.Identity)]
            setattr(parent, name, nn.Sequential(*kept) if kept else nn.Identity())
        agrees = close(copied(example), expected)
    return copied if agrees else copy.deepcopy(network).eval()


def close(output: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether a folded network's ``output`` matches ``expected`` up to rounding (not NaN)."""
    error = (output.float() - expected).abs().max()
    return bool(error <= 1e-2 * expected.abs().max() + 1e-5)


@contextlib.contextmanager
def silenced(network: nn.Module) -> Iterator[None]:
    """Forward hooks of ``network``'s modules do not run inside this block."""
    theirs = {m: (m._forward_hooks, m._forward_pre_hooks) for m in network.modules()}
    for m in theirs:
        m._forward_hooks, m._forward_pre_hooks = OrderedDict(), OrderedDict()
    try:
        yield
    finally:
        for m, (forward, pre) in theirs.items():
            m._forward_hooks, m._forward_pre_hooks = forward, pre


def conv_norm_pairs(network: nn.Module, example: torch.Tensor
                    ) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d]], torch.Tensor]:
    """(conv, norm) pairs where the norm's input is the conv's output, in running order; and
    the network's output on ``example`` (float32), to check the folded copy against."""
    made: dict[int, tuple[torch.Tensor, nn.Conv2d]] = {}  # the tensors stay alive: ids unique
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def conv_ran(module, inputs, output):
        made[id(output)] = (output, module)

    def norm_ran(module, inputs, output):
        source = made.get(id(inputs[0]))
        if source is not None and source[0] is inputs[0]:
            pairs.append((source[1], module))

    hooks = [m.register_forward_hook(conv_ran) for m in network.modules()
             if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(norm_ran) for m in network.modules() if _foldable(m)]
    try:
        output = network(example).float()
    finally:
        for hook in hooks:
            hook.remove()
    used = [conv for conv, _ in pairs]
    return [(c, n) for c, n in pairs if used.count(c) == 1], output  # a conv run twice: leave it


def _foldable(module: nn.Module) -> bool:
    """A plain BatchNorm2d, or timm's BatchNormAct2d, with running statistics."""
    layers = sys.modules.get("timm.layers")  # a network of timm's: timm is imported already
    kinds = (nn.BatchNorm2d,) + ((layers.BatchNormAct2d,) if layers is not None else ())
    return (type(module) in kinds
            and module.running_mean is not None and module.running_var is not None)


def conv_norm_weights(pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]]
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight (O, I/groups, k, k), bias (O,)) per pair: the conv scaled by the norm's
    ``weight / sqrt(running_var + eps)``, the bias shifted to match. One set of operations
    over the channels of all pairs together; differentiable in the conv's and norm's
    parameters. The one formula behind both the folded copy (:func:`folded`) and the fused
    view (:mod:`threeline.vision.fused`).

    Example:
        >>> conv, norm = nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3).eval()
        >>> (w, b), = conv_norm_weights([(conv, norm)])
        >>> x = torch.randn(1, 2, 4, 4)
        >>> bool(torch.allclose(nn.functional.conv2d(x, w, b), norm(conv(x)), atol=1e-6))
        True
    """
    if not pairs:
        return []
    norms = [norm for _, norm in pairs]
    var = torch.cat([n.running_var for n in norms])  # (sum of O,)
    if len({n.eps for n in norms}) == 1:
        var = var + norms[0].eps
    else:
        var = var + torch.cat([torch.full_like(n.running_var, n.eps) for n in norms])
    inv_std = torch.rsqrt(var)
    gamma = torch.cat([n.weight if n.weight is not None else torch.ones_like(n.running_var)
                       for n in norms])
    beta = torch.cat([n.bias if n.bias is not None else torch.zeros_like(n.running_var)
                      for n in norms])
    scale = gamma * inv_std
    shift = beta - torch.cat([n.running_mean for n in norms]) * scale
    sizes = [n.num_features for n in norms]
    out = []
    for (conv, _), s, b in zip(pairs, scale.split(sizes), shift.split(sizes), strict=True):
        if conv.bias is not None:
            b = b + conv.bias * s
        out.append((conv.weight * s.view(-1, 1, 1, 1), b))
    return out
