"""Weights saved during ``fit``: ``last`` after every epoch, ``best`` when valid loss improves.

Each is a pair of files (``last.safetensors`` + ``last.json``, the format of ``learn.save``),
written atomically, so a run killed at any moment leaves the previous pair intact. On Ctrl-C the
learner goes back to ``last``: the weights after the last finished epoch.

The weights are copied to the CPU at the end of the epoch and written by a background thread
while the next epoch trains; anything that reads them back waits for the write first.

Going back is shielded from Ctrl-C (:func:`shielded`): pressing it again while the weights are
read back is noted and ignored, so the learner never holds half of ``last``.

Unless a folder is given, checkpoints go to ``<cache>/checkpoints/<time>-<name>-<pid>`` (see
:func:`threeline.cache_dir`); only the :data:`KEEP` most recent of those folders are kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from threeline import saving
from threeline.saving import cache_dir

if TYPE_CHECKING:
    from threeline.protocol import TrainingLearner

KEEP = 5


class Checkpoints:
    """Where and what one learner saved. ``folder=None`` picks a fresh folder in the cache.

    Example:
        >>> Checkpoints("runs/cats/checkpoints").last
        PosixPath('runs/cats/checkpoints/last')
    """

    def __init__(self, folder: str | os.PathLike | None = None, enabled: bool = True):
        self._folder = Path(folder).expanduser() if folder is not None else None
        self.enabled = enabled
        self.best_loss: float | None = None
        self.best_epoch: int | None = None
        self.saved_epoch: int | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoints")
        self._pending: Future | None = None
        self._body: dict | None = None  # the body's CPU copy, while it stays frozen

    def wait(self) -> None:
        """Block until the last checkpoint is on disk (re-raising a failed write's error)."""
        if self._pending is not None:
            self._pending.result()

    def folder(self, learn: TrainingLearner) -> Path:
        """The folder, creating the default one on first use."""
        if self._folder is None:
            root = cache_dir() / "checkpoints"
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self._folder = root / f"{stamp}-{learn.name}-{os.getpid()}-{id(learn) % 10_000:04d}"
            self._folder.mkdir(parents=True, exist_ok=True)
            _prune(root, keep=KEEP, current=self._folder)
        return self._folder

    @property
    def last(self) -> Path | None:
        """The base name of the last epoch's files (None before the first save)."""
        return None if self._folder is None else self._folder / "last"

    @property
    def best(self) -> Path | None:
        """The base name of the best epoch's files (None before the first save)."""
        return None if self._folder is None else self._folder / "best"

    def begin_fit(self) -> None:
        """Forget the body's copy: a new ``fit`` may train it, or it changed in between."""
        self._body = None

    def end_epoch(self, learn: TrainingLearner, row: dict) -> None:
        """Save ``last``; also ``best`` when this epoch's valid loss is the lowest so far.

        Tensors under ``learn.static_state_prefixes()`` (a frozen body while only the head
        trains) are copied to the CPU once per fit instead of once per epoch.
        """
        if not self.enabled:
            return
        folder = self.folder(learn)
        epoch, loss = row.get("epoch"), row.get("valid_loss")
        static = learn.static_state_prefixes()
        snap = learn.snapshot(self._body if static else None, epoch=epoch, valid_loss=loss)
        self._body = {k: v for k, v in snap[0].items() if k.startswith(static)} if static else None
        loss = float(loss) if loss is not None else math.nan
        best = self.best_loss is None or math.isnan(self.best_loss) or loss < self.best_loss
        self.wait()  # one write at a time, in order
        self._pending = self._writer.submit(_write, snap, folder, best)
        self.saved_epoch = epoch
        if best:
            self.best_loss, self.best_epoch = loss, epoch

    def restore_last(self, learn: TrainingLearner) -> str:
        """Put the ``last`` weights back into ``learn``; returns a line saying what happened."""
        finished = len(learn.history) - 1
        if not self.enabled or self.saved_epoch is None or self.last is None:
            if finished < 0:
                return "Interrupted before any epoch finished: the weights are partly trained."
            return (f"Interrupted: the model holds the weights of a partly trained epoch "
                    f"{finished + 1} (no checkpoints were saved).")
        with shielded("Ctrl-C: going back to the last finished epoch; one moment."):
            try:
                self.wait()
                _, tensors = saving.read_model(self.last)  # checked against its SHA-256
                learn.load_state_dict(tensors)
            except saving.ModelFileError as err:
                return f"Interrupted, and the last checkpoint could not be read back: {err}"
        where = f"Weights: {self.last}.safetensors"
        if self.best is not None and self.best_epoch is not None:
            where += f"; best (epoch {self.best_epoch}, valid_loss {self.best_loss:.4f}): " \
                     f"{self.best}.safetensors"
        return (f"Interrupted: went back to the weights after epoch {self.saved_epoch}, the last "
                f"finished one; the learner is ready to use. {where}.")


@contextlib.contextmanager
def shielded(note: str = "Ctrl-C: finishing writing first; one moment.") -> Iterator[list[int]]:
    """Hold off Ctrl-C inside the block: each press is counted (the list yielded) and the first
    prints ``note``, instead of raising KeyboardInterrupt half-way through. Only the main
    thread receives signals; elsewhere this does nothing.

    Example:
        >>> with shielded() as presses:
        ...     pass
        >>> presses
        []
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    presses: list[int] = []

    def hold(signum: int, frame) -> None:
        presses.append(signum)
        if len(presses) == 1:
            print(note, file=sys.stderr, flush=True)

    old = signal.signal(signal.SIGINT, hold)
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, old)


def _write(snap: tuple, folder: Path, best: bool) -> None:
    saving.write_model(folder / "last", *snap)
    if best:
        for suffix in (".safetensors", ".json"):  # a file copy: cheaper than saving again
            _copy(folder / f"last{suffix}", folder / f"best{suffix}")


def _copy(source: Path, target: Path) -> None:
    """Copy through a temporary file and a rename, so ``target`` is never half written."""
    saving.atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def _prune(root: Path, keep: int, current: Path) -> None:
    """Delete run folders beyond the ``keep`` newest under ``root``, unless written lately."""
    runs = [p for p in root.iterdir() if p.is_dir() and p != current and (p / "last.json").exists()]
    runs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    hour_ago = time.time() - 3600
    for old in runs[keep - 1:]:
        if old.stat().st_mtime < hour_ago:  # a folder written lately may belong to a live run
            shutil.rmtree(old, ignore_errors=True)
