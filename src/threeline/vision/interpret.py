"""Look inside the model: the images it gets right, wrong or is unsure about; confusion matrices.

    interp = learn.interpret()            # the validation set
    interp.plot_top_losses(9)
    interp.plot_confusion_matrix()
    interp.most_confused()

Selection is done by plain functions on arrays (:mod:`threeline.vision.selection`), so it can be
checked on its own; :class:`Interpretation` ties them to the images and draws them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from threeline.vision import augment as augmentations
from threeline.vision.augment import Augment
from threeline.vision.presize import Presized, PresizeImage
from threeline.vision.selection import (
    MAX_CLASSES,
    confused_pairs,
    confusion_matrix,
    most_correct,
    most_incorrect,
    most_uncertain,
    random_pick,
    reduce_confusion,
    top_losses,
)
from threeline.vision.transforms import Preprocess

if TYPE_CHECKING:
    from threeline.plots import PlotFigure
    from threeline.vision.protocol import VisionData, VisionLearner
# threeline.plots (and so matplotlib, ~0.5 s to import) is imported by the functions that draw


# ----------------------------------------------------------------- the Interpretation


class Interpretation:
    """Predictions on a set of labelled images, with plots to look at them.

    Make one with :meth:`Learner.interpret` (or :meth:`from_learner`), or from your own
    predictions with the constructor.

    Args:
        log_probs: (N, C) log-probabilities, e.g. ``learn.predict()`` or ``learn.tta()``.
        targets: (N,) true class indices.
        items: the N images (files or PIL images), in the same order.
        classes: the C class names.
        show: turns an item into a uint8 (3, S, S) tensor for display (default: center crop 224).

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> data = ImageData.from_folder(demo_path())
        >>> learn = Learner.pretrained("efficientnet_lite0", data, precompute=True)
        >>> interp = Interpretation(learn.predict(), data.valid.labels, data.valid.files,
        ...                         data.classes)
        >>> int(interp.confusion_matrix().sum())
        40
    """

    def __init__(self, log_probs: np.ndarray, targets: Sequence[int], items: Sequence,
                 classes: Sequence[str], show: Callable | None = None):
        self.log_probs = np.asarray(log_probs, dtype=np.float64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.items, self.classes = list(items), list(classes)
        self.show = show or Preprocess(size=224)
        n, c = self.log_probs.shape if self.log_probs.ndim == 2 else (-1, -1)
        if c != len(self.classes) or len(self.targets) != n or len(self.items) != n:
            raise ValueError(
                f"Expected log_probs of shape (N, {len(self.classes)}) with N targets and N "
                f"items; got log_probs {self.log_probs.shape}, {len(self.targets)} targets, "
                f"{len(self.items)} items. Pass predictions and labels for the same images."
            )
        if n and (self.targets.min() < 0 or self.targets.max() >= c):
            raise ValueError(f"targets must be class indices in 0..{c - 1}, got values from "
                             f"{self.targets.min()} to {self.targets.max()}.")

    @classmethod
    def from_learner(cls, learn: VisionLearner, items: Sequence | str | os.PathLike | None = None,
                     labels: Sequence[int | str] | None = None) -> Interpretation:
        """Predict with ``learn`` and wrap the result; see :meth:`Learner.interpret`.

        Example:
            >>> interp = Interpretation.from_learner(learn)  # doctest: +SKIP
        """
        if items is None:
            if labels is not None:
                raise ValueError("labels were given without items; pass the images they "
                                 "belong to, e.g. learn.interpret(files, labels).")
            valid = learn.data.valid
            return cls(learn.predict(), valid.labels, valid.files, learn.classes,
                       learn.preprocess)
        from threeline.vision.images import expand_items

        files = expand_items(items)
        targets = true_labels(files, labels, learn.classes)
        return cls(learn.predict(files), targets, files, learn.classes, learn.preprocess)

    # ------------------------------------------------------------- numbers

    @property
    def probs(self) -> np.ndarray:
        """(N, C) probabilities."""
        return np.exp(self.log_probs)

    @property
    def preds(self) -> np.ndarray:
        """(N,) predicted class indices."""
        return self.log_probs.argmax(1)

    @property
    def losses(self) -> np.ndarray:
        """(N,) cross-entropy loss per image."""
        return -self.log_probs[np.arange(len(self.targets)), self.targets]

    @property
    def correct(self) -> np.ndarray:
        """(N,) True where the prediction is right."""
        return self.preds == self.targets

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        n, right = len(self), int(self.correct.sum())
        accuracy = f"{right / n:.1%}" if n else "n/a"
        return (f"Interpretation of {n} images, {len(self.classes)} classes: {right} correct, "
                f"{n - right} incorrect (accuracy {accuracy})")

    def confusion_matrix(self) -> np.ndarray:
        """(C, C) counts, row = true class, column = predicted class.

        Example:
            >>> learn.interpret().confusion_matrix()  # doctest: +SKIP
            array([[19,  1],
                   [ 2, 18]])
        """
        return confusion_matrix(self.targets, self.preds, len(self.classes))

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(true, predicted, count) for mix-ups seen at least ``min_count`` times, most first.

        Example:
            >>> learn.interpret().most_confused()  # doctest: +SKIP
            [('cats', 'dogs', 2), ('dogs', 'cats', 1)]
        """
        return confused_pairs(self.confusion_matrix(), self.classes, min_count)

    # ------------------------------------------------------------- image plots

    def plot_random_correct(self, k: int = 9, seed: int = 0,
                            save: str | os.PathLike | None = None) -> PlotFigure:
        """``k`` correctly classified images picked at random (``seed`` repeats the pick).

        Example:
            >>> fig = interp.plot_random_correct(4, save="correct.png")  # doctest: +SKIP
        """
        idx = random_pick(self.correct, _check_k(k), seed)
        return self._grid(idx, "Correct, at random", int(self.correct.sum()), save)

    def plot_random_incorrect(self, k: int = 9, seed: int = 0,
                              save: str | os.PathLike | None = None) -> PlotFigure:
        """``k`` misclassified images picked at random (``seed`` repeats the pick).

        Example:
            >>> fig = interp.plot_random_incorrect(4)  # doctest: +SKIP
        """
        idx = random_pick(~self.correct, _check_k(k), seed)
        return self._grid(idx, "Incorrect, at random", int((~self.correct).sum()), save)

    def plot_most_correct(self, cls: int | str | None = None, k: int = 9,
                          save: str | os.PathLike | None = None) -> PlotFigure:
        """Images of class ``cls`` (None: any) classified right with the highest probability.

        Example:
            >>> fig = interp.plot_most_correct("cats")  # doctest: +SKIP
        """
        c = self._class_index(cls)
        found = most_correct(self.log_probs, self.targets, c)
        return self._grid(found[: _check_k(k)], f"Most correct{self._of(c)}", len(found), save)

    def plot_most_incorrect(self, cls: int | str | None = None, k: int = 9,
                            save: str | os.PathLike | None = None) -> PlotFigure:
        """Images of class ``cls`` (None: any) misclassified, lowest p(true class) first.

        Example:
            >>> fig = interp.plot_most_incorrect("dogs")  # doctest: +SKIP
        """
        c = self._class_index(cls)
        found = most_incorrect(self.log_probs, self.targets, c)
        return self._grid(found[: _check_k(k)], f"Most incorrect{self._of(c)}", len(found), save)

    def plot_most_uncertain(self, k: int = 9,
                            save: str | os.PathLike | None = None) -> PlotFigure:
        """Images whose two most likely classes are closest in probability (see
        :func:`threeline.vision.selection.margin`).

        Example:
            >>> fig = interp.plot_most_uncertain()  # doctest: +SKIP
        """
        idx = most_uncertain(self.probs, _check_k(k))
        return self._grid(idx, "Most uncertain", len(self), save)

    def plot_top_losses(self, k: int = 9, save: str | os.PathLike | None = None) -> PlotFigure:
        """The ``k`` images with the highest loss; titles add the loss.

        Example:
            >>> fig = interp.plot_top_losses(9, save="top_losses.png")  # doctest: +SKIP
        """
        idx = top_losses(self.log_probs, self.targets, _check_k(k))
        return self._grid(idx, "Top losses", len(self), save, with_loss=True)

    def title(self, i: int, with_loss: bool = False) -> str:
        """Image ``i``'s title: predicted class and its probability, the true class if different.

        Example:
            >>> interp.title(0)  # doctest: +SKIP
            'cats 0.982'
        """
        from threeline.plots import short
        pred, target = int(self.preds[i]), int(self.targets[i])
        text = f"{short(self.classes[pred])} {self.probs[i, pred]:.3f}"
        if pred != target:
            text += f"\ntrue: {short(self.classes[target])}"
        if with_loss:
            text += f"\nloss {self.losses[i]:.2f}"
        return text

    def _grid(self, idx: np.ndarray, what: str, found: int, save, with_loss=False) -> PlotFigure:
        from threeline.plots import image_array, image_grid, save_png
        if len(idx) == 0:
            heading = f"{what}: none among {len(self)} images"
        else:
            heading = f"{what}: {len(idx)} of {found}"
        images = [image_array(self.show(self.items[i])) for i in idx]
        titles = [self.title(i, with_loss) for i in idx]
        colors = ["darkgreen" if self.correct[i] else "firebrick" for i in idx]
        fig = image_grid(images, titles, heading, colors)
        save_png(fig, save)
        return fig

    def _class_index(self, cls: int | str | None) -> int | None:
        if cls is None:
            return None
        if isinstance(cls, str) and cls in self.classes:
            return self.classes.index(cls)
        if isinstance(cls, (int, np.integer)) and 0 <= cls < len(self.classes):
            return int(cls)
        shown = ", ".join(repr(c) for c in self.classes[:10])
        more = ", ..." if len(self.classes) > 10 else ""
        raise ValueError(f"Unknown class {cls!r}. Expected a class name ({shown}{more}), an "
                         f"index from 0 to {len(self.classes) - 1}, or None for all classes.")

    def _of(self, c: int | None) -> str:
        from threeline.plots import short
        return "" if c is None else f" ({short(self.classes[c])})"

    # ------------------------------------------------------------- confusion matrix

    def plot_confusion_matrix(self, normalize: bool = False, max_classes: int = MAX_CLASSES,
                              save: str | os.PathLike | None = None) -> PlotFigure:
        """Counts of true (rows) against predicted (columns) classes.

        Args:
            normalize: show each row as fractions of that class's images (recall on the diagonal).
            max_classes: with more classes, the ``max_classes - 1`` classes with the most errors
                are kept and the rest summed into an "other" row and column.
            save: a ``.png`` path to write.

        Example:
            >>> fig = interp.plot_confusion_matrix(normalize=True)  # doctest: +SKIP
        """
        from threeline.plots import matrix_figure, save_png
        cm, names = reduce_confusion(self.confusion_matrix(), self.classes, max_classes)
        values = cm.astype(np.float64)
        if normalize:
            values = values / np.maximum(values.sum(1, keepdims=True), 1)
        fig = matrix_figure(values, names, normalize)
        title = f"Confusion matrix, {len(self)} images"
        if len(names) < len(self.classes):
            title += f"\n{len(names) - 1} of {len(self.classes)} classes (most errors) + other"
        fig.axes[0].set_title(title, fontsize=11)
        fig.tight_layout()
        save_png(fig, save)
        return fig


