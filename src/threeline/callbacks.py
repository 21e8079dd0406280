"""Callbacks: small objects that the training loop calls at six moments.

    class PrintLoss(Callback):
        def on_epoch_end(self, learn, row):
            print(row["train_loss"])

    learn.fit(0.01, 3, callbacks=[PrintLoss()])

Every event is optional. ``on_batch_end`` gets the batch's loss as a tensor on the device:
reading it (``float(loss)``) makes the host wait for the GPU, so only the lr finder does. Raise
:class:`CancelFit` from any event to end the fit early; it ends as a normal fit. Ctrl-C ends it as
``interrupted``: the checkpoint callback then puts back the last finished epoch's weights.
The schedule, the epoch table and the checkpoints are callbacks themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

import torch

from threeline import optim
from threeline.progress import EpochTable
from threeline.schedules import Schedule

if TYPE_CHECKING:
    from threeline.checkpoints import Checkpoints
    from threeline.protocol import TrainingLearner


class CancelFit(Exception):
    """Raise from a callback to end ``fit`` early and cleanly."""


class Callback:
    """Base class: override the events you need."""

    def on_fit_begin(self, learn: TrainingLearner) -> None:
        """Before the first epoch (``learn.opt``, ``learn.total_steps`` are set)."""

    def on_epoch_begin(self, learn: TrainingLearner) -> None:
        """Before each epoch's first batch (``learn.epoch`` is set)."""

    def on_batch_begin(self, learn: TrainingLearner) -> None:
        """Before each optimizer step (``learn.step`` is set)."""

    def on_batch_end(self, learn: TrainingLearner, loss: torch.Tensor) -> None:
        """After each optimizer step; ``loss`` is a () tensor on the device."""

    def on_epoch_end(self, learn: TrainingLearner, row: dict) -> None:
        """After validation; ``row`` holds the epoch's losses, metrics and seconds."""

    def on_fit_end(self, learn: TrainingLearner, interrupted: bool) -> None:
        """After the last epoch, after CancelFit, or after Ctrl-C (``interrupted``)."""


class ScheduleRates(Callback):
    """Sets every group's rate to ``base_lr * schedule(progress)`` before each step.

    Example:
        >>> from threeline.schedules import constant
        >>> ScheduleRates(constant()).schedule(0.5)
        1.0
    """

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def on_batch_begin(self, learn: TrainingLearner) -> None:
        scale = self.schedule(min(learn.step / max(learn.total_steps, 1), 1.0))
        for group in learn.opt.param_groups:
            optim.set_lr(group, group["base_lr"] * scale)


class ShowEpochs(Callback):
    """Prints the epoch table: a header at the first epoch, then one row per epoch."""

    def __init__(self, columns: list[str], stream: TextIO | None = None):
        self.table = EpochTable(columns, stream)

    def on_epoch_end(self, learn: TrainingLearner, row: dict) -> None:
        self.table.row({**row, "time": f"{row['time']:.2f}s"})


class SaveCheckpoints(Callback):
    """Saves ``last`` after every epoch (``best`` when the valid loss improves) in the
    background; on Ctrl-C puts ``last`` back and prints where the weights are."""

    def __init__(self, store: Checkpoints):
        self.store = store

    def on_fit_begin(self, learn: TrainingLearner) -> None:
        self.store.begin_fit()

    def on_epoch_end(self, learn: TrainingLearner, row: dict) -> None:
        self.store.end_epoch(learn, row)

    def on_fit_end(self, learn: TrainingLearner, interrupted: bool) -> None:
        if interrupted:
            print(self.store.restore_last(learn), flush=True)
        self.store.wait()  # the last epoch's weights are on disk when fit returns


def emit(callbacks: list[Callback], event: str, *args) -> None:
    """Call ``event`` (e.g. ``"on_epoch_end"``) on each callback in turn."""
    for callback in callbacks:
        getattr(callback, event)(*args)
