"""A table as learner data: columns typed and encoded, split, batches gathered on the device.

    data = TabularData.from_csv("adult.csv", y="target")      # or from_parquet / from_df
    data.cat_names, data.cont_names, data.target.classes
    xb, yb = next(iter(data.batches("train", device, shuffle=True, seed=0)))
    # xb = (cats (B, C) int32, conts (B, K) float32); yb (B,) int64 or float32

The whole encoded table sits on the device once; the splits are index tensors, and a batch is a
gather with a slice of a shuffled index: no Python per row, no second copy of the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from threeline.tabular.columns import MAX_CARD, Columns, check_table, parse_dates, read_table
from threeline.tabular.preprocess import Preprocessor
from threeline.tabular.target import Target

SPLITS = ("train", "valid")


class TabularData:
    """An encoded table with its train/valid split. Build it with :meth:`from_csv`,
    :meth:`from_parquet` or :meth:`from_df`.

    Attributes: ``prep`` (the fitted :class:`Preprocessor`), ``target`` (:class:`Target`),
    ``cats`` (N, C) int32, ``conts`` (N, K) float32, ``y`` (N,), ``rows`` {split: positions}.

    Example:
        >>> df = pd.DataFrame({"a": ["x", "y"] * 20, "b": np.arange(40.0) / 3,
        ...                    "t": ["no", "yes"] * 20})
        >>> data = TabularData.from_df(df, y="t", valid_pct=0.25, seed=0)
        >>> data
        TabularData: 30 train, 10 valid rows; 1 categorical, 1 continuous; classification ...
    """

    graphable = True  # batches are fixed-shape gathers from device tensors (CUDA graph steps)

    def __init__(self, prep: Preprocessor, target: Target, cats: np.ndarray, conts: np.ndarray,
                 y: np.ndarray, rows: dict[str, np.ndarray], batch_size: int = 512):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        self.prep, self.target = prep, target
        self.cats, self.conts, self.y, self.rows = cats, conts, y, rows
        self.batch_size = batch_size
        self._on: dict = {}

    # ----------------------------------------------------------------- building

    @classmethod
    def from_csv(cls, path: str | Path, y: str, na_values: Sequence[str] = ("?",),
                 **kwargs) -> TabularData:
        """Read a CSV (``"?"`` and the usual blanks mean missing); see :meth:`from_df`."""
        return cls._build(read_table(path, na_values), y, **kwargs)

    @classmethod
    def from_parquet(cls, path: str | Path, y: str, **kwargs) -> TabularData:
        """Read a Parquet file; see :meth:`from_df`."""
        return cls._build(read_table(path), y, **kwargs)

    @classmethod
    def from_df(cls, df: pd.DataFrame, y: str, **kwargs) -> TabularData:
        """Build from a DataFrame (left unchanged).

        Args:
            y: the target column.
            cat, cont: columns forced to be categorical / continuous (the rest are inferred:
                text, booleans, whole numbers with at most ``max_card`` values -> categorical).
            dates: date columns, each expanded into year, month, week, day, day of week,
                day of year, month/quarter/year start and end flags, and elapsed days.
            valid_pct, seed: a seeded random validation share (default 0.2, 42); or
            valid_idx: row positions for validation; or
            valid_after: a date; rows later than it (in ``time_col``, default the only column
                of ``dates``) are the validation set.
            task: "classification" or "regression" (default inferred from the target);
            log_y: regression on log(1 + y).
            batch_size: rows per training batch (default 512).
        """
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"from_df expects a pandas DataFrame, got {type(df).__name__}; "
                            "read files with TabularData.from_csv or from_parquet.")
        return cls._build(Columns(df), y, **kwargs)

    @classmethod
    def _build(cls, cols: Columns, y: str, cat: Sequence[str] = (), cont: Sequence[str] = (),
               dates: Sequence[str] = (), valid_pct: float = 0.2, seed: int = 42,
               valid_idx: Sequence[int] | None = None, valid_after=None,
               time_col: str | None = None, task: str | None = None, log_y: bool = False,
               batch_size: int = 512, max_card: int = MAX_CARD) -> TabularData:
        check_table(cols, y)
        cat, cont, dates = _names(cat, "cat"), _names(cont, "cont"), _names(dates, "dates")
        for name in [*cat, *cont]:
            if name not in cols.names or name == y:
                raise ValueError(f"Column {name!r} in cat=/cont= is not a feature of the table; "
                                 f"expected one of {[n for n in cols.names if n != y][:30]}.")
        if set(cat) & set(cont):
            raise ValueError(f"Columns {sorted(set(cat) & set(cont))} are in both cat= and "
                             "cont=; put each in one.")
        y_series = cols.get(y)
        if y_series.isna().all():
            raise ValueError(f"Target column {y!r} is missing in all {cols.n_rows} rows; "
                             "expected values to learn from; check the column and na_values.")
        target = Target.fit(y_series, y, task, log_y, max_card)
        y_values = target.encode(y_series)
        del y_series
        cols.release(y)
        labelled = (y_values >= 0) if target.task == "classification" else ~np.isnan(y_values)
        split = _split(cols, valid_pct, seed, valid_idx, valid_after, time_col, list(dates))
        rows = {"train": np.flatnonzero(~split & labelled),
                "valid": np.flatnonzero(split & labelled)}
        for name, r in rows.items():
            if len(r) == 0:
                raise ValueError(f"The {name} split has no labelled rows; expected some in "
                                 "each; change valid_pct / valid_idx / valid_after.")
        target.fit_range(y_values, rows["train"])
        prep, cats, conts = Preprocessor.fit(cols, rows["train"], [y], cat, cont, dates,
                                             max_card)
        return cls(prep, target, cats, conts, y_values, rows, batch_size)

    # ----------------------------------------------------------------- facts

    @property
    def cat_names(self) -> list[str]:
        return self.prep.cat_names

    @property
    def cont_names(self) -> list[str]:
        return self.prep.cont_names

    def __len__(self) -> int:
        return len(self.rows["train"])

    def __repr__(self) -> str:
        t = self.target
        what = (f"classification of {t.name!r} ({len(t.classes)} classes)"
                if t.task == "classification" else f"regression of {t.name!r}"
                + (" (log)" if t.log else ""))
        return (f"TabularData: {len(self.rows['train'])} train, {len(self.rows['valid'])} valid "
                f"rows; {len(self.cat_names)} categorical, {len(self.cont_names)} continuous; "
                f"{what}")

    # ----------------------------------------------------------------- the data protocol

    def steps(self, split: str) -> int:
        n = len(self.rows[_check(split)])
        if split == "train":
            return max(1, n // self.batch_size)  # drop the last partial batch: fixed shapes
        return -(-n // (self.batch_size * 4))

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(cats, conts, y, train rows, valid rows) on ``device``, moved there once and kept."""
        device = torch.device(device)
        if device not in self._on:
            self._on = {device: tuple(torch.as_tensor(a).to(device) for a in (
                self.cats, self.conts, self.y, self.rows["train"], self.rows["valid"]))}
        return self._on[device]

    def batches(self, split: str, device: torch.device, shuffle: bool,
                seed: int) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        cats, conts, y, train, valid = self.tensors(device)
        index = train if _check(split) == "train" else valid  # (N_split,) int64
        if shuffle:
            generator = torch.Generator(device=index.device).manual_seed(seed)
            index = index[torch.randperm(len(index), device=index.device, generator=generator)]
        bs = self.batch_size if split == "train" else self.batch_size * 4
        if split == "train" and len(index) >= bs:
            index = index[:len(index) // bs * bs]
        for b in index.split(bs):
            yield (cats[b], conts[b]), y[b]  # (B, C) int32, (B, K) float32; (B,)


def _check(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}.")
    return split


def _names(value, arg: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f"{arg}= takes column names (strings), got {value!r}.")
    return list(value)


def _split(cols: Columns, valid_pct: float, seed: int, valid_idx, valid_after,
           time_col: str | None, dates: list[str]) -> np.ndarray:
    """(N,) bool: True for validation rows."""
    n = cols.n_rows
    is_valid = np.zeros(n, dtype=bool)
    if valid_idx is not None and valid_after is not None:
        raise ValueError("Pass valid_idx= or valid_after=, not both.")
    if valid_idx is not None:
        idx = np.asarray(valid_idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or len(idx) == 0:
            raise ValueError("valid_idx must be a non-empty list of row positions (integers).")
        if idx.min() < -n or idx.max() >= n:
            raise ValueError(f"valid_idx holds positions outside the table's {n} rows "
                             f"(range {idx.min()}..{idx.max()}); expected 0..{n - 1}.")
        is_valid[idx] = True
        return is_valid
    if valid_after is not None:
        col = time_col or (dates[0] if len(dates) == 1 else None)
        if col is None or col not in cols.names:
            raise ValueError("valid_after= needs the date column to split on: pass time_col= "
                             f"(one of the table's columns), or a single dates= column; got "
                             f"time_col={time_col!r}, dates={dates}.")
        try:
            cutoff = pd.Timestamp(valid_after)
        except (ValueError, TypeError):
            raise ValueError(f"valid_after={valid_after!r} is not a date; expected e.g. "
                             "'2015-06-01'.") from None
        if cutoff.tzinfo is not None:
            cutoff = cutoff.tz_convert("UTC").tz_localize(None)
        when = parse_dates(cols.get(col), col)
        return (when > cutoff).to_numpy(dtype=bool, na_value=False)
    if isinstance(valid_pct, bool) or not isinstance(valid_pct, (int, float)) \
            or not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct must be a number between 0 and 1 (exclusive), got "
                         f"{valid_pct!r}.")
    order = np.random.default_rng(seed).permutation(n)
    is_valid[order[:max(1, round(valid_pct * n))]] = True
    return is_valid
