"""Learning-rate schedules as plain functions of training progress.

A schedule maps ``progress`` in [0, 1] (fraction of the run done) to a multiplier of the peak
learning rate. The optimizer's rates are set from it before every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[float], float]


def _cos(start: float, end: float, t: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


def one_cycle(pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5) -> Schedule:
    """Warm up from ``1/div`` to 1 over ``pct_start`` of the run, then anneal to ``1/div_final``.

    Example:
        >>> s = one_cycle()
        >>> round(s(0.0), 3), s(0.25), s(1.0) < 1e-4
        (0.04, 1.0, True)
    """

    def schedule(progress: float) -> float:
        if progress < pct_start:
            return _cos(1 / div, 1.0, progress / pct_start)
        return _cos(1.0, 1 / div_final, (progress - pct_start) / (1 - pct_start))

    return schedule


def constant() -> Schedule:
    """The same rate throughout.

    Example:
        >>> constant()(0.7)
        1.0
    """
    return lambda progress: 1.0


SCHEDULES: dict[str, Callable[..., Schedule]] = {"one_cycle": one_cycle, "constant": constant}


def get(name: str | Schedule) -> Schedule:
    """A schedule by name (``"one_cycle"``, ``"constant"``) or a callable passed through."""
    if callable(name):
        return name
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}.")
    return SCHEDULES[name]()
