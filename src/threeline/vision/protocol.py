"""What the image modules below the learner read off it and off its data, as types: batches,
cached features, export, TTA, interpretation, the folder and table checks are written against
:class:`VisionLearner` and :class:`VisionData`, which
:class:`~threeline.vision.learner.ImageLearner` and :class:`~threeline.vision.data.ImageData`
satisfy, so none of them imports those two (the vision counterpart of :mod:`threeline.protocol`).

    def tta_log_probs(learn: VisionLearner, n: int = 4, ...) -> np.ndarray: ...
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image
    from torch.utils.data import DataLoader

    from threeline.distributed import World
    from threeline.losses import Loss
    from threeline.vision.augment import Augment
    from threeline.vision.model import Body
    from threeline.vision.presize import Presized
    from threeline.vision.scan import Split
    from threeline.vision.transforms import Preprocess


class VisionData(Protocol):
    """The image data as the image modules see it (fields and methods they use)."""

    root: Path
    classes: list[str]
    train: Split
    valid: Split
    size: int | None
    batch_size: int
    num_workers: int | None
    skipped: dict[Path, str]
    max_pixels: int | None
    image_sizes: dict[str, tuple[int, int]]
    multi_label: bool
    _resident: Any  # the decoded images of squares.on_device

    def split(self, name: str) -> Split: ...

    def loader(self, files: Sequence, labels: Sequence[int] | None, transform: Callable,
               shuffle: bool = False, pin_memory: bool = False,
               generator: torch.Generator | None = None,
               batch_size: int | None = None) -> DataLoader: ...

    def report_failure(self, path: str, reason: str) -> None: ...


class VisionLearner(Protocol):
    """The image learner as the image modules see it (attributes and methods they use)."""

    data: VisionData
    device: torch.device
    seed: int
    epoch: int
    history: list[dict]
    world: World
    opt: torch.optim.Optimizer | None
    loss: Loss
    clip: float | None
    progress: bool
    cache: Path
    preprocess: Preprocess
    memory_format: torch.memory_format
    precompute: bool
    augment: Augment | None
    tta_views: int
    tta_augment: Augment | None
    step_memory: int | None
    arch: str
    weights_id: str
    _presized: dict[tuple, Presized]  # decode-once caches (batches.presized_cache)
    _cached: dict[str, tuple[torch.Tensor, torch.Tensor]]  # activations (features.ensure)
    _body_norms: list[nn.Module]
    _step_bytes: int | None
    _fit_module: nn.Module  # set by fit, as the core's loop does
    _step_module: nn.Module

    @property
    def classes(self) -> list[str]: ...

    @property
    def multi_label(self) -> bool: ...

    @property
    def mirrors_training_images(self) -> bool: ...

    @property
    def body(self) -> Body: ...

    @property
    def head(self) -> nn.Module: ...

    def autocast(self, module: nn.Module | None = None) -> contextlib.AbstractContextManager: ...

    def forward(self, module: nn.Module, x) -> torch.Tensor: ...

    def set_train_mode(self, module: nn.Module) -> None: ...

    def fast_body(self) -> nn.Module: ...

    def backbone_description(self) -> dict: ...

    def features(self, split: str, dtype: torch.dtype | None = torch.float32
                 ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def predict(self, items: Sequence | str | os.PathLike | Image.Image | None = None
                ) -> np.ndarray: ...

    def tta(self, n: int = 4, items: Sequence | str | os.PathLike | Image.Image | None = None,
            seed: int = 0) -> np.ndarray: ...
