"""The learning-rate finder: a short run with a growing rate, the loss it gives, a suggestion.

One mini-batch per step; the rate grows from ``start_lr`` to ``end_lr`` (evenly on a log scale, or
linearly). The loss is smoothed with a debiased exponential moving average, and the run stops
once the smoothed loss exceeds 4 x its best or is not a number. Afterwards the model (weights,
BatchNorm statistics, gradients, trainable flags, train/eval modes), the learner's optimizer and
the random number generators are exactly as before.

The suggestion is ten times the rate where the smoothed loss falls fastest against log(lr)
(before its minimum), and never more than the minimum's rate / 10. Why this rule: the steepest
fall marks where training starts to make real progress, and ``fit`` runs one cycle that starts
at a 25th of its peak and anneals to almost nothing, so its peak belongs about a decade above
that point. Measured by ``benchmarks/lr_suggestion.py`` (heads on cached activations, three
small real folders, efficientnet_lite0 and lite2; ``benchmarks/results/lr_suggestion-*.md``):
this rule came within 0-0.65 points of the best fixed rate, where the steepest point itself
lost up to 1.31 points (lite0) and 1.25 (lite2), and "minimum / 10" lost 31-48 points: the
smoothed loss of a head still falls at a rate of 10, so its minimum says nothing about
divergence there.

    result = learn.lr_find()
    result.suggestion, result.plot()
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from threeline import distributed
from threeline.callbacks import Callback, CancelFit
from threeline.optim import set_lr

if TYPE_CHECKING:
    from threeline.plots import PlotFigure
    from threeline.protocol import TrainingLearner

RULE = ("steepest x 10: ten times the rate where the smoothed loss falls fastest against log(lr) "
        "(before the minimum), at most the minimum's rate / 10; fit's one cycle starts at a "
        "25th of its peak, so its peak belongs about a decade above the steepest fall")
FACTOR = 10.0  # the suggestion over the steepest fall's rate (benchmarks/lr_suggestion.py)


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

    def plot(self, save: str | os.PathLike | None = None) -> PlotFigure:
        """Loss against learning rate on a log axis, the suggestion marked; returns the figure.

        Example:
            >>> r = LRFinderResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0], [1.0, 0.5, 2.0], 1e-2, 1,
            ...                    False)
            >>> r.plot().axes[0].get_xscale()
            'log'
        """
        from threeline.plots import new_figure, save_png

        fig = new_figure(6, 4)
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses)
        ax.plot([self.suggestion], [self.losses[self.suggestion_index]], "o", color="red",
                label=f"suggestion {self.suggestion:.1e}")
        ax.axvline(self.suggestion, color="red", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("loss (smoothed)")
        ax.legend()
        save_png(fig, save)
        return fig

    def plot_lr(self, save: str | os.PathLike | None = None) -> PlotFigure:
        """Learning rate against iteration; returns the figure.

        Example:
            >>> r = LRFinderResult([1e-3, 1e-2], [1.0, 0.5], [1.0, 0.5], 1e-3, 0, False)
            >>> r.plot_lr().axes[0].get_ylabel()
            'learning rate'
        """
        from threeline.plots import new_figure, save_png

        fig = new_figure(6, 4)
        ax = fig.add_subplot()
        ax.plot(range(len(self.lrs)), self.lrs)
        ax.set_xlabel("iteration")
        ax.set_ylabel("learning rate")
        save_png(fig, save)
        return fig


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
    """The index of the suggested rate: the rate tried nearest to :data:`FACTOR` times the
    steepest fall's (:func:`steepest`), at most the minimum's rate / 10.

    Example:
        >>> lrs = [10 ** (k / 4) for k in range(-20, 5)]  # 1e-5 to 10, four a decade
        >>> losses = [1.0] * 8 + [0.9, 0.6, 0.4, 0.35] + [0.3 - k / 100 for k in range(12)] + [5.0]
        >>> steepest(lrs, losses), suggest(lrs, losses)
        (9, 13)
    """
    y = np.asarray(losses, dtype=np.float64)
    x = np.log(np.asarray(lrs, dtype=np.float64).clip(min=1e-30))
    low = int(np.argmin(np.where(np.isfinite(y), y, np.inf)))
    target = min(x[steepest(lrs, losses)] + math.log(FACTOR), x[low] - math.log(10))
    return int(np.argmin(np.abs(x[:low + 1] - target)))


def steepest(lrs: list[float], losses: list[float]) -> int:
    """The index of the steepest fall of ``losses`` against log(lrs), before their minimum.

    The slope at each step is a least-squares fit over a window of steps either side (an eighth
    of the steps before the minimum, at least one), and the first tenth of the steps, where the
    average still rests on few batches, is skipped, so one noisy step cannot win.

    Example:
        >>> steepest([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.95, 0.4, 0.3, 5.0])
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


