"""``Learner.pretrained``: an ImageNet-pretrained body with a new head for your classes."""

from __future__ import annotations

import os

import torch

from threeline.devices import as_device
from threeline.vision import augment as augmentation
from threeline.vision.data import ImageData
from threeline.vision.learner import ImageLearner
from threeline.vision.model import Body, check_head, make_head
from threeline.vision.transforms import Preprocess
from threeline.vision.weights import DEFAULT_ARCH, create_backbone


def pretrained(arch: str | None = None, data: ImageData | None = None,
               precompute: bool = False, device: str | torch.device | None = None,
               weights: str | os.PathLike | None = None, seed: int = 0,
               cache_dir: str | os.PathLike | None = None, hidden: int = 512,
               dropout: float = 0.25, progress: bool = True,
               augment: str | augmentation.Augment | None = None) -> ImageLearner:
    """An ImageNet-pretrained backbone with a new head for ``len(data.classes)`` classes.

    Args:
        arch: a name from :func:`threeline.available_models` (works offline) or any timm
            model name (downloads weights when online). None picks ``efficientnet_lite2``.
        data: an :class:`ImageData`.
        precompute: cache the frozen backbone's activations once and train the head on them.
        device: ``"cuda"``, ``"cpu"``, ...; None picks CUDA when present.
        weights: a local weights file to use instead of the default source.
        seed: makes the head's initialisation and the batch order repeatable.
        cache_dir: where activations are cached (default: :func:`threeline.cache_dir`).
        hidden, dropout: the head's hidden width, and its dropout: ``dropout`` before its
            first layer, twice that before its last (so below 0.5).
        progress: show progress bars / lines.
        augment: None, ``"side_on"`` (photos), ``"top_down"`` (satellite, microscopy) or an
            :class:`threeline.augment.Augment`; training batches are augmented on the device.
            Needs ``precompute=False``.

    Example:
        >>> from threeline import ImageData, demo_path
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
    check_head(hidden, dropout)
    arch = arch or DEFAULT_ARCH
    network, config, weights_id = create_backbone(arch, weights=weights)
    body = Body(network)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = make_head(body.out_features, len(data.classes), hidden, dropout)
    device = as_device(device)
    learn = ImageLearner(body, head, data, Preprocess.from_config(config, data.size), arch,
                weights_id, device, seed, cache_dir, progress)
    learn.precompute = precompute
    if augment is not None:
        learn.augment = augment
    return learn
