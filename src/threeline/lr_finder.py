"""The learning-rate finder: a short run with a growing rate, the loss it gives, a suggestion.

One mini-batch per step; the rate grows from ``start_lr`` to ``end_lr`` (evenly on a log scale, or
linearly). The loss is smoothed with a debiased exponential moving average, and the run stops
once the smoothed loss exceeds 4 x its best or is not a number. Afterwards the model (weights,
BatchNorm statistics, gradients, trainable flags, train/eval modes), the learner's optimizer and
the random number generators are exactly as before.

The suggestion is the rate where the smoothed loss falls fastest against log(lr), looking only
at the part of the curve before its minimum. Why this rule: there training makes the most progress
per step while the loss is still reliably improving; the minimum itself sits at the edge of
divergence (too high for a whole run), and "minimum / 10" depends on an arbitrary factor.

    result = learn.lr_find()
    result.suggestion, result.plot()
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from threeline import batches

if TYPE_CHECKING:
    from threeline.learner import Learner

RULE = ("steepest: the rate where the smoothed loss falls fastest against log(lr), before the "
        "minimum; the loss improves most there while still well below the divergence point")


@dataclass
class LRFinderResult:
    """What :meth:`Learner.lr_find` recorded.

    Attributes:
        lrs: the rate of each step.
        losses: the debiased, smoothed loss after each step.
        raw_losses: the mini-batch loss of each step.
        suggestion: the suggested learning rate.
        suggestion_index: the step of the suggestion.
        rule: how the suggestion was chosen, and why.
        stopped_early: True when the loss diverged before ``num_it`` steps.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float
    suggestion_index: int
    stopped_early: bool
    rule: str = field(default=RULE)

    def __repr__(self) -> str:
        return (f"LRFinderResult({len(self.lrs)} steps, lr {self.lrs[0]:.2g} to "
                f"{self.lrs[-1]:.2g}, suggestion {self.suggestion:.2e}, "
                f"stopped_early={self.stopped_early})")

    def plot(self, ax=None):
        """Loss against learning rate on a log axis, the suggestion marked; returns the axes.

        Example:
            >>> r = LRFinderResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0], [1.0, 0.5, 2.0], 1e-2, 1,
            ...                    False)
            >>> r.plot().get_xscale()
            'log'
        """
        ax = ax or _new_axes()
        ax.plot(self.lrs, self.losses)
        ax.plot([self.suggestion], [self.losses[self.suggestion_index]], "o", color="red",
                label=f"suggestion {self.suggestion:.1e} (steepest fall)")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("loss (smoothed)")
        ax.legend()
        return ax

    def plot_lr(self, ax=None):
        """Learning rate against iteration; returns the axes.

        Example:
            >>> r = LRFinderResult([1e-3, 1e-2], [1.0, 0.5], [1.0, 0.5], 1e-3, 0, False)
            >>> r.plot_lr().get_ylabel()
            'learning rate'
        """
        ax = ax or _new_axes()
        ax.plot(range(len(self.lrs)), self.lrs)
        ax.set_xlabel("iteration")
        ax.set_ylabel("learning rate")
        return ax


def _new_axes():
    import matplotlib.pyplot as plt

    return plt.subplots()[1]


def lr_schedule(start_lr: float, end_lr: float, num_it: int, mode: str) -> list[float]:
    """The rates tried, one per step.

    Example:
        >>> lr_schedule(1e-3, 1e-1, 3, "exp")
        [0.001, 0.01, 0.1]
        >>> lr_schedule(0.0, 1.0, 3, "linear")
        [0.0, 0.5, 1.0]
    """
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}.")
    if not 0 <= start_lr < end_lr or (mode == "exp" and start_lr == 0):
        raise ValueError(
            f"Need 0 < start_lr < end_lr (start_lr may be 0 in linear mode), got start_lr="
            f"{start_lr!r}, end_lr={end_lr!r}.")
    if not isinstance(num_it, int) or num_it < 2:
        raise ValueError(f"num_it must be an int >= 2, got {num_it!r}.")
    steps = np.linspace(0, 1, num_it)
    if mode == "exp":
        out = start_lr * (end_lr / start_lr) ** steps
    else:
        out = start_lr + (end_lr - start_lr) * steps
    return [float(round(x, 15)) for x in out]


