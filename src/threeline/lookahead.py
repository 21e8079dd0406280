"""Lookahead with a rising average: a callback that keeps a slow copy of the weights.

Every ``every`` steps the slow copy moves part of the way to the trained ("fast") weights and
the fast weights are put back onto it:

    slow <- slow + (1 - d) * (fast - slow);   fast <- slow

``d`` starts at 0 (the slow copy simply follows) and rises to ``decay`` as ``progress ** 3``, so
it averages over the last steps of a short run, where one-cycle's small rates leave the weights
jittering around a good point. The BatchNorm statistics are averaged the same way. At the end
of the fit the model holds the slow weights.

    learn.fit(2.0, 12, callbacks=[Lookahead()])

Works with the CUDA-graph step: the weights are updated in place between replays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from threeline.callbacks import Callback

if TYPE_CHECKING:
    from threeline.protocol import TrainingLearner


class Lookahead(Callback):
    """Slow weights every ``every`` steps, averaging with a weight rising to ``decay``.

    Example:
        >>> from torch import nn
        >>> from threeline.batches import TensorData
        >>> from threeline.learner import Learner
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> learn = Learner(nn.Linear(4, 2), TensorData((x,), y, (x,), y, batch_size=8),
        ...                 device="cpu", progress=False)
        >>> learn.checkpoint_dir = False
        >>> rows = learn.fit(0.1, 2, callbacks=[Lookahead(every=2)])  # doctest: +ELLIPSIS
        epoch  train_loss  valid_loss  accuracy    time
        ...
    """

    def __init__(self, every: int = 5, decay: float = 0.95 ** 5):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {every!r}.")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}.")
        self.every, self.decay = every, float(decay)
        self.fast: list[torch.Tensor] = []
        self.slow: list[torch.Tensor] = []

    def on_fit_begin(self, learn: TrainingLearner) -> None:
        state = learn.trainable().state_dict(keep_vars=True).values()
        self.fast = [t.data for t in state if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.fast]

    def on_batch_end(self, learn: TrainingLearner, loss: torch.Tensor) -> None:
        if (learn.step + 1) % self.every == 0 or learn.step + 1 == learn.total_steps:
            progress = (learn.step + 1) / max(learn.total_steps, 1)
            self.pull(self.decay * progress ** 3)

    @torch.no_grad()
    def pull(self, d: float) -> None:
        """slow <- slow + (1 - d) (fast - slow); fast <- slow."""
        torch._foreach_lerp_(self.slow, self.fast, 1.0 - d)
        torch._foreach_copy_(self.fast, self.slow)

    def on_fit_end(self, learn: TrainingLearner, interrupted: bool) -> None:
        self.fast, self.slow = [], []
