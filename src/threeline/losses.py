"""Loss objects: the loss, its activation, how to decode, and the metrics that suit it.

Training, validation, prediction, interpretation and export all ask the learner's loss object,
so a new kind of target is a new loss object, not an edit of the loop:

    loss = CrossEntropy()
    loss(logits, labels)          # () training loss, computed in float32
    loss.activation(logits)       # probabilities
    loss.decode(probs)            # class indices
    loss.metrics()                # [accuracy]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from threeline import metrics as M


class Loss:
    """Base class. Subclasses set ``name`` and override what differs."""

    name = "loss"

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        """Raw outputs -> what users read (probabilities, values)."""
        return output.float()

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        """Activated outputs -> decisions (classes, label sets, values)."""
        return activated

    def metrics(self) -> list[M.Metric]:
        """The metrics shown in the epoch table when the learner is given none."""
        return []

    def describe(self) -> dict:
        """JSON that :func:`from_description` turns back into this loss."""
        return {"name": self.name}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({fields})"


class CrossEntropy(Loss):
    """Single-label classification: logits (B, C), labels (B,) int64.

    Example:
        >>> loss = CrossEntropy()
        >>> round(float(loss(torch.zeros(2, 4), torch.tensor([0, 3]))), 4)
        1.3863
        >>> loss.decode(loss.activation(torch.tensor([[0.0, 2.0]]))).tolist()
        [1]
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.float(), target, label_smoothing=self.label_smoothing)

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return F.softmax(output.float(), dim=-1)

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.argmax(-1)

    def metrics(self) -> list[M.Metric]:
        return [M.accuracy()]

    def describe(self) -> dict:
        return {"name": self.name, "label_smoothing": self.label_smoothing}


class BinaryCrossEntropy(Loss):
    """Multi-label classification: logits (B, L), targets (B, L) of 0/1 floats.

    ``thresholds``: one probability, or one per label (set by tuning on validation data); the
    metrics read them at every batch, so a change shows in the next epoch's table.

    Example:
        >>> loss = BinaryCrossEntropy(thresholds=[0.5, 0.2])
        >>> loss.decode(torch.tensor([[0.6, 0.3]])).tolist()
        [[True, True]]
    """

    name = "binary_cross_entropy"

    def __init__(self, thresholds: float | list[float] | torch.Tensor = 0.5, beta: float = 2.0):
        self.thresholds = thresholds
        self.beta = float(beta)

    @property
    def thresholds(self) -> torch.Tensor:
        return self._thresholds

    @thresholds.setter
    def thresholds(self, value: float | list[float] | torch.Tensor) -> None:
        t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
        if t.numel() == 0 or bool(((t <= 0) | (t >= 1)).any()):
            raise ValueError(f"thresholds must be probabilities in (0, 1), got {value!r}.")
        self._thresholds = t if t.numel() > 1 else t[0]

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output.float(), target.float())

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output.float())

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        return activated > self.thresholds.to(activated.device)

    def metrics(self) -> list[M.Metric]:
        def thresholds() -> torch.Tensor:
            return self.thresholds

        return [M.fbeta(self.beta, thresholds), M.accuracy_multi(thresholds)]

    def describe(self) -> dict:
        return {"name": self.name, "thresholds": self.thresholds.tolist(), "beta": self.beta}


class MSE(Loss):
    """Regression: outputs (B,) or (B, K), float targets of the same shape.

    Example:
        >>> float(MSE()(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0])))
        2.0
    """

    name = "mse"

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.float().reshape(target.shape), target.float())

    def metrics(self) -> list[M.Metric]:
        return [M.rmse()]


class NextToken(Loss):
    """Language models: logits (B, T, V) predicting targets (B, T) int64, the next tokens.

    ``per_char=True`` shows bits per character (character-level models) beside perplexity.

    Example:
        >>> loss = NextToken()
        >>> round(float(loss(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]))), 4)
        1.3863
    """

    name = "next_token"

    def __init__(self, per_char: bool = False):
        self.per_char = bool(per_char)

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.float().flatten(0, -2), target.reshape(-1))

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return F.softmax(output.float(), dim=-1)

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.argmax(-1)

    def metrics(self) -> list[M.Metric]:
        extra = [M.bits_per_token("bits_per_char")] if self.per_char else []
        return [M.accuracy(), M.perplexity(), *extra]

    def describe(self) -> dict:
        return {"name": self.name, "per_char": self.per_char}


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (CrossEntropy, BinaryCrossEntropy, MSE, NextToken)}


def from_description(description: dict) -> Loss:
    """A loss from :meth:`Loss.describe`'s JSON.

    Example:
        >>> from_description({"name": "cross_entropy", "label_smoothing": 0.1})
        CrossEntropy(label_smoothing=0.1)
    """
    fields = dict(description)
    name = fields.pop("name", None)
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; known: {sorted(LOSSES)}.")
    return LOSSES[name](**fields)