def suggest(lrs: list[float], losses: list[float]) -> int:
    """The index of the steepest fall of ``losses`` against log(lrs), before their minimum.

    The slope at each step is a least-squares fit over a window of steps either side (an eighth
    of the steps before the minimum, at least one), and the first tenth of the steps, where the
    average still rests on few batches, is skipped, so one noisy step cannot win.

    Example:
        >>> suggest([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.95, 0.4, 0.3, 5.0])
        2
    """
    y = np.asarray(losses, dtype=np.float64)
    x = np.log(np.asarray(lrs, dtype=np.float64).clip(min=1e-30))
    last = int(np.argmin(np.where(np.isfinite(y), y, np.inf)))  # the minimum of the loss
    if last < 2:
        return max(0, last)
    k, skip = max(1, last // 8), min(last - 1, len(y) // 10)
    best, best_slope = last, np.inf
    for i in range(skip, last + 1):
        a, b = max(skip, i - k), min(last, i + k)
        if b > a and x[b] > x[a]:
            slope = np.polyfit(x[a:b + 1], y[a:b + 1], 1)[0]
            if slope < best_slope:
                best, best_slope = i, slope
    return best


def lr_find(learn: Learner, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
            mode: str = "exp", wd: float = 0.01, beta: float = 0.98,
            diverge: float = 4.0) -> LRFinderResult:
    """Run the finder on ``learn`` (see :meth:`threeline.Learner.lr_find`) and restore it.

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()),
        ...                            precompute=True, progress=False)
        >>> len(lr_find(learn, num_it=20).lrs) <= 20
        True
    """
    schedule = lr_schedule(start_lr, end_lr, num_it, mode)
    if learn.precompute:
        learn.features("train")
    saved = _snapshot(learn)
    lrs, losses, raw = [], [], []
    average, best = 0.0, math.inf
    stopped = False
    warmup = max(5, num_it // 10)
    devices = [learn.device] if learn.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(learn.seed)  # dropout: the same curve whatever ran before
            optimizer = learn._optimizer([schedule[0]] * len(learn.layer_groups()), wd)
            trainable = learn.head if learn.precompute else learn.model
            batches = _endless(learn)
            learn._set_train_mode(trainable)
            for step, lr in enumerate(schedule):
                for group in optimizer.param_groups:
                    group["lr"] = lr
                xb, yb = next(batches)
                loss = float(learn._train_step(trainable, optimizer, xb, yb))
                average = beta * average + (1 - beta) * loss
                smooth = average / (1 - beta ** (step + 1))  # debiased
                lrs.append(lr)
                raw.append(loss)
                losses.append(smooth)
                settled = step >= warmup  # the first smoothed values are too noisy to judge
                if not math.isfinite(smooth) or (settled and smooth > diverge * best):
                    stopped = True
                    break
                best = min(best, smooth)
    finally:
        _restore(learn, saved)
    index = suggest(lrs, losses)
    return LRFinderResult(lrs, losses, raw, lrs[index], index, stopped)


def _endless(learn: Learner):
    """Training batches, epoch after epoch."""
    while True:
        yield from batches.train_batches(learn)


def _snapshot(learn: Learner) -> dict:
    modules = [learn.body, learn.head]
    params = [p for m in modules for p in m.parameters()]
    return {
        "state": [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules],
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in params],
        "requires_grad": [p.requires_grad for p in params],
        "training": [[sub.training for sub in m.modules()] for m in modules],
        "opt": learn.opt,
        "opt_state": copy.deepcopy(learn.opt.state_dict()) if learn.opt is not None else None,
        "precompute": learn._precompute,
    }


def _restore(learn: Learner, saved: dict) -> None:
    modules = [learn.body, learn.head]
    params = [p for m in modules for p in m.parameters()]
    with torch.no_grad():
        for module, state in zip(modules, saved["state"], strict=False):
            module.load_state_dict(state)
        for p, grad, flag in zip(params, saved["grads"], saved["requires_grad"], strict=False):
            p.grad = grad
            p.requires_grad_(flag)
    for module, flags in zip(modules, saved["training"], strict=False):
        for sub, flag in zip(module.modules(), flags, strict=False):
            sub.train(flag)
    learn.opt = saved["opt"]
    if learn.opt is not None:
        learn.opt.load_state_dict(saved["opt_state"])
    learn._precompute = saved["precompute"]
