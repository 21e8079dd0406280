"""Looking inside a tabular model, on its validation rows.

    interp = learn.interpret()
    interp.feature_importance()          # DataFrame: how much worse the model gets per column
    interp.plot_importance(save="importance.png")
    interp.worst(10)                     # the rows predicted worst, decoded back to values
    interp.confusion_matrix(); interp.plot_confusion_matrix()   # classification
    interp.plot_embedding("occupation")  # a categorical column's embedding in 2-D

Plots return a matplotlib Figure and take ``save=`` (a file path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from threeline.tabular.preprocess import FIRST

SAMPLE = 100_000  # validation rows used for importance


class TabularInterpretation:
    """Predictions of ``learn`` on its validation rows and what they show.

    Example:
        >>> interp = learn.interpret(); interp.feature_importance().head()   # doctest: +SKIP
    """

    def __init__(self, learn):
        data = learn._need_data()
        self.learn, self.data = learn, data
        self.rows = data.rows["valid"]
        self.cats, self.conts = data.cats[self.rows], data.conts[self.rows]
        self.y = data.y[self.rows]
        self.outputs = self._outputs(self.cats, self.conts)  # (N, n_out) float32
        self.losses = self._row_losses(self.outputs, self.y)  # (N,)

    # ----------------------------------------------------------------- numbers

    def _outputs(self, cats: np.ndarray, conts: np.ndarray) -> np.ndarray:
        return self.learn.raw_outputs(cats, conts)

    def _row_losses(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        o, t = torch.from_numpy(out), torch.from_numpy(y)
        if self.learn.target.task == "classification":
            return F.cross_entropy(o, t, reduction="none").numpy()
        return ((o.reshape(-1) - t) ** 2).numpy()

    def _score(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        loss = float(self._row_losses(out, y).mean())
        if self.learn.target.task == "classification":
            return {"loss": loss, "accuracy": float((out.argmax(1) == y).mean())}
        return {"loss": loss, "rmse": float(np.sqrt(loss))}

    def feature_importance(self, seed: int = 0) -> pd.DataFrame:
        """Permutation importance per table column: the validation loss (and accuracy or
        RMSE) with that column's values shuffled across rows, minus the model's own. A date
        column's parts, and a column's missing-value flag, are shuffled together.

        Returns a DataFrame sorted by ``loss_increase``, most important first.
        """
        rng = np.random.default_rng(seed)
        n = min(len(self.rows), SAMPLE)
        cats, conts, y = self.cats[:n], self.conts[:n], self.y[:n]
        base = self._score(self.outputs[:n], y)
        prep, records = self.learn.prep, []
        for source in prep.sources:
            order = rng.permutation(n)
            c, k = cats.copy(), conts.copy()
            for j, col in enumerate(prep.cats):
                if col.source == source:
                    c[:, j] = cats[order, j]
            for j, col in enumerate(prep.conts):
                if col.source == source:
                    k[:, j] = conts[order, j]
            score = self._score(self._outputs(c, k), y)
            record = {"column": source, "loss_increase": score["loss"] - base["loss"]}
            if "accuracy" in score:
                record["accuracy_drop"] = base["accuracy"] - score["accuracy"]
            else:
                record["rmse_increase"] = score["rmse"] - base["rmse"]
            records.append(record)
        frame = pd.DataFrame(records).sort_values("loss_increase", ascending=False)
        return frame.reset_index(drop=True)

    def decoded(self, index: np.ndarray | None = None) -> pd.DataFrame:
        """Validation rows as values again (categories by name; numbers in their own units,
        missing ones shown as the median they were filled with)."""
        index = np.arange(len(self.rows)) if index is None else index
        prep, out = self.learn.prep, {}
        for j, col in enumerate(prep.cats):
            names = np.array(["#missing", "#unknown", *col.classes], dtype=object)
            out[col.name] = names[self.cats[index, j]]
        for j, col in enumerate(prep.conts):
            out[col.name] = self.conts[index, j] * col.std + col.mean
        return pd.DataFrame(out, index=pd.Index(self.rows[index], name="row"))

    def worst(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` validation rows with the highest loss: their values, the target, the
        prediction and the loss (``row`` is the position in the original table)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a whole number >= 1, got {n!r}.")
        top = np.argsort(-self.losses, kind="stable")[:n]
        frame = self.decoded(top)
        target = self.learn.target
        if target.task == "classification":
            probs = torch.softmax(torch.from_numpy(self.outputs[top]), -1).numpy()
            frame[target.name] = target.decode(self.y[top])
            frame["prediction"] = target.decode(probs.argmax(1))
            frame["probability"] = probs.max(1)
        else:
            frame[target.name] = target.decode(self.y[top])
            frame["prediction"] = target.decode(self.outputs[top].reshape(-1))
        frame["loss"] = self.losses[top]
        return frame

    def confusion_matrix(self) -> np.ndarray:
        """(classes, classes) counts: rows are the actual class, columns the predicted one."""
        target = self.learn.target
        if target.task != "classification":
            raise ValueError("A confusion matrix is for classification; this target is "
                             "regression (use worst() to see the largest errors).")
        k = len(target.classes)
        pred = self.outputs.argmax(1)
        return np.bincount(self.y * k + pred, minlength=k * k).reshape(k, k)

    # ----------------------------------------------------------------- plots

    def plot_importance(self, top: int = 20, save: str | Path | None = None):
        """A bar chart of :meth:`feature_importance` (the ``top`` columns)."""
        import matplotlib.pyplot as plt

        imp = self.feature_importance().head(top).iloc[::-1]
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(imp) + 1.2))
        ax.barh(imp["column"].astype(str), imp["loss_increase"], color="tab:blue")
        ax.set_xlabel("validation loss increase when shuffled")
        ax.set_title("Permutation feature importance")
        return _finish(fig, save)

    def plot_confusion_matrix(self, save: str | Path | None = None):
        """The confusion matrix as a heat map with counts."""
        import matplotlib.pyplot as plt

        cm, classes = self.confusion_matrix(), [str(c) for c in self.learn.target.classes]
        size = max(3.5, 0.5 * len(classes) + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=90)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_title("Confusion matrix")
        return _finish(fig, save)

    def plot_embedding(self, column: str, save: str | Path | None = None):
        """A categorical column's learned embedding, projected on its two main axes (PCA)."""
        import matplotlib.pyplot as plt

        net = getattr(self.learn.model, "net", self.learn.model)
        if not hasattr(net, "embedding"):
            raise ValueError("This model has no embeddings (boosted trees); plot_embedding needs "
                             "model='nn' or 'ensemble'.")
        names = self.learn.prep.cat_names
        if column not in names:
            raise ValueError(f"{column!r} is not a categorical column of this model; expected "
                             f"one of {names}.")
        j = names.index(column)
        classes = [str(c) for c in self.learn.prep.cats[j].classes]
        weights = net.embedding(j)[FIRST:].float().cpu()  # (n classes, E)
        points = _pca2(weights)
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.scatter(points[:, 0], points[:, 1], s=12, color="tab:blue")
        for (x, y), label in zip(points, classes, strict=True):
            ax.annotate(label, (x, y), fontsize=8)
        ax.set_title(f"Embedding of {column} (first two principal components)")
        return _finish(fig, save)


def _pca2(w: torch.Tensor) -> np.ndarray:
    """Rows of ``w`` (n, E) on their first two principal axes, (n, 2)."""
    centered = w - w.mean(0, keepdim=True)
    if w.shape[1] < 2 or w.shape[0] < 2:
        return np.pad(centered.numpy(), ((0, 0), (0, max(0, 2 - w.shape[1]))))[:, :2]
    _, _, v = torch.linalg.svd(centered, full_matrices=False)
    return (centered @ v[:2].T).numpy()


def _finish(fig, save: str | Path | None):
    fig.tight_layout()
    if save is not None:
        fig.savefig(save, dpi=120)
    return fig

