"""Which images to show: plain functions on arrays (``log_probs`` (N, C), ``targets`` (N,)) that
:class:`threeline.vision.interpret.Interpretation` draws, checkable on their own.

*Most uncertain* generalises "probability closest to 0.5" (two classes) to any number of classes
with the margin between the two highest probabilities: for two classes ``p1 - p2 = 2 |p - 0.5|``,
so the order is the same; with more classes a small margin means the model hesitates between two.

Ties in every ordering are broken by position in the data set, so results are repeatable.

    idx = top_losses(log_probs, targets, k=9)          # (9,) row indices, highest loss first
    cm = confusion_matrix(targets, preds, n_classes)   # (C, C), rows: true, columns: predicted
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_CLASSES = 30  # confusion matrices show at most this many rows; the rest become "other"


def _sorted(candidates: np.ndarray, keys: np.ndarray, k: int | None) -> np.ndarray:
    """``candidates`` ordered by ascending ``keys[candidates]``, ties by index, first ``k``."""
    candidates = np.sort(np.asarray(candidates, dtype=np.int64))
    order = candidates[np.argsort(keys[candidates], kind="stable")]
    return order if k is None else order[:k]


def _rows(log_probs: np.ndarray) -> np.ndarray:
    return np.arange(len(log_probs))


def top_losses(log_probs: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Indices of the images with the highest loss (-log p(true class)), highest first.

    Example:
        >>> lp = np.log([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> top_losses(lp, np.array([0, 0, 1])).tolist()
        [1, 2, 0]
    """
    loss = -log_probs[_rows(log_probs), targets]
    return _sorted(_rows(log_probs), -loss, k)


def most_correct(log_probs: np.ndarray, targets: np.ndarray, cls: int | None = None,
                 k: int | None = None) -> np.ndarray:
    """Correctly classified images (of true class ``cls``, or any), most confident first.

    Example:
        >>> lp = np.log([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
        >>> most_correct(lp, np.array([0, 0, 1]), cls=0).tolist()
        [0, 1]
    """
    return _by_true_class_prob(log_probs, targets, cls, k, correct=True)


def most_incorrect(log_probs: np.ndarray, targets: np.ndarray, cls: int | None = None,
                   k: int | None = None) -> np.ndarray:
    """Misclassified images (of true class ``cls``, or any), lowest p(true class) first.

    Example:
        >>> lp = np.log([[0.3, 0.7], [0.1, 0.9], [0.2, 0.8]])
        >>> most_incorrect(lp, np.array([0, 0, 1]), cls=0).tolist()
        [1, 0]
    """
    return _by_true_class_prob(log_probs, targets, cls, k, correct=False)


def _by_true_class_prob(log_probs: np.ndarray, targets: np.ndarray, cls: int | None,
                        k: int | None, correct: bool) -> np.ndarray:
    """Right (or wrong) predictions of true class ``cls`` (or any), ordered by p(true class):
    highest first for right ones, lowest first for wrong ones."""
    mask = (log_probs.argmax(1) == targets) == correct
    if cls is not None:
        mask &= targets == cls
    true_log_prob = log_probs[_rows(log_probs), targets]
    return _sorted(np.flatnonzero(mask), -true_log_prob if correct else true_log_prob, k)


def margin(probs: np.ndarray) -> np.ndarray:
    """Highest minus second-highest probability per row; 0 = torn between two classes.

    Example:
        >>> margin(np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])).round(2).tolist()
        [0.2, 0.85]
    """
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def most_uncertain(probs: np.ndarray, k: int | None = None) -> np.ndarray:
    """Indices by ascending :func:`margin` (for two classes: by ``|p - 0.5|``).

    Example:
        >>> most_uncertain(np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7]])).tolist()
        [1, 2, 0]
    """
    return _sorted(np.arange(len(probs)), margin(probs), k)


def random_pick(mask: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Up to ``k`` indices where ``mask`` is True, drawn without replacement, repeatably.

    Example:
        >>> sorted(random_pick(np.array([True, False, True]), 5).tolist())
        [0, 2]
    """
    candidates = np.flatnonzero(mask)
    rng = np.random.default_rng(seed)
    return rng.permutation(candidates)[:k]


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class.

    Example:
        >>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (targets, preds), 1)
    return cm


def confused_pairs(cm: np.ndarray, classes: Sequence[str],
                   min_count: int = 1) -> list[tuple[str, str, int]]:
    """Mix-ups seen ``min_count`` or more times, as (true, predicted, count), most first.

    Example:
        >>> confused_pairs(np.array([[5, 2], [1, 6]]), ["cats", "dogs"])
        [('cats', 'dogs', 2), ('dogs', 'cats', 1)]
    """
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off >= max(1, min_count))
    pairs = sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=lambda rc: (-off[rc], rc))
    return [(classes[r], classes[c], int(off[r, c])) for r, c in pairs]


def reduce_confusion(cm: np.ndarray, classes: Sequence[str],
                     max_classes: int = MAX_CLASSES) -> tuple[np.ndarray, list[str]]:
    """At most ``max_classes`` rows and columns: the classes with the most errors, then "other".

    Kept classes stay in their original order; all the others are summed into one last row and
    column, so the total count does not change.

    Example:
        >>> cm = np.diag([3, 4, 5]); cm[0, 1] = 2
        >>> small, names = reduce_confusion(cm, ["a", "b", "c"], 2)
        >>> names, small.tolist(), int(small.sum()) == int(cm.sum())
        (['a', 'other (2 classes)'], [[3, 2], [0, 9]], True)
    """
    n = len(classes)
    if max_classes < 2:
        raise ValueError(f"max_classes must be at least 2, got {max_classes!r}.")
    if n <= max_classes:
        return cm, list(classes)
    errors = cm.sum(0) + cm.sum(1) - 2 * np.diag(cm)
    keep = np.sort(np.lexsort((np.arange(n), -errors))[: max_classes - 1])
    index = np.full(n, max_classes - 1)
    index[keep] = np.arange(len(keep))
    small = np.zeros((max_classes, max_classes), dtype=cm.dtype)
    np.add.at(small, (index[:, None], index[None, :]), cm)
    names = [classes[i] for i in keep] + [f"other ({n - len(keep)} classes)"]
    return small, names
