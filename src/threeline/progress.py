"""Progress that suits where it is shown: a bar in a terminal or a notebook, clean lines in logs.

``tqdm`` draws the bar (its notebook widget inside Jupyter when ipywidgets is installed). When
output is not a terminal (CI logs, ``> file``), a bar would fill the log with carriage returns,
so :class:`Progress` prints at most a few plain lines instead.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from tqdm import tqdm


def in_notebook() -> bool:
    """True inside a Jupyter kernel."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def interactive(stream: TextIO | None = None) -> bool:
    """True when a live progress bar can be drawn on ``stream`` (default: stderr)."""
    stream = stream or sys.stderr
    return in_notebook() or (hasattr(stream, "isatty") and stream.isatty())


def _make_bar(**kwargs) -> tqdm:
    """The notebook widget inside Jupyter when ipywidgets is there, else the text bar."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_bar

        return notebook_bar(**kwargs)
    return tqdm(**kwargs)


class Progress:
    """Count work done: a live bar when interactive, else a line every ``every`` fraction.

    Example:
        >>> with Progress(total=100, desc="demo", enabled=False) as bar:
        ...     bar.update(100)
    """

    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool = True,
                 every: float = 0.25, stream: TextIO | None = None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.done, self.start, self.next_report = 0, time.perf_counter(), every
        self.bar = None
        self.lines = enabled and not interactive(self.stream)
        if enabled and not self.lines:
            self.bar = _make_bar(total=total, desc=desc, unit=unit, leave=False,
                                 dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and self.total and self.done / self.total >= self.next_report:
            while self.done / self.total >= self.next_report:
                self.next_report += self.every
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({rate:.0f} {self.unit}/s)",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def epoch_columns(metric_names: Iterable[str]) -> list[str]:
    """The epoch table's columns for these metrics.

    Example:
        >>> epoch_columns(["accuracy"])
        ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time']
    """
    return ["epoch", "train_loss", "valid_loss", *metric_names, "time"]


class EpochTable:
    """Prints the epoch table: a header once, then one aligned row per epoch.

    Example:
        >>> table = EpochTable(["epoch", "train_loss"])
        >>> table.row({"epoch": 0, "train_loss": 0.5})
        epoch  train_loss
        0      0.500000
    """

    def __init__(self, columns: list[str], stream: TextIO | None = None):
        self.columns, self.stream, self.started = columns, stream, False
        self.widths = [max(len(c), 10) if c != "epoch" else 5 for c in columns]

    def row(self, values: dict) -> None:
        out = self.stream or sys.stdout
        if not self.started:
            header = (c.ljust(w) for c, w in zip(self.columns, self.widths, strict=True))
            print("  ".join(header).rstrip(), file=out, flush=True)
            self.started = True
        cells = [_format(values.get(c)) for c in self.columns]
        line = (v.ljust(w) for v, w in zip(cells, self.widths, strict=True))
        print("  ".join(line).rstrip(), file=out, flush=True)


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.6f}"
    return "" if value is None else str(value)
