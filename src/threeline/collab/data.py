"""Ratings tables as tensors: users and items coded 0..n, a split, optional titles.

Code 0 means "unknown" for users and for items: ids met only in the validation rows (or at
prediction time) map to it, and the models give such a pair its bias-only prediction.

    data = CollabData.from_csv("ml-100k/u.data", sep="\\t",
                               names=["user", "item", "rating", "ts"], titles="ml-100k/u.item")
    data.n_users, data.n_items, len(data.train_idx), len(data.valid_idx)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from threeline.batches import TensorData
from threeline.collab.tables import Columns, pick_columns, read_table, read_titles, validate

DEFAULT_BATCH = 256


class CollabData:
    """Coded ratings, the split and the id <-> code maps; yields batches on a device.

    ``users``/``items`` are int64 codes (1..n for ids seen in the training rows, 0 otherwise),
    ``ratings`` float32; ``user_ids[code]``/``item_ids[code]`` give the original ids back
    (entry 0 is None).

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"u": [1, 1, 2, 2, 3], "i": ["a", "b", "a", "c", "b"],
        ...                    "r": [4, 3, 5, 2, 1]})
        >>> data = CollabData.from_df(df, valid_idx=[4])
        >>> data.n_users, data.n_items
        (2, 3)
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                 user_ids: np.ndarray, item_ids: np.ndarray, valid_mask: np.ndarray,
                 columns: Columns, titles: dict[Any, str] | None = None,
                 batch_size: int = DEFAULT_BATCH, unseen: dict[str, dict[int, Any]] | None = None):
        self.users = users  # (N,) int64
        self.items = items  # (N,) int64
        self.ratings = ratings  # (N,) float32
        self.user_ids = user_ids  # (n_users + 1,) object, [0] is None
        self.item_ids = item_ids  # (n_items + 1,) object
        self.valid_mask = valid_mask  # (N,) bool
        self.train_idx = np.flatnonzero(~valid_mask)
        self.valid_idx = np.flatnonzero(valid_mask)
        self.columns = columns
        self.titles = titles
        self.unseen = unseen or {"user": {}, "item": {}}  # row -> id, for rows coded 0
        self._tensor_data: TensorData | None = None
        self.batch_size = batch_size
        self._user_index = _index(user_ids[1:])
        self._item_index = _index(item_ids[1:])

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_csv(cls, path: str | Path, sep: str = ",", names: Sequence[str] | None = None,
                 encoding: str = "utf-8", **kwargs: Any) -> CollabData:
        """Read a delimited ratings file; ``kwargs`` as :meth:`from_df`.

        ``names`` names the columns of a file without a header row (MovieLens' ``u.data``);
        without ``names`` the first row is the header.
        """
        return cls.from_df(read_table(path, sep, names, encoding), **kwargs)

    @classmethod
    def from_df(cls, df: Any, user: str | None = None, item: str | None = None,
                rating: str | None = None, time: str | None = None, valid_pct: float = 0.2,
                valid_idx: Sequence[int] | np.ndarray | None = None, valid_after: Any = None,
                seed: int = 42, titles: Any = None, batch_size: int = DEFAULT_BATCH
                ) -> CollabData:
        """Build from a pandas DataFrame of ratings.

        Columns default to the first three (user, item, rating) and, for ``valid_after``, the
        fourth (time). The validation rows are, in order of precedence: ``valid_idx`` (row
        positions), the rows with time > ``valid_after``, or a seeded random ``valid_pct``.
        Duplicated (user, item) rows keep the last one, with a warning saying how many went.
        ``titles``: a mapping id -> title, a DataFrame (id, title as its first two columns) or
        a file such as MovieLens' ``u.item`` (``|``-separated, latin-1).
        """
        _check_args(valid_pct, seed)
        cols = pick_columns(df, user, item, rating, time, need_time=valid_after is not None)
        df = validate(df, cols)
        valid_mask = _split(df, cols, valid_pct, valid_idx, valid_after, seed)
        df, valid_mask = _drop_duplicates(df, cols, valid_mask)
        train = ~valid_mask
        user_ids, users = _code(df[cols.user].to_numpy(), train)
        item_ids, items = _code(df[cols.item].to_numpy(), train)
        ratings = df[cols.rating].to_numpy(dtype=np.float32)
        names = read_titles(titles, item_ids[1:]) if titles is not None else None
        unseen = {which: dict(zip(np.flatnonzero(codes == 0).tolist(),
                                  df[col].to_numpy()[codes == 0].tolist(), strict=True))
                  for which, codes, col in (("user", users, cols.user),
                                            ("item", items, cols.item))}
        return cls(users, items, ratings, user_ids, item_ids, valid_mask, cols, names,
                   batch_size, unseen)

    # ---- the data protocol (delegated to the core's TensorData) -------------------------
    graphable = True  # batches are fixed-shape slices of device tensors: CUDA-graph steps

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"batch_size must be a positive int, got {value!r}.")
        self._batch_size, self._tensor_data = value, None

    def _data(self) -> TensorData:
        if self._tensor_data is None:
            def split(rows: np.ndarray) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
                users, items, ratings = (torch.from_numpy(np.ascontiguousarray(a[rows]))
                                         for a in (self.users, self.items, self.ratings))
                return (users, items), ratings

            (xt, yt), (xv, yv) = split(self.train_idx), split(self.valid_idx)
            self._tensor_data = TensorData(xt, yt, xv, yv, self.batch_size, drop_last=True)
        return self._tensor_data

    def steps(self, split: str) -> int:
        """How many batches :meth:`batches` yields for ``split`` (a last partial training
        batch is dropped, so every step has one shape)."""
        return self._data().steps(split)

    def batches(self, split: str, device: torch.device | str = "cpu", shuffle: bool = False,
                seed: int = 0) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor],
                                                  torch.Tensor]]:
        """``((users, items), ratings)`` batches already on ``device``; no per-row Python."""
        return self._data().batches(split, torch.device(device), shuffle, seed)

    def tensors(self, split: str, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The split's (users, items, ratings) on ``device`` (moved once and kept)."""
        (users, items), ratings = self._data().tensors(split, torch.device(device))
        return users, items, ratings

    # ---- ids and titles -----------------------------------------------------------------
    @property
    def n_users(self) -> int:
        """Users seen in the training rows (codes 1..n_users)."""
        return len(self.user_ids) - 1

    @property
    def n_items(self) -> int:
        """Items seen in the training rows (codes 1..n_items)."""
        return len(self.item_ids) - 1

    def user_codes(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Codes of user ids; 0 for ids not seen in training (see :func:`lookup`)."""
        return lookup(self._user_index, ids)

    def item_codes(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Codes of item ids; 0 for ids not seen in training."""
        return lookup(self._item_index, ids)

    def raw_ids(self, which: str, rows: np.ndarray) -> np.ndarray:
        """The original user (``which="user"``) or item ids of table rows."""
        codes = (self.users if which == "user" else self.items)[rows]
        ids = (self.user_ids if which == "user" else self.item_ids)[codes]
        for n in np.flatnonzero(codes == 0):
            ids[n] = self.unseen[which].get(int(rows[n]))
        return ids

    def title(self, item_id: Any) -> str:
        """The item's title when titles were given, else its id as text."""
        if self.titles is not None and item_id in self.titles:
            return self.titles[item_id]
        return str(item_id)

    def rated_by(self, user_code: int) -> np.ndarray:
        """Item codes the user rated (training and validation rows)."""
        return np.unique(self.items[self.users == user_code])

    def __repr__(self) -> str:
        unknown = int(((self.users == 0) | (self.items == 0))[self.valid_idx].sum())
        return (f"CollabData: {self.n_users:,} users, {self.n_items:,} items, "
                f"{len(self.train_idx):,} train / {len(self.valid_idx):,} valid ratings "
                f"({unknown:,} valid rows with a user or item not in train), ratings "
                f"{float(self.ratings.min()):g}..{float(self.ratings.max()):g}"
                + (f", {len(self.titles):,} titles" if self.titles else ""))


def lookup(index: Any, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Codes (positions in ``index`` + 1) of ``ids``, 0 when absent; an id missing as given
    is tried as its int/str twin too (196 for "196" and back)."""
    ids = np.asarray(ids, dtype=object) if not isinstance(ids, np.ndarray) else ids
    codes = index.get_indexer(ids) + 1  # (N,)
    miss = np.flatnonzero(codes == 0)
    if len(miss):
        twins = np.array([_twin(k) for k in ids[miss]], dtype=object)
        codes[miss] = index.get_indexer(twins) + 1
    return codes.astype(np.int64)


def _index(ids: np.ndarray) -> Any:
    import pandas as pd

    return pd.Index(ids, dtype=object if ids.dtype == object else None)


def _twin(key: Any) -> Any:
    key = key.item() if isinstance(key, np.generic) else key
    if isinstance(key, str):
        return int(key) if key.strip().lstrip("-").isdigit() else None
    if isinstance(key, int):
        return str(key)
    return None


def _check_args(valid_pct: float, seed: int) -> None:
    if not isinstance(valid_pct, (int, float)) or not 0 <= valid_pct < 1:
        raise ValueError(f"valid_pct must be a number in [0, 1), got {valid_pct!r}.")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}.")


def _split(df: Any, cols: Columns, valid_pct: float, valid_idx: Any, valid_after: Any,
           seed: int) -> np.ndarray:
    n = len(df)
    mask = np.zeros(n, dtype=bool)
    if valid_idx is not None:
        idx = np.asarray(valid_idx)
        if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError("valid_idx must hold integer row positions, e.g. [0, 5, 9].")
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise ValueError(f"valid_idx has positions outside 0..{n - 1} (the table has "
                             f"{n:,} rows); pass row positions, not index labels.")
        mask[idx] = True
    elif valid_after is not None:
        try:
            mask = (df[cols.time] > valid_after).to_numpy(dtype=bool)
        except TypeError as err:
            raise TypeError(f"valid_after={valid_after!r} cannot be compared with column "
                            f"{cols.time!r} ({df[cols.time].dtype}); pass a value of the "
                            "same kind (e.g. a Unix time for Unix times).") from err
    else:
        rng = np.random.default_rng(seed)
        mask[rng.permutation(n)[: round(n * valid_pct)]] = True
    if mask.all():
        raise ValueError("every row went to validation; choose a smaller valid_pct, fewer "
                         "valid_idx or a later valid_after.")
    return mask


def _drop_duplicates(df: Any, cols: Columns, mask: np.ndarray) -> tuple[Any, np.ndarray]:
    dup = df.duplicated([cols.user, cols.item], keep="last").to_numpy()
    if dup.any():
        warnings.warn(f"{int(dup.sum()):,} duplicated ({cols.user}, {cols.item}) rows: kept "
                      "the last rating of each pair and dropped the earlier ones.", stacklevel=3)
        df, mask = df[~dup], mask[~dup]
    return df, mask


def _code(ids: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes 1..n for ids in the training rows (sorted when sortable), 0 for the rest.

    Returns (ids by code with None at 0, codes per row); vectorized by pandas.
    """
    import pandas as pd

    seen = pd.unique(ids[train])
    with contextlib.suppress(TypeError):  # mixed kinds of ids: keep first-seen order
        seen = np.sort(seen)
    codes = pd.Index(seen).get_indexer(ids) + 1  # (N,), -1 + 1 = 0 for unseen
    return np.array([None, *seen.tolist()], dtype=object), codes.astype(np.int64)
