"""Metrics accumulated on the device: a value per item, summed per batch, divided at the end.

A :class:`Metric` turns a batch's raw model outputs and targets into one value per item (a
photo, a row, a token); the learner adds them up on the device while it validates and reads the
mean once, at the end of the pass, so validation makes the host wait once, not per batch.
``finish`` turns the mean into the reported number (``sqrt`` for RMSE, ``exp`` for perplexity).

    accuracy()(logits, labels)            # (B, C), (B,) -> (B,) of 0/1
    rmse()                                # mean squared error per item, then sqrt
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

PerItem = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Metric:
    """A named per-item value and how its mean becomes the reported number.

    Example:
        >>> m = accuracy()
        >>> m.compute(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        0.5
    """

    name: str
    per_item: PerItem
    finish: Callable[[float], float] = field(default=lambda mean: mean)

    def compute(self, output: torch.Tensor, target: torch.Tensor) -> float:
        """The metric over one set of outputs (for tests and small sets)."""
        return self.finish(float(self.per_item(output, target).float().mean()))


class Accumulator:
    """Running sums of the loss and every metric, kept on the device."""

    def __init__(self, metrics: list[Metric], device: torch.device):
        self.metrics = metrics
        self.sums = torch.zeros(len(metrics) + 1, dtype=torch.float64, device=device)
        self.counts = torch.zeros(len(metrics) + 1, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, n: int, output: torch.Tensor, target: torch.Tensor) -> None:
        """``loss``: the batch's mean loss over ``n`` items."""
        self.sums[0] += loss.detach().double() * n
        self.counts[0] += n
        for i, metric in enumerate(self.metrics, start=1):
            values = metric.per_item(output, target).detach().double().reshape(-1)
            self.sums[i] += values.sum()
            self.counts[i] += values.numel()

    def result(self) -> dict[str, float]:
        """``{"valid_loss": ..., metric names: ...}``; the one host wait of a pass."""
        means = (self.sums / self.counts.clamp(min=1)).tolist()
        out = {"valid_loss": means[0]}
        for metric, mean in zip(self.metrics, means[1:], strict=True):
            out[metric.name] = metric.finish(mean)
        return out


def accuracy(name: str = "accuracy") -> Metric:
    """Single-label: argmax of the last axis equals the target. Works for (B, C) and (B, T, V).

    Example:
        >>> accuracy().compute(torch.tensor([[0.1, 0.9]]), torch.tensor([1]))
        1.0
    """
    return Metric(name, lambda out, y: (out.argmax(-1) == y).float())


def error_rate() -> Metric:
    """1 - accuracy."""
    return Metric("error_rate", lambda out, y: (out.argmax(-1) != y).float())


def fbeta(beta: float = 2.0, thresholds: Callable[[], torch.Tensor | float] = lambda: 0.5,
          name: str | None = None) -> Metric:
    """Multi-label F-beta per sample, averaged over samples (as Kaggle's Planet scored it).

    ``thresholds()`` gives the probability threshold(s), read at every batch so that tuned
    thresholds take effect at once. A sample with no true and no predicted label scores 1.

    Example:
        >>> f2 = fbeta(2.0)
        >>> f2.compute(torch.tensor([[5.0, -5.0]]), torch.tensor([[1.0, 0.0]]))
        1.0
    """

    def per_item(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = (torch.sigmoid(out.float()) > _on(thresholds(), out)).float()  # (B, L)
        tp = (pred * y).sum(1)
        precision_den, recall_den = pred.sum(1), y.sum(1)
        b2 = beta * beta
        den = b2 * recall_den + precision_den
        score = (1 + b2) * tp / den.clamp(min=1e-9)
        return torch.where(den == 0, torch.ones_like(score), score)

    return Metric(name or f"f{beta:g}", per_item)


def accuracy_multi(thresholds: Callable[[], torch.Tensor | float] = lambda: 0.5) -> Metric:
    """Multi-label: the share of (item, label) decisions that are right at the threshold(s)."""

    def per_item(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = torch.sigmoid(out.float()) > _on(thresholds(), out)
        return (pred == y.bool()).float()  # (B, L)

    return Metric("accuracy_multi", per_item)


def rmse() -> Metric:
    """Root mean squared error over items (and outputs).

    Example:
        >>> rmse().compute(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0]))
        2.23606797749979
    """
    return Metric("rmse", lambda out, y: (out.float().reshape(y.shape) - y.float()) ** 2,
                  finish=math.sqrt)


def mae() -> Metric:
    """Mean absolute error."""
    return Metric("mae", lambda out, y: (out.float().reshape(y.shape) - y.float()).abs())


def perplexity() -> Metric:
    """exp(mean negative log-likelihood per token) for (B, T, V) outputs and (B, T) targets."""
    return Metric("perplexity", _token_nll, finish=lambda m: math.exp(min(m, 700.0)))


def bits_per_token(name: str = "bits_per_char") -> Metric:
    """Mean negative log-likelihood per token in bits (nats / ln 2)."""
    return Metric(name, _token_nll, finish=lambda m: m / math.log(2))


def _token_nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(out.float(), dim=-1)  # (B, T, V)
    return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T)


def _on(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    return value.to(like.device) if isinstance(value, torch.Tensor) else value
