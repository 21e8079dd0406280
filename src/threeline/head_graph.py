"""The head's training step on cached activations, captured once as a CUDA graph.

With ``precompute=True`` a training step is a few small matrix products on a (64, D) batch
(D = 2560 for efficientnet_lite2). Run eagerly, its time goes into Python and kernel launches
for forward, backward and the optimizer: ``fit(0.01, 3)`` on 10,000 activations took 0.84 s on
an H100, about 1.8 ms a step. Captured once per ``fit``, a step is a handful of launches (copy
the batch in, set the learning rates, replay the graph, keep the loss): 0.22 s.

    step = HeadStep(head, optimizer)      # optimizer: fused AdamW, capturable, tensor lrs
    loss = step(xb, yb)                   # (B, D) float32, (B,) int64 on the GPU -> () loss

The capture needs a few warm-up steps; they train nothing: the head's weights and statistics
and the optimizer's state are put back exactly as they were before the first real step.
Dropout stays random: the graph draws from the default CUDA generator, advanced at every replay.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require


def capturable_optimizer(groups: list[dict], betas: tuple[float, float]) -> torch.optim.AdamW:
    """Fused AdamW whose state lives on the GPU and whose rates are tensors, set by
    :func:`set_lr` between replays. ``groups`` as from :func:`threeline.model.optimizer_groups`.

    Example:
        >>> import torch
        >>> if torch.cuda.is_available():  # doctest: +SKIP
        ...     head = torch.nn.Linear(8, 2).cuda()
        ...     opt = capturable_optimizer([{"params": list(head.parameters()), "lr": 0.01}],
        ...                                (0.9, 0.99))
    """
    device = groups[0]["params"][0].device
    for group in groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
    return torch.optim.AdamW(groups, lr=groups[-1]["lr"], betas=betas, fused=True,
                             capturable=True)


def set_lr(group: dict, value: float) -> None:
    """Set one optimizer group's learning rate, in place when it is a (graph-captured) tensor.

    Example:
        >>> group = {"lr": 0.1}
        >>> set_lr(group, 0.01); group["lr"]
        0.01
    """
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


class HeadStep:
    """``step(xb, yb)``: one optimizer step of ``head`` on a batch, replayed from a CUDA graph.

    The graph is captured on the first call, for that batch's shape; a batch of another shape
    takes an eager step. If capture fails (a head with an operation graphs cannot hold), it
    warns once and every step runs eagerly. Returns the batch's loss, a () tensor on the GPU.

    Example:
        >>> import torch
        >>> if torch.cuda.is_available():  # doctest: +SKIP
        ...     head = torch.nn.Linear(1280, 2).cuda()
        ...     opt = capturable_optimizer([{"params": list(head.parameters()), "lr": 0.01}],
        ...                                (0.9, 0.99))
        ...     step = HeadStep(head, opt)
        ...     loss = step(torch.randn(64, 1280).cuda(), torch.zeros(64, dtype=torch.long).cuda())
    """

    def __init__(self, head: nn.Module, optimizer: torch.optim.Optimizer):
        if optimizer.state:
            raise ValueError("HeadStep needs a fresh optimizer: the warm-up steps reset its "
                             "state to zeros afterwards.")
        self.head, self.optimizer = head, optimizer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.x = self.y = self.loss = None  # the graph's static batch and loss

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if self.graph is None and not self.failed:
            self._capture(xb, yb)
        if self.graph is None or xb.shape != self.x.shape:
            return _eager_step(self.head, self.optimizer, xb, yb)
        self.x.copy_(xb)
        self.y.copy_(yb)
        self.graph.replay()
        return self.loss.detach().clone()

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Warm up on a side stream, capture one step, then undo what the warm-up trained."""
        saved = {k: v.clone() for k, v in self.head.state_dict().items()}
        self.x, self.y = xb.clone(), yb.clone()
        try:
            side = torch.cuda.Stream(device=xb.device)
            side.wait_stream(torch.cuda.current_stream(xb.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    _eager_step(self.head, self.optimizer, self.x, self.y)
            torch.cuda.current_stream(xb.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)  # the graph allocates its own grads
            with torch.cuda.graph(graph):
                self.loss = _loss(self.head, self.x, self.y)
                self.loss.backward()
                self.optimizer.step()
            self.graph = graph
        except RuntimeError as error:
            self.failed = True
            warnings.warn(f"Could not capture the head's training step as a CUDA graph "
                          f"({error}); training it step by step instead.", stacklevel=3)
        finally:
            _reset(self.head, self.optimizer, saved)


def _loss(head: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(xb).float(), yb)  # (B, C) logits -> ()


def _eager_step(head: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor,
                yb: torch.Tensor) -> torch.Tensor:
    loss = _loss(head, xb, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def _reset(head: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Weights and statistics back to ``saved``; the optimizer's moments and step counts back
    to the zeros of a fresh optimizer (in place: the graph holds these very tensors)."""
    for name, value in head.state_dict().items():
        value.copy_(saved[name])
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                value.zero_()



StepFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
