"""Grad-CAM: where an image classifier looked when it chose a class.

For each image, the gradient of the chosen class's score (its logit) with respect to the body's
last feature map gives one weight per channel (the gradient's spatial mean); the heat map is the
ReLU of the channel maps summed with those weights, upsampled to the model's input size and
scaled to [0, 1] (Selvaraju et al., 2017).

Only the pooling and the head are differentiated: the body runs once without gradients and its
last feature map becomes the leaf the gradient is taken against, so a heat map costs one forward
pass and a backward pass through the small head.

Example:
    >>> maps = heatmap(learn, ["cat.jpg", "dog.jpg"])  # doctest: +SKIP
    >>> maps.shape, float(maps.max())  # doctest: +SKIP
    ((2, 224, 224), 1.0)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionLearner

ImageItem = str | os.PathLike | Image.Image
Label = int | str | None

BATCH = 32  # images per forward pass


def heatmap(learn: VisionLearner, images: ImageItem | Sequence[ImageItem],
            label: Label | Sequence[Label] = None) -> np.ndarray:
    """Grad-CAM heat maps, float32 (N, S, S) in [0, 1], S the model's input size.

    Each map covers the center crop the model sees (``learn.preprocess``); 1 marks where the
    evidence for the class was strongest, an all-zero map means no positive evidence.

    Args:
        learn: an image learner (``Learner.pretrained`` or ``Learner.load``).
        images: a file, a PIL image, or a list of them.
        label: the class to explain: None for each image's top prediction, a class index or
            name for all images, or one of those per image.

    Example:
        >>> heatmap(learn, "cat.jpg", label="cats").shape  # doctest: +SKIP
        (1, 224, 224)
    """
    return grad_cam(learn, images, label)[0]


def grad_cam(learn: VisionLearner, images: ImageItem | Sequence[ImageItem],
             label: Label | Sequence[Label] = None) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps (N, S, S) in [0, 1] and the log-probabilities (N, C) of the same forward pass.

    Arguments as :func:`heatmap`.

    Example:
        >>> maps, log_probs = grad_cam(learn, ["cat.jpg"])  # doctest: +SKIP
        >>> learn.classes[int(log_probs[0].argmax())]  # doctest: +SKIP
        'cats'
    """
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
    if not items:
        raise ValueError("heatmap needs at least one image; got an empty list.")
    targets = _targets(label, len(items), list(learn.classes))
    maps, log_probs = [], []
    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        pixels = torch.stack([learn.preprocess(item) for item in chunk])  # (B, 3, S, S) uint8
        m, lp = cam_batch(learn, pixels, targets[start:start + BATCH])
        maps.append(m)
        log_probs.append(lp)
    return np.concatenate(maps), np.concatenate(log_probs)


def cam_batch(learn: VisionLearner, pixels: torch.Tensor,
              targets: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM for one batch of uint8 pixels (B, 3, S, S) as ``learn.preprocess`` makes them.

    ``targets``: a class index per image, or None for its top prediction.
    Returns heat maps (B, S, S) and log-probabilities (B, C) as float32 arrays.
    """
    body, head, p = learn.body, learn.head, learn.preprocess
    modes = (body.training, head.training)
    body.eval()
    head.eval()  # dropout off, BatchNorm on its statistics: images do not mix in a batch
    device = next(head.parameters()).device
    try:
        with torch.inference_mode(False), torch.no_grad():
            x = _normalize(pixels.to(device), p.mean, p.std)  # (B, 3, S, S) float32
            features = body.features.forward_features(x).float()  # (B, F, h, w)
        features = features.detach().requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            logits = head(body.pool(features)).float()  # (B, C)
            chosen = torch.tensor([-1 if t is None else t for t in targets], device=device)
            chosen = torch.where(chosen < 0, logits.argmax(1), chosen)  # (B,)
            score = logits.gather(1, chosen[:, None]).sum()  # images are independent
            (grads,) = torch.autograd.grad(score, features)  # (B, F, h, w)
        with torch.no_grad():
            weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, F, 1, 1)
            cam = F.relu((weights * features).sum(1, keepdim=True))  # (B, 1, h, w)
            cam = F.interpolate(cam, size=tuple(pixels.shape[2:]), mode="bilinear",
                                align_corners=False)[:, 0]  # (B, S, S)
            top = cam.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
            cam = torch.where(top > 0, cam / top.clamp_min(1e-12), torch.zeros_like(cam))
            log_probs = F.log_softmax(logits, dim=1)
    finally:
        body.train(modes[0])
        head.train(modes[1])
    return cam.clamp_(0, 1).cpu().numpy(), log_probs.detach().cpu().numpy()


def _normalize(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 ``(x / 255 - mean) / std`` per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - m) / s


def _targets(label: Label | Sequence[Label], n: int, classes: list[str]) -> list[int | None]:
    """One class index (or None: the top prediction) per image, checked against ``classes``."""
    labels = list(label) if isinstance(label, (list, tuple)) else [label] * n
    if len(labels) != n:
        raise ValueError(f"label has {len(labels)} entries for {n} images; give one per image, "
                         f"a single class for all, or None for each image's top prediction.")
    out: list[int | None] = []
    for value in labels:
        if value is None:
            out.append(None)
        elif isinstance(value, str):
            if value not in classes:
                raise ValueError(f"label {value!r} is not one of the model's classes {classes}.")
            out.append(classes.index(value))
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 0 <= int(value) < len(classes):
                raise ValueError(f"label index {value} is outside 0..{len(classes) - 1} "
                                 f"(the model has {len(classes)} classes).")
            out.append(int(value))
        else:
            raise TypeError(f"label must be None, a class name or a class index; got "
                            f"{type(value).__name__}.")
    return out
