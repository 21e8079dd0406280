"""Multi-label images: thresholds tuned per label, per-label metrics, and interpretation.

Multi-label is a data shape and a loss object, not a second learner: ``ImageData.from_csv(...,
label_delim=" ")`` gives multi-hot targets, ``Learner.pretrained`` then trains with
:class:`threeline.losses.BinaryCrossEntropy`, and ``predict`` returns one independent
probability per label. This module adds what only multi-label data needs:

    learn.tune_thresholds()               # one threshold per label, best F2 on the validation set
    interp = learn.interpret()            # a MultiLabelInterpretation
    interp.per_label()                    # precision, recall, F1, support per label
    interp.plot_most_wrong(); interp.plot_cooccurrence(); interp.plot_heatmaps()

Selection and scores are plain functions on arrays, in :mod:`threeline.vision.label_scores`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from threeline.vision.label_scores import (
    confusion_counts,
    cooccurrence,
    decide,
    fbeta_per_sample,
    fbeta_samples,
    label_metrics,
    label_rows,
    most_wrong,
    tune_thresholds,
)
from threeline.vision.transforms import Preprocess

if TYPE_CHECKING:
    from threeline.plots import PlotFigure
    from threeline.vision.protocol import VisionLearner


# ----------------------------------------------------------------- with a learner


def tune_learner_thresholds(learn: VisionLearner, beta: float | None = None,
                            tta: bool = False) -> np.ndarray:
    """Tune ``learn``'s thresholds on its validation set and keep them in ``learn.loss``.

    Prints the validation F-beta before and after. The thresholds are saved with the model
    (``learn.loss.describe()``), used by the epoch table's metrics from the next epoch on, and
    by ``threeline predict``.

    Args:
        beta: the F-beta to maximize; None uses the loss's (2 unless set).
        tta: tune on :meth:`ImageLearner.tta`'s probabilities instead of :meth:`predict`'s.

    Example:
        >>> learn.tune_thresholds()  # doctest: +SKIP
        F2 on 345 validation images: 0.8612 at the thresholds used so far, 0.8805 tuned
        array([0.24, 0.31, 0.2 , 0.18, 0.3 ], dtype=float32)
    """
    if not learn.multi_label:
        raise ValueError("tune_thresholds is for multi-label learners (BinaryCrossEntropy); "
                         "this one picks one class per image. Load the data with "
                         "ImageData.from_csv(..., label_delim=' ') for several tags per image.")
    beta = float(learn.loss.beta if beta is None else beta)
    probs = learn.tta() if tta else learn.predict()  # (N, L)
    targets = np.asarray(learn.data.valid.labels, dtype=np.int64)  # (N, L)
    before = fbeta_samples(probs, targets, learn.loss.thresholds.numpy(), beta)
    tuned = tune_thresholds(probs, targets, beta)
    learn.loss.thresholds = tuned
    after = fbeta_samples(probs, targets, tuned, beta)
    print(f"F{beta:g} on {len(targets)} validation images: {before:.4f} at the thresholds used "
          f"so far, {after:.4f} tuned", file=sys.stdout, flush=True)
    return tuned


def thresholds_of(learn: VisionLearner) -> np.ndarray:
    """(L,) float thresholds of a multi-label learner (one number broadcast to every label)."""
    t = learn.loss.thresholds.reshape(-1).numpy().astype(np.float64)
    return np.broadcast_to(t, (len(learn.classes),)).copy()


def prediction_rows(learn: VisionLearner, files: Sequence, probs: np.ndarray,
                    top_k: int = 1) -> list[tuple[str, str, float]]:
    """(file, label, probability) rows for ``threeline predict``: single-label, the ``top_k``
    classes (``probs`` are ``predict``'s log-probabilities); multi-label, every label above
    its threshold, most probable first, or ``(none)`` with the highest probability when no
    label passes.

    Example:
        >>> prediction_rows(learn, ["chip.jpg"], learn.predict(["chip.jpg"]))  # doctest: +SKIP
        [('chip.jpg', 'water', 0.97), ('chip.jpg', 'farmland', 0.41)]
    """
    rows = []
    if not learn.multi_label:
        p = np.exp(probs)  # (N, C)
        for path, row in zip(files, p, strict=True):
            for c in np.argsort(-row, kind="stable")[: min(top_k, p.shape[1])]:
                rows.append((str(path), learn.classes[c], float(row[c])))
        return rows
    on = decide(probs, thresholds_of(learn))  # (N, L)
    for path, row, hits in zip(files, probs, on, strict=True):
        chosen = [c for c in np.argsort(-row, kind="stable") if hits[c]]
        if not chosen:
            rows.append((str(path), "(none)", float(row.max())))
        rows += [(str(path), learn.classes[c], float(row[c])) for c in chosen]
    return rows


# ----------------------------------------------------------------- the Interpretation


class MultiLabelInterpretation:
    """Predictions on labelled images where each image may carry several labels.

    Args:
        probs: (N, L) independent probabilities, e.g. ``learn.predict()`` or ``learn.tta()``.
        targets: (N, L) 0/1 true labels.
        items: the N images (files or PIL images), in the same order.
        classes: the L label names.
        thresholds: one probability, or one per label (``learn.loss.thresholds``).
        beta: the F-beta reported.
        show: turns an item into a uint8 (3, S, S) tensor for display (default: center crop).

    Example:
        >>> interp = MultiLabelInterpretation(np.array([[0.9, 0.2]]), [[1, 1]], ["a.jpg"],
        ...                                   ["water", "farmland"])
        >>> interp.confusion_counts()["farmland"]
        {'tp': 0, 'fp': 0, 'fn': 1, 'tn': 0}
    """

    def __init__(self, probs: np.ndarray, targets: np.ndarray | Sequence, items: Sequence,
                 classes: Sequence[str], thresholds: float | np.ndarray = 0.5,
                 beta: float = 2.0, show: Callable | None = None, learn=None):
        self.probs = np.asarray(probs, dtype=np.float64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.items, self.classes = list(items), list(classes)
        n, c = self.probs.shape if self.probs.ndim == 2 else (-1, -1)
        if c != len(self.classes) or self.targets.shape != self.probs.shape or len(items) != n:
            raise ValueError(
                f"Expected probabilities and 0/1 targets of shape (N, {len(self.classes)}) and "
                f"N items; got {self.probs.shape}, {self.targets.shape} and {len(self.items)} "
                f"items. Pass predictions and labels for the same images.")
        self.thresholds = np.broadcast_to(
            np.asarray(thresholds, dtype=np.float64).reshape(-1), (c,)).copy()
        self.beta, self.show, self.learn = float(beta), show or Preprocess(size=224), learn

    @classmethod
    def from_learner(cls, learn: VisionLearner, items: Sequence | None = None,
                     labels: Sequence | None = None) -> MultiLabelInterpretation:
        """Predict with ``learn`` (validation set, or ``items`` with their ``labels``: one
        list of label names, or one 0/1 row, per image) and wrap the result.

        Example:
            >>> interp = MultiLabelInterpretation.from_learner(learn)  # doctest: +SKIP
        """
        from threeline.vision.images import expand_items

        if items is None:
            if labels is not None:
                raise ValueError("labels were given without items; pass the images they "
                                 "belong to, e.g. learn.interpret(files, labels).")
            files, targets = learn.data.valid.files, learn.data.valid.labels
        else:
            if labels is None:
                raise ValueError("Multi-label images need their true labels: pass labels=[...] "
                                 "with one list of label names per image.")
            files = expand_items(items)
            targets = label_rows(files, labels, learn.classes)
        return cls(learn.predict(files if items is not None else None), targets, files,
                   learn.classes, thresholds_of(learn), float(learn.loss.beta),
                   learn.preprocess, learn)

    # ------------------------------------------------------------- numbers

    @property
    def preds(self) -> np.ndarray:
        """(N, L) booleans: the labels predicted at the thresholds."""
        return decide(self.probs, self.thresholds)

    @property
    def wrong(self) -> np.ndarray:
        """(N,) how many labels of each image are wrong (missed or extra)."""
        return (self.preds != self.targets.astype(bool)).sum(1)

    @property
    def losses(self) -> np.ndarray:
        """(N,) binary cross-entropy per image (mean over labels)."""
        p = np.clip(self.probs, 1e-7, 1 - 1e-7)
        return -(self.targets * np.log(p) + (1 - self.targets) * np.log(1 - p)).mean(1)

    def __len__(self) -> int:
        return len(self.targets)

    def fbeta(self) -> float:
        """Sample-averaged F-beta at the thresholds."""
        return float(fbeta_per_sample(self.preds, self.targets, self.beta).mean())

    def __repr__(self) -> str:
        n, exact = len(self), int((self.wrong == 0).sum())
        return (f"Multi-label interpretation of {n} images, {len(self.classes)} labels: "
                f"F{self.beta:g} {self.fbeta():.4f}, {exact} with every label right, "
                f"{n - exact} with at least one wrong")

    def confusion_counts(self) -> dict[str, dict[str, int]]:
        """Per label: true positives, false positives, false negatives, true negatives."""
        counts = confusion_counts(self.preds, self.targets)
        return {name: dict(zip(("tp", "fp", "fn", "tn"), map(int, row), strict=True))
                for name, row in zip(self.classes, counts, strict=True)}

    def per_label(self) -> dict[str, dict[str, float]]:
        """Per label: precision, recall, F1, support and the counts (:func:`label_metrics`).

        Example:
            >>> from threeline.vision.label_scores import format_label_metrics  # doctest: +SKIP
            >>> print(format_label_metrics(learn.interpret().per_label()))  # doctest: +SKIP
        """
        return label_metrics(self.preds, self.targets, self.classes)

    def most_wrong(self, k: int | None = None) -> np.ndarray:
        """Indices of the images with the most wrong labels (:func:`most_wrong`)."""
        return most_wrong(self.probs, self.targets, self.thresholds, k)

    def cooccurrence(self, which: str = "true") -> np.ndarray:
        """(L, L) images with both labels, among the true (``"true"``) or predicted labels."""
        if which not in ("true", "predicted"):
            raise ValueError(f"which must be 'true' or 'predicted', got {which!r}.")
        return cooccurrence(self.targets if which == "true" else self.preds)

    def title(self, i: int) -> str:
        """Image ``i``'s title: predicted labels with probabilities, then the true labels."""
        from threeline.plots import short
        pred = [f"{short(c, 12)} {self.probs[i, j]:.2f}" for j, c in enumerate(self.classes)
                if self.preds[i, j]]
        true = [short(c, 12) for j, c in enumerate(self.classes) if self.targets[i, j]]
        return f"{', '.join(pred) or '(none)'}\ntrue: {', '.join(true) or '(none)'}"

    # ------------------------------------------------------------- plots

    def plot_most_wrong(self, k: int = 9, save: str | os.PathLike | None = None) -> PlotFigure:
        """The ``k`` images with the most wrong labels, titled with predicted and true labels.

        Example:
            >>> fig = interp.plot_most_wrong(9, save="most_wrong.png")  # doctest: +SKIP
        """
        idx = self.most_wrong(_check_k(k))
        idx = idx[self.wrong[idx] > 0]
        return self._grid(idx, "Most wrong labels", int((self.wrong > 0).sum()), save)

    def plot_top_losses(self, k: int = 9, save: str | os.PathLike | None = None) -> PlotFigure:
        """The ``k`` images with the highest loss (binary cross-entropy over their labels)."""
        idx = np.lexsort((np.arange(len(self)), -self.losses))[: _check_k(k)]
        return self._grid(idx, "Top losses", len(self), save)

    def _grid(self, idx: np.ndarray, what: str, found: int, save) -> PlotFigure:
        from threeline.plots import image_array, image_grid, save_png
        heading = (f"{what}: none among {len(self)} images" if len(idx) == 0
                   else f"{what}: {len(idx)} of {found}")
        images = [image_array(self.show(self.items[i])) for i in idx]
        colors = ["darkgreen" if self.wrong[i] == 0 else "firebrick" for i in idx]
        fig = image_grid(images, [self.title(i) for i in idx], heading, colors)
        save_png(fig, save)
        return fig

    def plot_confusion_counts(self, save: str | os.PathLike | None = None) -> PlotFigure:
        """Per label, the counts of true and false positives and negatives as a table of
        colored cells (rows: labels; columns: TP, FP, FN, TN).

        Example:
            >>> fig = interp.plot_confusion_counts(save="counts.png")  # doctest: +SKIP
        """
        from threeline.plots import save_png
        counts = confusion_counts(self.preds, self.targets).astype(np.float64)  # (L, 4)
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        fig = _table_figure(shares, counts, self.classes, ["TP", "FP", "FN", "TN"],
                            f"Per-label counts, {len(self)} images")
        save_png(fig, save)
        return fig

    def plot_cooccurrence(self, which: str = "true",
                          save: str | os.PathLike | None = None) -> PlotFigure:
        """How often two labels come together (:meth:`cooccurrence`), as a matrix.

        Example:
            >>> fig = interp.plot_cooccurrence("predicted")  # doctest: +SKIP
        """
        from threeline.plots import matrix_figure, save_png
        fig = matrix_figure(self.cooccurrence(which).astype(np.float64), self.classes, False)
        ax = fig.axes[0]
        ax.set_xlabel("label")
        ax.set_ylabel("label")
        ax.set_title(f"Co-occurrence of {which} labels, {len(self)} images", fontsize=11)
        save_png(fig, save)
        return fig

    def plot_heatmaps(self, k: int = 9, label: str | int | None = None,
                      save: str | os.PathLike | None = None) -> PlotFigure:
        """Grad-CAM heat maps (:mod:`threeline.vision.heatmap`) over the ``k`` images with the
        most wrong labels: where the model looked for ``label`` (None: each image's most
        probable label).

        Example:
            >>> fig = learn.interpret().plot_heatmaps(6, save="heatmaps.png")  # doctest: +SKIP
        """
        from threeline.plots import image_grid, save_png, short
        from threeline.vision.heatmap import heatmap
        if self.learn is None:
            raise ValueError("Heat maps need the model: make this with learn.interpret().")
        idx = self.most_wrong(_check_k(k))
        maps = heatmap(self.learn, [self.items[i] for i in idx], label)  # (k, S, S)
        chosen = [self.classes.index(label) if isinstance(label, str) else
                  (int(label) if label is not None else int(self.probs[i].argmax()))
                  for i in idx]
        images = [_overlay(self.learn.preprocess(self.items[i]), m) for i, m in zip(idx, maps,
                                                                                  strict=True)]
        titles = [f"{short(self.classes[c], 12)} {self.probs[i, c]:.2f}\n"
                  + self.title(i).split("\n")[1] for i, c in zip(idx, chosen, strict=True)]
        fig = image_grid(images, titles, f"Where the model looked: {len(idx)} images with the "
                         f"most wrong labels")
        save_png(fig, save)
        return fig


def _overlay(pixels, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 (3, S, S) image and (S, S) heat in [0, 1] -> (S, S, 3) uint8 blend (jet colors)."""
    from matplotlib import colormaps

    image = np.asarray(pixels).transpose(1, 2, 0).astype(np.float64)  # (S, S, 3)
    colors = colormaps["jet"](heat)[..., :3] * 255.0  # (S, S, 3)
    return ((1 - alpha) * image + alpha * colors).round().clip(0, 255).astype(np.uint8)


def _table_figure(shades: np.ndarray, values: np.ndarray, rows: Sequence[str],
                  columns: Sequence[str], title: str) -> PlotFigure:
    """A (R, C) grid of cells shaded by ``shades`` in [0, 1] and labelled with ``values``."""
    from threeline.plots import new_figure, short
    fig = new_figure(1.2 * len(columns) + 2.0, 0.45 * len(rows) + 1.4)
    ax = fig.add_subplot()
    ax.imshow(shades, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), list(columns))
    ax.set_yticks(range(len(rows)), [short(r) for r in rows])
    for r in range(len(rows)):
        for c in range(len(columns)):
            ax.text(c, r, f"{int(values[r, c])}", ha="center", va="center", fontsize=10,
                    color="white" if shades[r, c] > 0.5 else "black")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def _check_k(k: int) -> int:
    from threeline.plots import MAX_IMAGES
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (the number of images) must be a positive int, got {k!r}.")
    return min(int(k), MAX_IMAGES)

