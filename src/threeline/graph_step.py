"""A small model's training step on batches already on the GPU, captured once as a CUDA graph.

For a small network (an image head on cached activations, a tabular MLP, embedding tables) a
step is a few small matrix products; run eagerly, its time goes into Python and kernel launches
for forward, backward and the optimizer. Captured once per ``fit``, a step is a handful of
launches: copy the batch in, set the learning rates, replay the graph, keep the loss.

    step = GraphStep(model, loss, optimizer)   # optimizer: optim.adamw(..., capturable=True)
    loss = step(x, y)                          # x: a tensor or tuple of tensors on the GPU

The capture needs a few warm-up steps; they train nothing: the model's weights and statistics
and the optimizer's state are put back exactly as they were before the first real step.
Dropout stays random: the graph draws from the default CUDA generator, advanced at every replay.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
from torch import nn

WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require


class GraphStep:
    """``step(x, y)``: one optimizer step of ``model`` on a batch, replayed from a CUDA graph.

    The graph is captured on the first call, for that batch's shape; a batch of another shape
    takes an eager step. If capture fails (a head with an operation graphs cannot hold), it
    warns once and every step runs eagerly. Returns the batch's loss, a () tensor on the GPU.

    Example:
        >>> import torch
        >>> from threeline import optim
        >>> from threeline.losses import CrossEntropy
        >>> if torch.cuda.is_available():  # doctest: +SKIP
        ...     head = torch.nn.Linear(1280, 2).cuda()
        ...     opt = optim.adamw([list(head.parameters())], [0.01], 0.01, torch.device("cuda"),
        ...                       capturable=True)
        ...     step = GraphStep(head, CrossEntropy(), opt)
        ...     loss = step(torch.randn(64, 1280).cuda(), torch.zeros(64, dtype=torch.long).cuda())
    """

    def __init__(self, model: nn.Module, loss: Callable, optimizer: torch.optim.Optimizer,
                 autocast: Callable[[], contextlib.AbstractContextManager] = (
                     contextlib.nullcontext)):
        if optimizer.state:
            raise ValueError("GraphStep needs a fresh optimizer: the warm-up steps reset its "
                             "state to zeros afterwards.")
        self.model, self.loss_fn, self.optimizer = model, loss, optimizer
        self.autocast = autocast
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.x: tuple[torch.Tensor, ...] = ()
        self.y = self.loss = None  # the graph's static batch and loss

    def __call__(self, x: Batch, y: torch.Tensor) -> torch.Tensor:
        xs = x if isinstance(x, tuple) else (x,)
        if self.graph is None and not self.failed:
            self._capture(xs, y)
        if self.graph is None or [t.shape for t in xs] != [t.shape for t in self.x] \
                or y.shape != self.y.shape:
            return self._eager(xs, y)
        for static, new in zip(self.x, xs, strict=True):
            static.copy_(new)
        self.y.copy_(y)
        self.graph.replay()
        return self.loss.detach().clone()

    def _forward_loss(self, xs: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            out = self.model(*xs)
        return self.loss_fn(out, y)

    def _eager(self, xs: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        loss = self._forward_loss(xs, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _capture(self, xs: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
        """Warm up on a side stream, capture one step, then undo what the warm-up trained."""
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.x, self.y = tuple(t.clone() for t in xs), y.clone()
        device = y.device
        try:
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self._eager(self.x, self.y)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)  # the graph allocates its own grads
            with torch.cuda.graph(graph):
                self.loss = self._forward_loss(self.x, self.y)
                self.loss.backward()
                self.optimizer.step()
            self.graph = graph
        except RuntimeError as error:
            self.failed = True
            warnings.warn(f"Could not capture the training step as a CUDA graph ({error}); "
                          f"training step by step instead.", stacklevel=3)
        finally:
            _reset(self.model, self.optimizer, saved)


@torch.no_grad()
def _reset(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Weights and statistics back to ``saved``; the optimizer's moments and step counts back
    to the zeros of a fresh optimizer (in place: the graph holds these very tensors)."""
    for name, value in model.state_dict().items():
        value.copy_(saved[name])
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                value.zero_()


Batch = torch.Tensor | tuple[torch.Tensor, ...]
