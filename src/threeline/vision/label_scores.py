"""Multi-label scores on arrays: decisions at thresholds, F-beta, thresholds tuned per label,
per-label metrics, the most wrong images, co-occurrence (used by
:mod:`threeline.vision.multilabel`, checkable on their own).

Arrays: ``probs`` (N, L), ``targets`` (N, L) of 0/1, ``thresholds`` (L,). F-beta is averaged over
samples, as Kaggle's Planet competition scored it; a sample with no true and no predicted label
scores 1.

    thresholds = tune_thresholds(probs, targets, beta=2.0)   # (L,)
    score = fbeta_samples(probs, targets, thresholds)         # one number
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)  # thresholds tried by tune_thresholds


def decide(probs: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """(N, L) booleans: each label's probability above its threshold.

    Example:
        >>> decide(np.array([[0.6, 0.3]]), np.array([0.5, 0.2])).tolist()
        [[True, True]]
    """
    return np.asarray(probs) > np.asarray(thresholds, dtype=np.float64).reshape(1, -1)


def fbeta_per_sample(preds: np.ndarray, targets: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """(N,) F-beta of each sample's predicted label set against its true one.

    Example:
        >>> fbeta_per_sample(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]), 2.0).round(4).tolist()
        [0.8333]
    """
    preds, targets = np.asarray(preds, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    b2 = beta * beta
    tp = (preds * targets).sum(1)
    den = b2 * targets.sum(1) + preds.sum(1)
    return np.where(den == 0, 1.0, (1 + b2) * tp / np.maximum(den, 1e-12))


def fbeta_samples(probs: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray = 0.5,
                  beta: float = 2.0) -> float:
    """Sample-averaged F-beta at ``thresholds`` (Kaggle Planet's F2 for ``beta=2``).

    Example:
        >>> fbeta_samples(np.array([[0.9, 0.1], [0.2, 0.7]]), np.array([[1, 0], [0, 1]]))
        1.0
    """
    return float(fbeta_per_sample(decide(probs, thresholds), targets, beta).mean())


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, beta: float = 2.0,
                    grid: np.ndarray = GRID, rounds: int = 2,
                    min_positives: int = 20) -> np.ndarray:
    """One threshold per label maximizing sample-averaged F-beta: the best common threshold
    first, then ``rounds`` passes that improve one label at a time with the others fixed.

    A label with fewer than ``min_positives`` positive images keeps the common threshold: a
    threshold chosen on a handful of images fits them, not the next ones. Where several
    thresholds score the same, the middle of that run is taken, so a threshold sits away from
    the edge of the scores it was chosen on.

    Returns:
        float32 (L,) thresholds from ``grid``.

    Example:
        >>> probs = np.array([[0.9, 0.3], [0.2, 0.25], [0.8, 0.1]])
        >>> tune_thresholds(probs, np.array([[1, 1], [0, 1], [1, 0]]), min_positives=1).tolist()
        [0.5, 0.17000000178813934]
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != y.shape or len(probs) == 0:
        raise ValueError(f"Expected probabilities and 0/1 targets of the same shape (N, L), "
                         f"got {probs.shape} and {y.shape}.")
    grid = np.asarray(grid, dtype=np.float64)
    b2 = beta * beta
    common = [fbeta_samples(probs, y, t, beta) for t in grid]
    thresholds = np.full(probs.shape[1], grid[_middle_of_best(np.asarray(common))])
    tunable = np.flatnonzero(y.sum(0) >= min_positives)
    for _ in range(rounds):
        for j in tunable:
            preds = decide(probs, thresholds).astype(np.float64)  # (N, L)
            preds[:, j] = 0
            tp_rest, pred_rest = (preds * y).sum(1), preds.sum(1)  # (N,)
            on = (probs[:, j, None] > grid[None]).astype(np.float64)  # (N, G)
            tp = tp_rest[:, None] + on * y[:, j, None]
            den = b2 * y.sum(1)[:, None] + pred_rest[:, None] + on
            score = np.where(den == 0, 1.0, (1 + b2) * tp / np.maximum(den, 1e-12)).mean(0)
            thresholds[j] = grid[_middle_of_best(score)]
    return thresholds.astype(np.float32)


def _middle_of_best(scores: np.ndarray) -> int:
    """The index in the middle of the longest run of best scores."""
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    longest = max(runs, key=len)
    return int(longest[len(longest) // 2])


def confusion_counts(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(L, 4) counts per label: true positives, false positives, false negatives, true
    negatives.

    Example:
        >>> confusion_counts(np.array([[1, 0], [1, 1]]), np.array([[1, 1], [0, 1]])).tolist()
        [[1, 1, 0, 0], [1, 0, 1, 0]]
    """
    p, y = np.asarray(preds).astype(bool), np.asarray(targets).astype(bool)
    return np.stack([(p & y).sum(0), (p & ~y).sum(0), (~p & y).sum(0), (~p & ~y).sum(0)], 1)


def label_metrics(preds: np.ndarray, targets: np.ndarray,
                  classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per label: precision, recall, F1 and support (true images), and the four counts.

    Example:
        >>> m = label_metrics(np.array([[1, 0], [1, 1]]), np.array([[1, 1], [0, 1]]), ["a", "b"])
        >>> m["a"]["precision"], m["b"]["recall"]
        (0.5, 0.5)
    """
    out = {}
    for name, (tp, fp, fn, tn) in zip(classes, confusion_counts(preds, targets), strict=True):
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "support": int(tp + fn), "tp": int(tp), "fp": int(fp), "fn": int(fn),
                     "tn": int(tn)}
    return out


def format_label_metrics(metrics: dict[str, dict[str, float]]) -> str:
    """A plain-text table of :func:`label_metrics`.

    Example:
        >>> print(format_label_metrics({"a": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3,
        ...     "support": 2, "tp": 1, "fp": 0, "fn": 1, "tn": 3}}))
        label  precision  recall  f1      support  tp  fp  fn  tn
        a      1.0000     0.5000  0.6667  2        1   0   1   3
    """
    width = max(5, *(len(n) for n in metrics))
    lines = [f"{'label':<{width}}  precision  recall  f1      support  tp  fp  fn  tn"]
    for name, m in metrics.items():
        lines.append(f"{name:<{width}}  {m['precision']:<9.4f}  {m['recall']:<6.4f}  "
                     f"{m['f1']:<6.4f}  {m['support']:<7d}  {m['tp']:<2d}  {m['fp']:<2d}  "
                     f"{m['fn']:<2d}  {m['tn']}")
    return "\n".join(lines)


def most_wrong(probs: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray,
               k: int | None = None) -> np.ndarray:
    """Indices of the images with the most wrong labels; ties by the summed distance of the
    probabilities from the truth (largest first), then by position.

    Example:
        >>> probs = np.array([[0.9, 0.8], [0.1, 0.9], [0.6, 0.2]])
        >>> most_wrong(probs, np.array([[0, 0], [0, 1], [0, 0]]), 0.5).tolist()
        [0, 2, 1]
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    wrong = (decide(probs, thresholds) != y.astype(bool)).sum(1)  # (N,)
    distance = np.abs(probs - y).sum(1)
    order = np.lexsort((np.arange(len(probs)), -distance, -wrong))
    return order if k is None else order[:k]


def cooccurrence(rows: np.ndarray) -> np.ndarray:
    """(L, L) images carrying both labels; the diagonal counts each label alone or not.

    Example:
        >>> cooccurrence(np.array([[1, 1], [1, 0]])).tolist()
        [[2, 1], [1, 1]]
    """
    rows = np.asarray(rows, dtype=np.int64)
    return rows.T @ rows


def label_rows(files: Sequence, labels: Sequence, classes: Sequence[str]) -> np.ndarray:
    """(N, L) 0/1 targets from one entry per file: a multi-hot row, or a list of label names.

    Example:
        >>> label_rows(["a.jpg", "b.jpg"], [["x"], (0, 1)], ["x", "y"]).tolist()
        [[1, 0], [0, 1]]
    """
    labels = list(labels)
    if len(labels) != len(files):
        raise ValueError(f"Got {len(labels)} labels for {len(files)} images; pass one list of "
                         f"label names (or one 0/1 row) per image.")
    out = np.zeros((len(files), len(classes)), dtype=np.int64)
    for i, label in enumerate(labels):
        names = [label] if isinstance(label, str) else list(label)
        if names and all(isinstance(v, (int, np.integer)) for v in names):
            if len(names) != len(classes) or any(v not in (0, 1) for v in names):
                raise ValueError(f"Label row {i} is {label!r}: a 0/1 row needs {len(classes)} "
                                 f"entries, one per label ({', '.join(classes)}).")
            out[i] = names
            continue
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise ValueError(f"Unknown label(s) {unknown} for image {i}; the labels are "
                             f"{list(classes)}.")
        out[i, [list(classes).index(n) for n in names]] = 1
    return out
