"""Test-time augmentation: predictions averaged over the plain view and augmented copies."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from threeline.metrics import Accumulator
from threeline.progress import EpochTable, epoch_columns
from threeline.vision import augment as augmentation
from threeline.vision import batches
from threeline.vision.images import expand_items
from threeline.vision.presize import Presized, presize
from threeline.vision.transforms import to_device

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionLearner


def finish_with_tta(learn: VisionLearner, n: int) -> dict[str, float]:
    """Make ``predict`` average the plain view and ``n`` copies (``learn.tta_views = n``),
    score the validation set that way, add the figures to the last row of ``learn.history``
    as ``tta_<name>`` and print them as a last table row, ``tta``."""
    start = time.perf_counter()
    learn.tta_views = n
    result = tta_metrics(learn, n)
    if learn.history:
        learn.history[-1].update({f"tta_{k}": v for k, v in result.items()})
    if learn.world.main:
        table = EpochTable(epoch_columns(m.name for m in learn.metrics))
        table.started = True  # a row under fit's table
        table.row({"epoch": "tta", **result, "time": f"{time.perf_counter() - start:.2f}s"})
    return result


@torch.inference_mode()
def tta_log_probs(learn: VisionLearner, n: int = 4,
                  items: Sequence | str | os.PathLike | Image.Image | None = None,
                  seed: int = 0) -> np.ndarray:
    """Log of the probabilities averaged over the plain view and ``n`` augmented copies (for
    multi-label data the averaged probabilities themselves, (N, L)); see
    :meth:`ImageLearner.tta`."""
    probs, _ = averaged_probs(learn, n, items, seed)  # (N, C)
    if learn.multi_label:  # independent probabilities, as predict returns them
        return probs.cpu().numpy()
    return torch.log(probs).cpu().numpy()  # one copy: the host never waits


@torch.inference_mode()
def tta_metrics(learn: VisionLearner, n: int = 4, seed: int = 0) -> dict[str, float]:
    """``{"valid_loss": ..., metric: ...}`` of the validation set's TTA predictions (the plain
    view and ``n`` copies), as :meth:`threeline.learner.Learner.validate` reports the plain
    view's: what ``predict`` returns once ``learn.tta_views = n``."""
    probs, cache = averaged_probs(learn, n, None, seed)  # (N, C)
    targets = to_device(cache.labels, learn.device)  # (N,) or multi-hot (N, L)
    eps = 1e-7  # averaged probabilities back to what the loss and metrics take
    outputs = probs.clamp(eps, 1 - eps).logit() if learn.multi_label else probs.clamp_min(eps).log()
    acc = Accumulator(learn.metrics, learn.device)
    acc.add(learn.loss(outputs, targets), len(targets), outputs, targets)
    return acc.result()


def averaged_probs(learn: VisionLearner, n: int,
                   items: Sequence | str | os.PathLike | Image.Image | None,
                   seed: int) -> tuple[torch.Tensor, Presized]:
    """(N, C) probabilities averaged over the views, on the device, and the decoded images."""
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
    aug = (learn.augment or learn.tta_augment or augmentation.side_on()).for_tta()
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
    return probs, cache

