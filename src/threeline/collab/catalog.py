"""What a trained model needs to answer questions without its data: ids, titles, who rated what.

    cat = Catalog.from_data(data)
    cat.user_codes([196, "x"])          # array([  n,   0]): 0 = unknown
    cat.rated(code)                     # item codes the user rated (train and valid)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from threeline.collab.data import CollabData, _index, lookup


class Catalog:
    """Ids by code (entry 0 is the unknown row), titles by item code, rated items per user.

    Example:
        >>> cat = Catalog([None, "ann", "bob"], [None, 10, 20], ["", "Up", "Cars"],
        ...               np.array([0, 0, 1, 3]), np.array([1, 1, 2]), ("user", "item"), 3.5)
        >>> cat.rated(2).tolist(), cat.title(2)
        ([1, 2], 'Cars')
    """

    def __init__(self, user_ids: Sequence[Any], item_ids: Sequence[Any], titles: Sequence[str],
                 rated_indptr: np.ndarray, rated_items: np.ndarray, columns: Sequence[str],
                 mean: float):
        self.user_ids = np.array(list(user_ids), dtype=object)  # (n_users + 1,)
        self.item_ids = np.array(list(item_ids), dtype=object)  # (n_items + 1,)
        self.titles = list(titles)  # (n_items + 1,)
        self.rated_indptr = rated_indptr  # (n_users + 2,) int64
        self.rated_items = rated_items  # (n_rated,) int64
        self.columns = tuple(columns)  # user and item column names
        self.mean = mean
        self._users, self._items = _index(self.user_ids[1:]), _index(self.item_ids[1:])

    @classmethod
    def from_data(cls, data: CollabData) -> Catalog:
        known = data.users > 0
        users, items = data.users[known], data.items[known]
        order = np.lexsort((items, users))
        users, items = users[order], items[order]
        counts = np.bincount(users, minlength=data.n_users + 1)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        titles = [""] + [data.title(i) for i in data.item_ids[1:]]
        mean = float(data.ratings[data.train_idx].mean())
        return cls(data.user_ids, data.item_ids, titles, indptr, items.astype(np.int64),
                   (data.columns.user, data.columns.item), mean)

    @property
    def n_users(self) -> int:
        return len(self.user_ids) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def user_codes(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        return lookup(self._users, ids)

    def item_codes(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        return lookup(self._items, ids)

    def rated(self, user_code: int) -> np.ndarray:
        """Item codes the user rated, sorted."""
        return self.rated_items[self.rated_indptr[user_code]:self.rated_indptr[user_code + 1]]

    def title(self, item_code: int) -> str:
        return self.titles[item_code] or str(self.item_ids[item_code])

    # ---- saving: ids and titles in JSON, the rated lists as tensors ----------------------
    def describe(self) -> dict:
        return {"user_ids": _plain(self.user_ids[1:]), "item_ids": _plain(self.item_ids[1:]),
                "titles": self.titles[1:], "columns": list(self.columns), "mean": self.mean}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"catalog.rated_indptr": torch.from_numpy(self.rated_indptr),
                "catalog.rated_items": torch.from_numpy(self.rated_items)}

    @classmethod
    def rebuild(cls, info: dict, tensors: dict[str, torch.Tensor]) -> Catalog:
        return cls([None, *info["user_ids"]], [None, *info["item_ids"]], ["", *info["titles"]],
                   tensors["catalog.rated_indptr"].numpy(),
                   tensors["catalog.rated_items"].numpy(), info["columns"], info["mean"])


def _plain(ids: np.ndarray) -> list:
    """JSON-ready ids: numpy scalars as Python ints, floats and strings."""
    return [i.item() if isinstance(i, np.generic) else i for i in ids]
