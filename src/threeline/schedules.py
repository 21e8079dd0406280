"""Learning-rate schedules as plain functions of training progress.

A schedule maps ``progress`` in [0, 1] (fraction of the run done) to a multiplier of the peak
learning rate. The optimizer's rates are set from it before every step.
"""

from __future__ import annotations

import itertools
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


def cycle_lengths(n_cycles: int, cycle_len: int = 1, cycle_mult: int = 1) -> list[int]:
    """Epochs in each SGDR cycle: ``cycle_len``, then each cycle ``cycle_mult`` times longer.

    Example:
        >>> cycle_lengths(3, cycle_len=1, cycle_mult=2)
        [1, 2, 4]
    """
    if n_cycles < 1 or cycle_len < 1 or cycle_mult < 1:
        raise ValueError(
            f"SGDR needs n_cycles >= 1, cycle_len >= 1 and cycle_mult >= 1 (whole numbers of "
            f"epochs), got {n_cycles!r}, {cycle_len!r}, {cycle_mult!r}."
        )
    return [int(cycle_len * cycle_mult**i) for i in range(n_cycles)]


def sgdr(lengths: list[int], div_final: float = 1e3) -> Schedule:
    """Cosine annealing with warm restarts: in each cycle, 1 -> ``1/div_final``, then back to 1.

    ``lengths`` are the cycles' epochs (see :func:`cycle_lengths`); progress is the fraction of
    ``sum(lengths)`` epochs done, so restarts fall on epoch boundaries.

    Example:
        >>> s = sgdr([1, 2])  # 3 epochs: a 1-epoch cycle, then a 2-epoch cycle
        >>> s(0.0), round(s(1 / 3 - 1e-9), 3), s(1 / 3), round(s(2 / 3), 2)
        (1.0, 0.001, 1.0, 0.5)
    """
    total = float(sum(lengths))
    bounds = [sum(lengths[:i]) / total for i in range(len(lengths) + 1)]  # cycle starts, then 1

    def schedule(progress: float) -> float:
        for start, end in itertools.pairwise(bounds):
            if progress < end:
                return _cos(1.0, 1 / div_final, (progress - start) / (end - start))
        return 1 / div_final

    return schedule


SCHEDULES: dict[str, Callable[..., Schedule]] = {"one_cycle": one_cycle, "constant": constant}


def get(name: str | Schedule) -> Schedule:
    """A schedule by name (``"one_cycle"``, ``"constant"``) or a callable passed through.

    Example:
        >>> get("one_cycle")(0.25)
        1.0
    """
    if callable(name):
        return name
    if name not in SCHEDULES:
        raise ValueError(
            f"Unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}, or pass "
            f"cycle_len= to fit for SGDR, or a function of progress in [0, 1]."
        )
    return SCHEDULES[name]()
