"""The target column: classification (classes) or regression (numbers, optionally on a log
scale), inferred from its values and stored as JSON with the model.

    target = Target.fit(df["target"], "target")       # strings -> classification
    codes = target.encode(df["target"])               # (N,) int64 class indices, -1 if missing
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from threeline.tabular.columns import MAX_CARD, check_finite

TASKS = ("classification", "regression")


@dataclass
class Target:
    """What the model predicts. ``classes`` for classification (sorted, str or float);
    ``log`` and ``y_range`` (the sigmoid's range, on the model's scale) for regression.

    Example:
        >>> t = Target.fit(pd.Series(["b", "a", "b"]), "y")
        >>> t.task, t.classes, t.encode(pd.Series(["a", "b", None])).tolist()
        ('classification', ['a', 'b'], [0, 1, -1])
    """

    name: str
    task: str
    kind: str = "text"  # how classes compare: "text" or "number"
    classes: list | None = None
    log: bool = False
    y_range: list | None = None

    @classmethod
    def fit(cls, s: pd.Series, name: str, task: str | None = None, log: bool = False,
            max_card: int = MAX_CARD) -> Target:
        """Infer the task: text, booleans and whole numbers with few values are classes."""
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {TASKS} or None (inferred), got {task!r}.")
        present = s.dropna()
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if task is None:
            with np.errstate(invalid="ignore"):
                whole = numeric and bool(np.all(np.mod(present.to_numpy(np.float64), 1) == 0))
            few = present.nunique() <= max_card
            task = "classification" if (not numeric or (whole and few)) else "regression"
        if task == "classification":
            if log:
                raise ValueError("log_y=True is for regression targets; this one is classes "
                                 "(pass task='regression' if it is numbers to predict).")
            return cls._classes(present, name, numeric)
        return cls._regression(s, name, numeric, log)

    @classmethod
    def _classes(cls, present: pd.Series, name: str, numeric: bool) -> Target:
        kind = "number" if numeric else "text"
        values = present.unique()
        classes = sorted(float(v) for v in values) if numeric else sorted(str(v) for v in values)
        if len(classes) < 2:
            raise ValueError(f"Target column {name!r} has a single class ({classes[0]!r}) in "
                             f"its {len(present)} labelled rows; expected at least two classes "
                             "to tell apart; check the data or the filter that made it.")
        return cls(name, "classification", kind, classes)

    @classmethod
    def _regression(cls, s: pd.Series, name: str, numeric: bool, log: bool) -> Target:
        if not numeric:
            raise ValueError(f"Target column {name!r} holds {s.dtype} values; regression "
                             "expected numbers; convert it or leave task= unset for classes.")
        values = s.to_numpy(np.float64, na_value=np.nan)
        check_finite(pd.Series(values), name)
        if log and np.nanmin(values) <= -1:
            raise ValueError(f"log_y=True takes log(1 + y), but {name!r} has values <= -1 "
                             f"(min {np.nanmin(values):g}); expected y > -1; drop log_y.")
        return cls(name, "regression", "number", None, bool(log))

    def fit_range(self, y: np.ndarray, train_rows: np.ndarray) -> None:
        """Regression: the sigmoid's range, the training targets' span plus 5 % each side."""
        if self.task == "regression":
            lo, hi = float(np.min(y[train_rows])), float(np.max(y[train_rows]))
            pad = 0.05 * max(hi - lo, 1e-6)
            self.y_range = [lo - pad, hi + pad]

    @property
    def n_out(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def encode(self, s: pd.Series) -> np.ndarray:
        """Classification: (N,) int64, -1 where missing. Regression: (N,) float32, NaN where
        missing, log(1 + y) when ``log``."""
        if self.task == "regression":
            values = pd.to_numeric(s, errors="coerce").to_numpy(np.float64, na_value=np.nan)
            return (np.log1p(values) if self.log else values).astype(np.float32)
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        if self.kind == "number":
            keys = pd.to_numeric(pd.Series(uniques), errors="coerce").tolist()
        else:
            keys = [str(u) for u in uniques]
        index = {c: i for i, c in enumerate(self.classes)}
        lut = np.array([index.get(k, -1) for k in keys] + [-1], dtype=np.int64)
        return lut[codes]

    def decode(self, values: np.ndarray) -> np.ndarray:
        """Class indices -> class values; model outputs -> target units (exp for ``log``)."""
        if self.task == "classification":
            return np.asarray(self.classes, dtype=object)[values]
        return np.expm1(values) if self.log else values

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Target:
        return cls(**d)
