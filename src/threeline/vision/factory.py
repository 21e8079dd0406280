"""Image learners made: ``Learner.pretrained`` (an ImageNet-pretrained body with a new head for
your classes), and :func:`rebuild` (a saved model, for ``Learner.load``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from threeline.devices import as_device
from threeline.losses import BinaryCrossEntropy, CrossEntropy, Loss, from_description
from threeline.saving import ModelFileError
from threeline.vision import augment as augmentation
from threeline.vision.data import ImageData
from threeline.vision.export import load_into
from threeline.vision.learner import ImageLearner
from threeline.vision.model import Body, check_head, head_width, make_head
from threeline.vision.small_folder import input_size
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
    median = data.image_sizes.get("median")  # (width, height) of the median image
    size = data.size or input_size(config["input_size"][-1], config["native_size"],
                                   len(data.train), min(median) if median else None)
    learn = ImageLearner(body, head, data, Preprocess.from_config(config, size), arch,
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


def check_fields(meta: Path, info: dict) -> None:
    classes, pre, head = info.get("classes"), info.get("preprocess"), info.get("head")
    problems = []
    if not isinstance(info.get("arch"), str):
        problems.append("arch must be a model name")
    if not (isinstance(classes, list) and len(classes) >= 2
            and all(isinstance(c, str) for c in classes)):
        problems.append("classes must be a list of at least two names")
    if not (isinstance(pre, dict) and isinstance(pre.get("size"), int)
            and all(isinstance(pre.get(k), list) and len(pre[k]) == 3 for k in ("mean", "std"))):
        problems.append("preprocess must give size, mean and std")
    if not (isinstance(head, dict) and all(isinstance(head.get(k), int)
                                           for k in ("in_features", "hidden", "n_classes"))):
        problems.append("head must give in_features, hidden and n_classes")
    if problems:
        raise ModelFileError(f"{meta} is damaged: {'; '.join(problems)}. Save the model again.")


def rebuild(info: dict, tensors: dict[str, torch.Tensor], data: ImageData | None = None,
            device: str | torch.device | None = None, progress: bool = True,
            source: str = "the saved model") -> ImageLearner:
    """An :class:`ImageLearner` from a saved description and its tensors, ready to predict.

    Args:
        info, tensors: what :func:`threeline.saving.read_model` returns.
        data: an :class:`ImageData` with the same classes, to validate or train further; None
            gives a learner that only knows the class names (enough to predict).
        device: None picks CUDA when present, else the CPU.
    """
    check_fields(Path(source), info)
    pre, head_info, classes = info["preprocess"], info["head"], info["classes"]
    loss = saved_loss(info, source)
    multi = isinstance(loss, BinaryCrossEntropy)
    if data is None:
        data = ImageData.from_classes(classes, size=pre["size"])
        data.multi_label = multi
    elif list(data.classes) != classes:
        raise ValueError(
            f"The data's classes {data.classes} differ from the model's {classes}. Pass data "
            f"with the same class folders, or none to only predict.")
    elif bool(getattr(data, "multi_label", False)) != multi:
        raise ValueError(
            f"The model is {'multi' if multi else 'single'}-label but the data is not; pass "
            f"data labelled the same way (ImageData.from_csv with or without label_delim).")
    network, _, _ = create_backbone(info["arch"], pretrained=False)
    body = Body(network)
    head = make_head(head_info["in_features"], len(classes), head_info["hidden"],
                     float(head_info.get("dropout", 0.25)))
    load_into(body, head, tensors, source)
    preprocess = Preprocess(size=pre["size"], crop_pct=float(pre.get("crop_pct", 0.875)),
                            interpolation=str(pre.get("interpolation", "bicubic")),
                            mean=tuple(map(float, pre["mean"])), std=tuple(map(float, pre["std"])))
    digest = info.get("sha256") or _tensor_digest(tensors)
    weights_id = f"{info.get('timm_name', info['arch'])}:saved:{digest[:16]}"
    learn = ImageLearner(body, head, data, preprocess, info["arch"], weights_id,
                         as_device(device), progress=progress, loss=loss)
    learn.history = list(info.get("history") or [])
    learn.tta_views, learn.tta_augment = saved_tta(info, source)
    return learn


def saved_tta(info: dict, source: str = "the saved model"
              ) -> tuple[int, augmentation.Augment | None]:
    """The TTA copies ``predict`` averages and the augmentation they soften (0 and None for
    files written before TTA was saved).

    Example:
        >>> saved_tta({"tta": {"views": 4, "augment": {"dihedral": True}}})[1].dihedral
        True
    """
    saved = info.get("tta") or {}
    try:
        described = saved.get("augment")
        if described is not None and "ratio" in described:
            described = {**described, "ratio": tuple(described["ratio"])}
        augment = None if described is None else augmentation.Augment(**described)
        return int(saved.get("views", 0)), augment
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{source} describes its test-time augmentation wrongly ({err}). "
                             f"Save the model again with this version of threeline.") from err


def saved_loss(info: dict, source: str = "the saved model") -> Loss:
    """The loss object saved with a model (its thresholds included); CrossEntropy for files
    written before losses were saved.

    Example:
        >>> loss = saved_loss({"loss": {"name": "binary_cross_entropy", "thresholds": [0.3, 0.4]}})
        >>> type(loss).__name__, [round(t, 2) for t in loss.thresholds.tolist()]
        ('BinaryCrossEntropy', [0.3, 0.4])
    """
    described = info.get("loss")
    if described is None:
        return CrossEntropy()
    try:
        return from_description(described)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{source} describes an unknown loss ({err}). Save the model "
                             f"again with this version of threeline.") from err


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A content hash of tensors (files of format 1 carried no checksum)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].float().numpy().tobytes())
    return digest.hexdigest()