class FindRate(Callback):
    """The finder as a callback: sets each step's rate, records the loss, stops the fit after
    the last rate or once the smoothed loss diverges."""

    def __init__(self, schedule: list[float], beta: float, diverge: float):
        self.schedule, self.beta, self.diverge = schedule, beta, diverge
        self.warmup = max(5, len(schedule) // 10)  # the first smoothed values are too noisy
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.raw: list[float] = []
        self.average, self.best, self.stopped = 0.0, math.inf, False

    def on_batch_begin(self, learn: TrainingLearner) -> None:
        for group in learn.opt.param_groups:
            set_lr(group, self.schedule[learn.step])

    def on_batch_end(self, learn: TrainingLearner, loss: torch.Tensor) -> None:
        # the finder must look at every loss; with several processes, their mean (the same
        # curve and the same suggestion in every process)
        step, value = learn.step, float(distributed.mean(loss, learn.world))
        self.average = self.beta * self.average + (1 - self.beta) * value
        smooth = self.average / (1 - self.beta ** (step + 1))  # debiased
        self.lrs.append(self.schedule[step])
        self.raw.append(value)
        self.losses.append(smooth)
        if not math.isfinite(smooth) or (step >= self.warmup and smooth > self.diverge * self.best):
            self.stopped = True
            raise CancelFit
        self.best = min(self.best, smooth)
        if step + 1 == len(self.schedule):
            raise CancelFit


def lr_find(learn: TrainingLearner, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
            mode: str = "exp", wd: float = 0.01, beta: float = 0.98,
            diverge: float = 4.0) -> LRFinderResult:
    """Run the finder on ``learn`` (see :meth:`threeline.Learner.lr_find`) and restore it.

    A short ``fit`` with :class:`FindRate` as its only callback: no validation, no table, no
    checkpoints; the model, optimizer and random state are put back afterwards.

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()),
        ...                            precompute=True, progress=False)
        >>> len(lr_find(learn, num_it=20).lrs) <= 20
        True
    """
    schedule = lr_schedule(start_lr, end_lr, num_it, mode)
    finder = FindRate(schedule, beta, diverge)
    saved = _snapshot(learn)
    devices = [learn.device] if learn.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(learn.seed)  # dropout: the same curve whatever ran before
            per_epoch = learn.steps_per_process()
            epochs = -(-num_it // max(1, per_epoch))
            learn.run_fit([schedule[0]] * len(learn.layer_groups()), epochs, wd, [finder],
                          validate=False)
    finally:
        _restore(learn, saved)
    if not finder.lrs:
        raise RuntimeError("lr_find ran no step: the training data yields no batch.")
    index = suggest(finder.lrs, finder.losses)
    return LRFinderResult(finder.lrs, finder.losses, finder.raw, finder.lrs[index], index,
                          finder.stopped)


def _snapshot(learn: TrainingLearner) -> dict:
    model = learn.model
    params = list(model.parameters())
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in params],
        "requires_grad": [p.requires_grad for p in params],
        "training": [sub.training for sub in model.modules()],
        "opt": learn.opt,
        "opt_state": copy.deepcopy(learn.opt.state_dict()) if learn.opt is not None else None,
        "history": list(learn.history),
    }


def _restore(learn: TrainingLearner, saved: dict) -> None:
    model = learn.model
    params = list(model.parameters())
    with torch.no_grad():
        model.load_state_dict(saved["state"])
        for p, grad, flag in zip(params, saved["grads"], saved["requires_grad"], strict=True):
            p.grad = grad
            p.requires_grad_(flag)
    for sub, flag in zip(model.modules(), saved["training"], strict=True):
        sub.train(flag)
    learn.opt = saved["opt"]
    if learn.opt is not None:
        learn.opt.load_state_dict(saved["opt_state"])
    learn.history[:] = saved["history"]