# ----------------------------------------------------------------- helpers


def true_labels(files: Sequence, labels: Sequence[int | str] | None,
                classes: Sequence[str]) -> list[int]:
    """Class indices for ``files``: from ``labels`` (indices or names), else each file's folder.

    Example:
        >>> true_labels([Path("valid/dogs/1.jpg")], None, ["cats", "dogs"])
        [1]
    """
    if labels is None:
        names = []
        for f in files:
            if not isinstance(f, (str, os.PathLike)):
                raise ValueError("Cannot tell the true class of an in-memory image; pass "
                                 "labels=[...] with one class name or index per image.")
            names.append(Path(f).parent.name)
        unknown = sorted({n for n in names if n not in classes})
        if unknown:
            raise ValueError(
                f"Cannot tell the true class of every image: folder name(s) {unknown[:5]} are "
                f"not classes ({', '.join(classes[:10])}). Put images in class-named folders "
                f"or pass labels=[...]."
            )
        labels = names
    labels = list(labels)
    if len(labels) != len(files):
        raise ValueError(f"Got {len(labels)} labels for {len(files)} images; pass one label "
                         f"(class name or index) per image.")
    out = []
    for label in labels:
        if isinstance(label, str) and label in classes:
            out.append(list(classes).index(label))
        elif isinstance(label, (int, np.integer)) and 0 <= label < len(classes):
            out.append(int(label))
        else:
            raise ValueError(f"Unknown label {label!r}: expected a class name from "
                             f"{list(classes)[:10]} or an index from 0 to {len(classes) - 1}.")
    return out


