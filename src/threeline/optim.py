"""The optimizer: AdamW (or SGD with Nesterov momentum) over layer groups, one peak rate per
group, no decay on norms and biases.

    groups = [list(body.parameters()), list(head.parameters())]   # from input to output
    lrs = group_lrs(slice(1e-4, 1e-2), len(groups))                # [1e-4, 1e-2]
    opt = adamw(groups, lrs, wd=0.01, device=torch.device("cuda"))
    opt = make("sgd", groups, lrs, wd=5e-4, device=torch.device("cuda"))
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

BETAS = (0.9, 0.99)


class EagerMethods:
    """torch.optim's methods without their ``torch.compile`` guards.

    Those guards import ``torch._dynamo`` the first time an optimizer is made or stepped: about
    4 s a process on a fresh GPU machine, 1.1-1.9 s on a 2-core CPU
    (``benchmarks/results/first-pass-nvidia-h100-2026-12-07.md``). They only matter while dynamo
    traces the optimizer, which threeline never asks for (its CUDA graphs capture the eager
    step), so these subclasses call the undecorated methods (``inspect.unwrap``). Mixed in
    before the torch class.
    """

    def add_param_group(self, param_group: dict) -> None:
        inspect.unwrap(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        inspect.unwrap(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict:
        return inspect.unwrap(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict) -> None:
        inspect.unwrap(torch.optim.Optimizer.load_state_dict)(self, state_dict)

    def step(self, closure=None):
        with torch.no_grad():  # what the dropped wrapper did: no graph of the update
            return inspect.unwrap(super().step)(self, closure)  # the torch class's own step


class AdamW(EagerMethods, torch.optim.AdamW):
    """``torch.optim.AdamW`` (the same update and kernels) without importing ``torch._dynamo``.

    Example:
        >>> lin = nn.Linear(3, 1)
        >>> opt, before = AdamW(lin.parameters(), lr=0.1, weight_decay=0), lin.bias.item()
        >>> lin(torch.ones(2, 3)).sum().backward(); opt.step()
        >>> isinstance(opt, torch.optim.AdamW), round(before - lin.bias.item(), 3)
        (True, 0.1)
    """


class SGD(EagerMethods, torch.optim.SGD):
    """``torch.optim.SGD`` without importing ``torch._dynamo`` (see :class:`EagerMethods`)."""


class LBFGS(EagerMethods, torch.optim.LBFGS):
    """``torch.optim.LBFGS`` without importing ``torch._dynamo`` (see :class:`EagerMethods`)."""


def check_positive(**values) -> None:
    """Raise a ValueError naming the first argument that is not a positive number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}.")


def group_lrs(lr: float | Sequence[float] | slice, n: int) -> list[float]:
    """One learning rate per layer group from a number, a list or a ``slice``.

    ``slice(lo, hi)`` spreads rates geometrically from the earliest group to the last;
    ``slice(hi)`` means ``hi / 10`` for every group but the last.

    Example:
        >>> [round(x, 6) for x in group_lrs(slice(1e-4, 1e-2), 3)]
        [0.0001, 0.001, 0.01]
        >>> group_lrs(slice(0.01), 3)
        [0.001, 0.001, 0.01]
    """
    if isinstance(lr, slice):
        lo, hi = lr.start, lr.stop
        if hi is None or lr.step is not None:
            raise ValueError(f"Use slice(lo, hi) or slice(hi) for learning rates, got {lr!r}.")
        check_positive(lr=hi, **({"lr_low": lo} if lo is not None else {}))
        if lo is None:
            return [hi / 10] * (n - 1) + [hi]
        if n == 1:
            return [float(hi)]
        return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        check_positive(lr=lr)
        if lr > 10:
            raise ValueError(f"lr={lr!r} is far above any rate that trains (AdamW rates are "
                             f"usually 1e-5 to 1e-1); run lr_find to pick one.")
        return [float(lr)] * n
    try:
        lrs = [float(x) for x in lr]
    except TypeError:
        raise TypeError(f"lr must be a number, a list of numbers or a slice, got "
                        f"{type(lr).__name__}.") from None
    if len(lrs) != n:
        raise ValueError(f"Got {len(lrs)} learning rates for {n} layer groups. Pass {n} rates, "
                         f"a slice(lo, hi), or one number.")
    check_positive(**{f"lr[{i}]": x for i, x in enumerate(lrs)})
    return lrs


