"""Real CIFAR-10 images for the from-scratch models' tests, read once per session."""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from conftest import shared_dataset
from threeline.batches import TensorData

PER_CLASS = 100  # 1,000 images: 800 to train, 200 to validate


@functools.cache
def cifar_small() -> TensorData:
    """1,000 real CIFAR-10 images (100 per class), normalised, in a seeded 800/200 split."""
    root = shared_dataset("cifar10") / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((root / name).glob("*.jpg"))[:PER_CLASS]:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(index)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # (N, 3, 32, 32)
    x = ((x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True))
    y = torch.tensor(labels)  # (N,)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, valid = order[:800], order[800:]
    return TensorData((x[train],), y[train], (x[valid],), y[valid], batch_size=32)