def _check_k(k: int) -> int:
    from threeline.plots import MAX_IMAGES
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (the number of images) must be a positive int, got {k!r}.")
    return min(int(k), MAX_IMAGES)


def show_batch(data: VisionData, k: int = 9, augment: str | Augment | None = None,
               seed: int = 0, save: str | os.PathLike | None = None) -> PlotFigure:
    """A grid of ``k`` random training images with their labels, augmented when asked.

    Args:
        data: an :class:`ImageData`.
        k: how many images (at most 36).
        augment: None shows the center crop the model sees without augmentation; ``"side_on"``,
            ``"top_down"`` or an :class:`~threeline.augment.Augment` (e.g. ``learn.augment``)
            shows the images as training sees them. Change ``seed`` to see other random changes.
        seed: picks the images and the random augmentations.
        save: a ``.png`` path to write.

    Example:
        >>> from threeline import ImageData, demo_path
        >>> fig = show_batch(ImageData.from_folder(demo_path()), k=4, augment="side_on")
        >>> sum(1 for ax in fig.axes if ax.images)
        4
    """
    from threeline.plots import image_array, image_grid, save_png, short
    k, augment = _check_k(k), augmentations.get(augment)
    size = data.size or 224
    idx = random_pick(np.ones(len(data.train), dtype=bool), k, seed).tolist()
    resize = PresizeImage(Preprocess(size=size).resize_to)
    no_labels = torch.zeros(len(idx), dtype=torch.int64)
    cache = Presized([resize(data.train.files[i]) for i in idx], no_labels, resize.short)
    if augment is None:
        images = cache.center_crops(range(len(idx)), size)
    else:
        padded, sizes, _ = cache.batch(range(len(idx)))
        generator = torch.Generator().manual_seed(seed)
        images = augment(padded, sizes, size, generator).mul_(255).round_().to(torch.uint8)
    from threeline.vision.tables import label_names

    titles = ["\n".join(short(n) for n in label_names(data.classes, data.train.labels[i]))
              or "(no label)" for i in idx]
    what = "Training images" + (", augmented" if augment is not None else "")
    fig = image_grid([image_array(im) for im in images], titles,
                     f"{what}: {len(idx)} of {len(data.train)}")
    save_png(fig, save)
    return fig