def optimizer_groups(groups: list[list[nn.Parameter]], lrs: list[float],
                     weight_decay: float) -> list[dict]:
    """Two optimizer groups per trainable layer group (weight decay skips norms and biases).

    Each dict carries ``layer_group`` (its index in ``groups``) and ``base_lr`` (its peak rate).

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> [g["weight_decay"] for g in optimizer_groups([list(lin.parameters())], [0.1], 0.01)]
        [0.01, 0.0]
    """
    out = []
    for index, (params, lr) in enumerate(zip(groups, lrs, strict=False)):
        trainable = [p for p in params if p.requires_grad]
        decay = [p for p in trainable if p.ndim > 1]
        no_decay = [p for p in trainable if p.ndim <= 1]
        for chunk, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if chunk:
                out.append({"params": chunk, "weight_decay": wd, "lr": lr, "base_lr": lr,
                            "layer_group": index})
    return out


def _trainable_groups(groups: list[list[nn.Parameter]], lrs: list[float], wd: float,
                      device: torch.device, capturable: bool) -> list[dict]:
    """:func:`optimizer_groups`, checked not empty; rates as GPU tensors when ``capturable``."""
    param_groups = optimizer_groups(groups, lrs, wd)
    if not param_groups:
        raise ValueError("Nothing to train: every parameter is frozen. Call learn.unfreeze() "
                         "(or set requires_grad on the parameters to train).")
    if capturable:
        for group in param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
    return param_groups


def adamw(groups: list[list[nn.Parameter]], lrs: list[float], wd: float,
          device: torch.device, capturable: bool = False) -> AdamW:
    """AdamW over the trainable parameters of ``groups``; fused (one kernel) on CUDA.

    ``capturable``: for a CUDA graph (state and rates as GPU tensors, set with :func:`set_lr`).
    """
    param_groups = _trainable_groups(groups, lrs, wd, device, capturable)
    return AdamW(param_groups, lr=param_groups[-1]["lr"], betas=BETAS,
                             fused=capturable or device.type == "cuda", capturable=capturable)


def sgd(groups: list[list[nn.Parameter]], lrs: list[float], wd: float, device: torch.device,
        capturable: bool = False, momentum: float = 0.9) -> SGD:
    """SGD with Nesterov momentum over the trainable parameters of ``groups``; fused on CUDA.

    ``wd`` is L2 added to the gradient (PyTorch's SGD ``weight_decay``, e.g. 5e-4), not on norms
    and biases. ``capturable``: rates as GPU tensors for a CUDA graph (set with :func:`set_lr`).

    Example:
        >>> opt = sgd([list(nn.Linear(3, 2).parameters())], [0.1], 5e-4, torch.device("cpu"))
        >>> opt.defaults["nesterov"], [g["weight_decay"] for g in opt.param_groups]
        (True, [0.0005, 0.0])
    """
    param_groups = _trainable_groups(groups, lrs, wd, device, capturable)
    return SGD(param_groups, lr=param_groups[-1]["lr"], momentum=momentum,
                           nesterov=True, fused=device.type == "cuda")


OPTIMIZERS = {"adamw": adamw, "sgd": sgd}


def check_name(name: str) -> None:
    """Raise a ValueError unless ``name`` is one of :data:`OPTIMIZERS`."""
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; expected 'adamw' or 'sgd'. Set "
                         f"learn.optimizer = 'adamw' (the default) or 'sgd' (Nesterov momentum "
                         f"0.9; wd is then L2, e.g. 5e-4).")


def make(name: str, groups: list[list[nn.Parameter]], lrs: list[float], wd: float,
         device: torch.device, capturable: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``name`` ("adamw" or "sgd") over ``groups``: :func:`adamw` or :func:`sgd`.

    Example:
        >>> opt = make("sgd", [list(nn.Linear(3, 2).parameters())], [0.1], 0.0, torch.device("cpu"))
        >>> type(opt).__name__
        'SGD'
    """
    check_name(name)
    return OPTIMIZERS[name](groups, lrs, wd, device, capturable)


def set_lr(group: dict, value: float) -> None:
    """Set one optimizer group's learning rate, in place when it is a (graph-captured) tensor.

    Example:
        >>> group = {"lr": 0.1}
        >>> set_lr(group, 0.01); group["lr"]
        0.01
    """
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value
