"""What the pieces of the training loop read off a learner, as a type: callbacks, checkpoints
and the learning-rate finder are written against :class:`TrainingLearner`, which
:class:`threeline.learner.Learner` satisfies, so none of them imports the learner.

    def on_epoch_end(self, learn: TrainingLearner, row: dict) -> None: ...
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from threeline.distributed import World


class TrainingLearner(Protocol):
    """The learner as the loop's parts see it (attributes and methods they use)."""

    model: nn.Module
    device: torch.device
    seed: int
    name: str
    world: World
    opt: torch.optim.Optimizer | None
    history: list[dict]
    epoch: int
    step: int
    total_steps: int

    def layer_groups(self) -> list[list[nn.Parameter]]: ...

    def steps_per_process(self) -> int: ...

    def run_fit(self, lrs: list[float], epochs: int, wd: float, callbacks: list[Any],
                validate: bool = True) -> list[dict]: ...

    def snapshot(self, reuse: dict[str, torch.Tensor] | None = None,
                 **extra: Any) -> tuple[dict[str, torch.Tensor], dict]: ...

    def static_state_prefixes(self) -> tuple[str, ...]: ...

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def save(self, path: str | os.PathLike, **extra: Any) -> Path: ...

    lr_find: Callable[..., Any]
