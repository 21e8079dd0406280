"""Test-time augmentation: predictions averaged over the plain view and augmented copies."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from threeline.vision import augment as augmentation
from threeline.vision import batches
from threeline.vision.images import expand_items
from threeline.vision.presize import presize
from threeline.vision.transforms import to_device

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionLearner


@torch.inference_mode()
def tta_log_probs(learn: VisionLearner, n: int = 4,
                  items: Sequence | str | os.PathLike | Image.Image | None = None,
                  seed: int = 0) -> np.ndarray:
    """Log of the probabilities averaged over the plain view and ``n`` augmented copies (for
    multi-label data the averaged probabilities themselves, (N, L)); see
    :meth:`ImageLearner.tta`."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number of augmented copies >= 0, got {n!r}.")
    files = learn.data.valid.files if items is None else expand_items(items)
    labels = learn.data.valid.labels if items is None else None
    if items is None:
        cache = batches.presized_cache(learn, files, labels)
    else:  # new images: decoded for this call only
        cache = presize(files, None, short=learn.preprocess.resize_to,
                        interpolation=learn.preprocess.interpolation,
                        num_workers=learn.data.num_workers, device=learn.device,
                        max_pixels=learn.data.max_pixels)
    aug = (learn.augment or augmentation.side_on()).for_tta()
    flip = aug.flip or aug.dihedral
    generator = torch.Generator().manual_seed(seed)
    learn.body.eval()
    learn.head.eval()
    probs = torch.zeros(len(cache), len(learn.classes), device=learn.device)  # (N, C)
    bs, size = learn.data.batch_size, learn.preprocess.size
    for view in range(n + 1):
        for start in range(0, len(cache), bs):
            index = list(range(start, min(start + bs, len(cache))))
            if view <= 1 and (view == 0 or flip):  # the plain view, and its mirror image
                images = to_device(cache.center_crops(index, size), learn.device)
                images = images if view == 0 else images.flip(-1)
            else:
                padded, sizes, _ = cache.batch(index)
                images = aug(to_device(padded, learn.device), sizes, size, generator)
            with learn.autocast():
                logits = learn.head(learn.fast_body()(batches.model_input(learn, images)))
            probs[start:start + len(index)] += learn.loss.activation(logits)
    probs /= n + 1
    if learn.multi_label:  # independent probabilities, as predict returns them
        return probs.cpu().numpy()
    return torch.log(probs).cpu().numpy()  # one copy: the host never waits

