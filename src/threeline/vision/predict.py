"""What a trained :class:`~threeline.vision.learner.ImageLearner` does with images: predict,
TTA, interpretation, and (thin, multi-label) threshold tuning and heat maps.

A mixin of ``ImageLearner`` only: its methods use the learner's ``data``, ``loss``, ``head``,
``fast_body()`` and ``get_preds()``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from threeline.vision import augment as augmentation
from threeline.vision import batches
from threeline.vision.images import expand_items
from threeline.vision.interpret import Interpretation
from threeline.vision.tta import tta_log_probs


class ImagePredictions:
    """The ``ImageLearner`` methods that use the trained model (see the module docstring)."""

    #: augmented copies :meth:`predict` (and so ``interpret`` and ``threeline predict``)
    #: averages with the plain view, as :meth:`tta` does; 0: the plain view alone.
    #: ``fine_tune`` sets it on small folders; it is saved with the model.
    tta_views: int = 0
    #: the augmentation :meth:`tta` softens when the learner has none (a loaded model's)
    tta_augment: augmentation.Augment | None = None

    def tta(self, n: int = 4, items: Sequence | str | os.PathLike | Image.Image | None = None,
            seed: int = 0) -> np.ndarray:
        """Log-probabilities (N, C) averaged over the plain view and ``n`` augmented copies;
        for multi-label data, the averaged independent probabilities (N, L), like :meth:`predict`.

        Probabilities (not logits) are averaged, then logged, so the result reads like
        :meth:`predict`. When the augmentation flips, the first copy is the plain view's mirror
        image; the others use a mild version of the training augmentation (flips and a gentle
        zoom; see :meth:`threeline.augment.Augment.for_tta`), or of ``side_on`` when the
        learner has none.

        Args:
            n: augmented copies per image.
            items: None for the validation set, else files, folders or PIL images.
            seed: makes the copies repeatable.

        Example:
            >>> from threeline import ImageData, Learner, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> learn.tta(n=2).shape
            (40, 2)
        """
        return tta_log_probs(self, n, items, seed)

    def _log_probs(self, items: Sequence) -> torch.Tensor:
        """(N, C) log-probabilities of files or PIL images, in order, on the device
        (multi-label: (N, L) probabilities; see :meth:`_readable`)."""
        found = batches.image_batches(self, items, None, shuffle=False,
                                      batch_size=batches.inference_batch_size(self))
        logits, _ = self.get_preds(found, nn.Sequential(self.fast_body(), self.head))
        return self._readable(logits)

    def _readable(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) -> what predict returns: log-probabilities, or for multi-label data
        independent probabilities (sigmoid)."""
        return self.loss.activation(logits) if self.multi_label else F.log_softmax(logits, 1)

    def predict(self,
                items: Sequence | str | os.PathLike | Image.Image | None = None) -> np.ndarray:
        """Log-probabilities (N, C) for the validation set, or for new images. For multi-label
        data: independent probabilities (N, L), one per label (a label is predicted where it
        exceeds ``learn.loss.thresholds``; see :meth:`tune_thresholds`).

        When :attr:`tta_views` is above 0 (``fine_tune`` on a small folder sets it), these are
        :meth:`tta`'s predictions with that many copies; set it to 0 for the plain view alone.

        Args:
            items: None for the validation set (in ``data.valid.files`` order); else a file, a
                folder (its images, sorted, recursively), a PIL image, or a list of those.

        Example:
            >>> from threeline import ImageData, Learner, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> log_preds = learn.predict()
            >>> np.allclose(np.exp(log_preds).sum(1), 1, atol=1e-4)
            True
        """
        if self.tta_views:
            return tta_log_probs(self, self.tta_views, items)
        if items is None:
            logits, _ = self.get_preds()
            return self._readable(logits).cpu().numpy()
        return self._log_probs(expand_items(items)).cpu().numpy()

    def interpret(self, items: Sequence | str | os.PathLike | Image.Image | None = None,
                  labels: Sequence[int | str] | None = None) -> Interpretation:
        """An :class:`~threeline.interpret.Interpretation`: plots of right, wrong, unsure images.

        For multi-label data a :class:`~threeline.vision.multilabel.MultiLabelInterpretation`:
        per-label counts and metrics, the images with the most wrong labels, co-occurrence.

        Args:
            items: None for the validation set; else files, folders or PIL images.
            labels: their true classes (names or indices); None reads each file's folder name.
                Multi-label: one list of label names (or a multi-hot row) per image.

        Example:
            >>> interp = learn.interpret()  # doctest: +SKIP
            >>> fig = interp.plot_top_losses(9, save="top_losses.png")  # doctest: +SKIP
        """
        if self.multi_label:
            from threeline.vision.multilabel import MultiLabelInterpretation

            return MultiLabelInterpretation.from_learner(self, items, labels)
        return Interpretation.from_learner(self, items, labels)

    # ------------------------------------------------ multi-label and heat maps (thin)

    def tune_thresholds(self, beta: float | None = None, tta: bool = False) -> np.ndarray:
        """Choose one threshold per label on the validation set, maximizing F-beta (samples),
        and keep them in ``learn.loss`` (saved with the model; the table's metrics use them).
        Multi-label only; see :func:`threeline.vision.multilabel.tune_learner_thresholds`.

        Example:
            >>> learn.tune_thresholds()  # doctest: +SKIP
            array([0.31, 0.24, 0.2 , 0.18, 0.35], dtype=float32)
        """
        from threeline.vision.multilabel import tune_learner_thresholds

        return tune_learner_thresholds(self, beta, tta)

    def heatmap(self, images, label=None) -> np.ndarray:
        """Grad-CAM heat maps (N, S, S) in [0, 1]: where the model looked for ``label`` (None:
        each image's top class); see :func:`threeline.vision.heatmap.heatmap`.

        Example:
            >>> learn.heatmap(["chip.jpg"], label="water").shape  # doctest: +SKIP
            (1, 224, 224)
        """
        from threeline.vision.heatmap import heatmap

        return heatmap(self, images, label)
