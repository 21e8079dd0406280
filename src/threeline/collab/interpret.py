"""Looking inside a ratings model: item biases, a 2-D map of item vectors, the worst misses.

    interp = learn.interpret()
    interp.item_biases(10)            # best and worst items once user and item effects are out
    interp.plot_items(n=50, save="items.png")      # PCA of the item vectors, with titles
    interp.worst_predictions(10)      # validation ratings predicted worst
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class CollabInterpretation:
    """Views of a trained :class:`threeline.collab.learner.CollabLearner`.

    Example:
        >>> interp = learn.interpret()                 # doctest: +SKIP
        >>> interp.item_biases(5)["best"]              # doctest: +SKIP
    """

    def __init__(self, learn: Any):
        self.learn, self.catalog = learn, learn.catalog

    def _counts(self) -> np.ndarray:
        return np.bincount(self.catalog.rated_items, minlength=self.catalog.n_items + 1)

    def item_biases(self, n: int = 10, min_ratings: int = 20) -> dict[str, Any]:
        """``{"best": DataFrame, "worst": DataFrame}`` of item, title, bias, ratings: the item
        biases, i.e. how an item is rated once the user's bias and the user-item match are
        accounted for. Items with fewer than ``min_ratings`` ratings are left out."""
        import pandas as pd

        _check_n(n)
        bias = self.learn.model.item_bias.weight.detach().float().cpu().numpy().mean(1)
        counts = self._counts()
        codes = np.flatnonzero(counts >= min_ratings)
        codes = codes[codes > 0]
        order = codes[np.argsort(-bias[codes], kind="stable")]

        def table(picked: np.ndarray) -> Any:
            return pd.DataFrame({"item": self.catalog.item_ids[picked],
                                 "title": [self.catalog.title(c) for c in picked],
                                 "bias": bias[picked], "ratings": counts[picked]})

        return {"best": table(order[:n]), "worst": table(order[::-1][:n])}

    def item_pca(self, n: int = 50) -> Any:
        """The ``n`` most-rated items' vectors projected on their first two principal
        components: DataFrame of item, title, pc1, pc2."""
        import pandas as pd

        _check_n(n)
        vectors = self.learn.model.item_vectors().detach().float().cpu()  # (n_items + 1, F)
        counts = self._counts()
        codes = np.argsort(-counts, kind="stable")
        codes = codes[codes > 0][:n]
        centered = vectors[1:] - vectors[1:].mean(0)  # PCA over every trained item
        _, _, v = torch.linalg.svd(centered, full_matrices=False)  # v: (F, F)
        points = ((vectors[codes] - vectors[1:].mean(0)) @ v[:2].T).numpy()  # (n, 2)
        return pd.DataFrame({"item": self.catalog.item_ids[codes],
                             "title": [self.catalog.title(c) for c in codes],
                             "pc1": points[:, 0], "pc2": points[:, 1]})

    def plot_items(self, n: int = 50, save: str | Path | None = None, figsize=(10, 10)) -> Any:
        """Scatter of :meth:`item_pca` with titles; returns the matplotlib Figure."""
        import matplotlib

        if save is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        points = self.item_pca(n)
        fig, ax = plt.subplots(figsize=figsize)
        ax.scatter(points.pc1, points.pc2, s=8, color="tab:blue")
        for row in points.itertuples():
            ax.annotate(str(row.title)[:40], (row.pc1, row.pc2), fontsize=7, alpha=0.8)
        ax.set_xlabel("first principal component")
        ax.set_ylabel("second principal component")
        ax.set_title(f"Item vectors of the {len(points)} most-rated items")
        fig.tight_layout()
        if save is not None:
            fig.savefig(save, dpi=120)
        return fig

    def worst_predictions(self, n: int = 10) -> Any:
        """The validation ratings predicted worst: DataFrame of user, item, title, rating,
        predicted, error (sorted by absolute error, largest first)."""
        import pandas as pd

        _check_n(n)
        data = self.learn.data
        if data is None or len(data.valid_idx) == 0:
            raise ValueError("worst_predictions needs validation ratings: load the learner "
                             "with data= a CollabData that has a validation split.")
        rows = data.valid_idx
        users, items, ratings = data.users[rows], data.items[rows], data.ratings[rows]
        predicted = self.learn.scores(users, items)
        error = predicted - ratings
        top = np.argsort(-np.abs(error), kind="stable")[:n]
        return pd.DataFrame({
            "user": data.raw_ids("user", rows[top]),
            "item": data.raw_ids("item", rows[top]),
            "title": [data.title(i) for i in data.raw_ids("item", rows[top])],
            "rating": ratings[top], "predicted": predicted[top], "error": error[top]})


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
