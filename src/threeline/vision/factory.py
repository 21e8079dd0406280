"""``Learner.pretrained``: an ImageNet-pretrained body with a new head for your classes."""

from __future__ import annotations

import os

import torch

from threeline.devices import as_device
from threeline.losses import BinaryCrossEntropy, CrossEntropy, Loss
from threeline.vision import augment as augmentation
from threeline.vision.data import ImageData
from threeline.vision.learner import ImageLearner
from threeline.vision.model import Body, check_head, head_width, make_head
from threeline.vision.transforms import Preprocess
from threeline.vision.weights import DEFAULT_ARCH, create_backbone


def pretrained(arch: str | None = None, data: ImageData | None = None,
               precompute: bool = False, device: str | torch.device | None = None,
               weights: str | os.PathLike | None = None, seed: int = 0,
               cache_dir: str | os.PathLike | None = None, hidden: int | None = None,
               dropout: float = 0.25, progress: bool = True,
               augment: str | augmentation.Augment | None = None,
               loss: Loss | None = None) -> ImageLearner:
    """An ImageNet-pretrained backbone with a new head for ``len(data.classes)`` classes.

    Multi-label data (``data.multi_label``, e.g. from ``ImageData.from_csv(...,
    label_delim=" ")``) gets :class:`~threeline.losses.BinaryCrossEntropy`: one independent
    probability per label, F2 and accuracy at the threshold in the epoch table.

    Args:
        arch: a name from :func:`threeline.available_models` (works offline) or any timm
            model name (downloads weights when online). None picks ``efficientnet_lite2``.
        data: an :class:`ImageData`.
        precompute: cache the frozen backbone's activations once and train the head on them.
        device: ``"cuda"``, ``"cpu"``, ...; None picks CUDA when present.
        weights: a local weights file to use instead of the default source.
        seed: makes the head's initialisation and the batch order repeatable.
        cache_dir: where activations are cached (default: :func:`threeline.cache_dir`).
        hidden: the head's hidden width; 0 for a linear head, which ``fit`` on cached
            activations solves (a logistic regression, its L2 penalty chosen by
            cross-validation on the training images; :mod:`threeline.vision.solve`). None
            picks 0 for up to 2,000 training images, else 512 (:func:`head_width`).
        dropout: ``dropout`` before the head's first layer, twice that before its last (so
            below 0.5).
        progress: show progress bars / lines.
        augment: None, ``"side_on"`` (photos), ``"top_down"`` (satellite, microscopy) or an
            :class:`threeline.augment.Augment`; training batches are augmented on the device.
            Needs ``precompute=False``.
        loss: None picks ``CrossEntropy()``, or ``BinaryCrossEntropy()`` for multi-label data;
            pass one to set e.g. ``label_smoothing`` or ``thresholds``.

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> data = ImageData.from_folder(demo_path(), size=224)
        >>> learn = Learner.pretrained("efficientnet_lite0", data)
        >>> learn.classes
        ['cats', 'dogs']
    """
    if not isinstance(data, ImageData):
        raise TypeError(
            f"data must be an ImageData (e.g. ImageData.from_folder('path/to/images')), "
            f"got {type(data).__name__}."
        )
    if hidden is None:
        hidden = head_width(len(data.train))
    check_head(hidden, dropout)
    loss = _loss_for(data, loss)
    arch = arch or DEFAULT_ARCH
    network, config, weights_id = create_backbone(arch, weights=weights)
    body = Body(network)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = make_head(body.out_features, len(data.classes), hidden, dropout)
    device = as_device(device)
    learn = ImageLearner(body, head, data, Preprocess.from_config(config, data.size), arch,
                weights_id, device, seed, cache_dir, progress, loss)
    learn.precompute = precompute
    if augment is not None:
        learn.augment = augment
    return learn


def _loss_for(data: ImageData, loss: Loss | None) -> Loss:
    """The loss that fits the data's labels: given, or picked from ``data.multi_label``."""
    multi = bool(getattr(data, "multi_label", False))
    if loss is None:
        return BinaryCrossEntropy() if multi else CrossEntropy()
    if multi != isinstance(loss, BinaryCrossEntropy):
        kind = "multi-label (several tags per image)" if multi else "single-label"
        fits = "BinaryCrossEntropy()" if multi else "CrossEntropy()"
        raise ValueError(f"The data is {kind}, but loss={loss!r}; pass loss={fits} or none.")
    return loss
