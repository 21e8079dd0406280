"""The two models: a dot product with biases, and an embedding network; both under a sigmoid.

Row 0 of every table is the "unknown" user or item: it stays at zero (no training row uses it),
so a pair with an unknown side gets the bias-only prediction ``y_range(global + known bias)``.

Weight decay on embeddings is applied to the rows a batch looks up, once per lookup, as the
gradient of ``wd * mean_b w_b ||row_b||^2`` (:class:`RowDecay`). The row weights ``w`` are 1
until :meth:`_Base.set_training_rows` gives the training counts: then ``w = mean count / count``,
so over an epoch every user and item is pulled towards zero equally, however often it is seen
(the L2 penalty of the whole table, spread over the batches that use each row).

``DotProductBias(members=k)`` holds k dot-product models side by side (one table of width
``k * n_factors``); each trains as if alone (:class:`MemberMean`) and the prediction is their
mean: an ensemble for the price of one wider model. ``implicit=True`` adds SVD++'s implicit
feedback on both sides (:mod:`threeline.collab.implicit`): ``p_u`` gains the normalised sum of
vectors of the items ``u`` rated, ``q_i`` that of vectors of the users who rated ``i``.

    model = DotProductBias(943, 1682, n_factors=50, y_range=(0.5, 5.5), wd=0.1, members=4,
                           implicit=True)
    model.set_training_rows(users, items)   # the training rows' codes: decay weights, N(u)
    model(users, items)          # (B,) int64 codes each -> (B,) predicted ratings
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from threeline.collab.implicit import Implicit, table

# With implicit feedback every table starts at normal(0, 0.05): on seeded holdouts of the
# MovieLens splits, 0.03-0.07 beat 0.01 (benchmarks/results/collab-quality-*).
IMPLICIT_INIT_STD = 0.05


class RowDecay(torch.autograd.Function):
    """Identity forward; backward adds ``2 * wd * weights * rows / B``: the L2 penalty of the
    rows used, each row weighted (``weights`` (B, 1), or None for 1).

    Example:
        >>> rows = torch.ones(4, 2, requires_grad=True)
        >>> RowDecay.apply(rows, 0.5).sum().backward()
        >>> rows.grad[0].tolist()
        [1.25, 1.25]
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, wd: float, weights: torch.Tensor | None = None
                ) -> torch.Tensor:  # rows: (B, F), weights: (B, 1)
        ctx.save_for_backward(rows, weights)
        ctx.scale = 2.0 * wd / rows.shape[0]
        return rows.view_as(rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        rows, weights = ctx.saved_tensors
        decay = ctx.scale * rows if weights is None else ctx.scale * weights * rows
        return grad + decay, None, None


class MemberMean(torch.autograd.Function):
    """(B, k) member predictions -> (B,) their mean; backward gives each member the gradient
    of the mean squared error it would get alone: ``g + 2 (m_j - mean) / B`` for the mean's
    gradient ``g = 2 (mean - y) / B``, since ``(m_j - y) = (mean - y) + (m_j - mean)``.

    Example:
        >>> m = torch.tensor([[1.0, 3.0]], requires_grad=True)
        >>> ((MemberMean.apply(m) - 4.0) ** 2).mean().backward()
        >>> m.grad.tolist()  # d/dm_j (m_j - 4)^2
        [[-6.0, -2.0]]
    """

    @staticmethod
    def forward(ctx, members: torch.Tensor) -> torch.Tensor:
        mean = members.mean(-1)
        ctx.save_for_backward(members, mean)
        return mean

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        members, mean = ctx.saved_tensors
        return grad.unsqueeze(-1) + 2.0 * (members - mean.unsqueeze(-1)) / members.shape[0]


class _Base(nn.Module):
    """Tables of user and item biases, a global bias and the output range."""

    def __init__(self, n_users: int, n_items: int, y_range: tuple[float, float],
                 mean: float | None, wd: float, members: int = 1):
        super().__init__()
        _check_positive(members=members)
        lo, hi = (float(v) for v in y_range)
        if not lo < hi:
            raise ValueError(f"y_range must be (low, high) with low < high, got {y_range!r}.")
        if wd < 0:
            raise ValueError(f"wd must be >= 0, got {wd}.")
        self.y_lo, self.y_hi, self.wd, self.bias_wd = lo, hi, float(wd), 0.0
        self.clip: tuple[float, float] | None = None  # (lowest, highest) rating, out of training
        self.members = members
        self.user_bias = table(n_users + 1, members, std=0.0)
        self.item_bias = table(n_items + 1, members, std=0.0)
        mean = (lo + hi) / 2 if mean is None else min(max(mean, lo + 1e-3), hi - 1e-3)
        share = (mean - lo) / (hi - lo)
        logit = torch.tensor(math.log(share / (1 - share)))
        self.global_bias = nn.Parameter(logit if members == 1 else logit.repeat(members))
        self.register_buffer("user_decay", torch.ones(n_users + 1, 1), persistent=False)
        self.register_buffer("item_decay", torch.ones(n_items + 1, 1), persistent=False)

    @torch.no_grad()
    def set_training_rows(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Weight each row's decay by ``mean count / count`` from the training rows' codes, so
        each user and item gets the same decay per epoch (see the module's docstring)."""
        for buffer, codes in ((self.user_decay, users), (self.item_decay, items)):
            counts = torch.bincount(codes.cpu(), minlength=len(buffer))[:len(buffer)].float()
            seen = counts[1:][counts[1:] > 0]
            mean = seen.mean() if len(seen) else torch.tensor(1.0)
            buffer.copy_((mean / counts.clamp(min=1)).unsqueeze(-1))

    def lookup(self, table: nn.Embedding, codes: torch.Tensor, wd: float,
               decay: torch.Tensor) -> torch.Tensor:
        """Rows of ``table`` for ``codes``, (B, F); in training, decayed with weights
        ``decay[codes]`` (``self.user_decay`` or ``self.item_decay``)."""
        rows = table(codes)  # (B, F)
        if self.training and wd > 0 and rows.requires_grad:
            rows = RowDecay.apply(rows, wd, decay[codes])
        return rows

    def biases(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``global + b_user + b_item`` before the sigmoid, (B, members)."""
        bu = self.lookup(self.user_bias, users, self.bias_wd, self.user_decay)  # (B, members)
        bi = self.lookup(self.item_bias, items, self.bias_wd, self.item_decay)  # (B, members)
        return self.global_bias + bu * (users > 0).unsqueeze(-1) + bi * (items > 0).unsqueeze(-1)

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        return self.y_lo + (self.y_hi - self.y_lo) * torch.sigmoid(raw)

    def clipped(self, out: torch.Tensor) -> torch.Tensor:
        """Out of training, predictions clipped to ``self.clip`` (the ratings' range) if set."""
        return out if self.training or self.clip is None else out.clamp(*self.clip)

    def item_vectors(self) -> torch.Tensor:
        """(n_items + 1, F) item factors used for similarity and plots."""
        raise NotImplementedError


class DotProductBias(_Base):
    """``y_range(global + b_u + b_i + <p_u, q_i>)``, averaged over ``members`` such models;
    with ``implicit``, ``p_u`` and ``q_i`` include the implicit sums (module docstring).

    Example:
        >>> m = DotProductBias(3, 4, n_factors=5, members=2)
        >>> m(torch.tensor([1, 2]), torch.tensor([3, 0])).shape
        torch.Size([2])
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50,
                 y_range: tuple[float, float] = (0.5, 5.5), mean: float | None = None,
                 wd: float = 0.0, members: int = 1, implicit: bool = False):
        super().__init__(n_users, n_items, y_range, mean, wd, members)
        _check_positive(n_factors=n_factors)
        self.n_factors = n_factors
        std = IMPLICIT_INIT_STD if implicit else 0.01
        self.user_factors = table(n_users + 1, members * n_factors, std)
        self.item_factors = table(n_items + 1, members * n_factors, std)
        self.implicit = implicit
        if implicit:  # who rated what: users' sums of item vectors, items' of user vectors
            self.user_implicit = Implicit(n_users, n_items, members * n_factors, std)
            self.item_implicit = Implicit(n_items, n_users, members * n_factors, std)

    def set_training_rows(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """The decay weights (see :class:`_Base`) and, with ``implicit``, who rated what."""
        super().set_training_rows(users, items)
        if self.implicit:
            self.user_implicit.set_pairs(users, items)
            self.item_implicit.set_pairs(items, users)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        shape = (len(users), self.members, self.n_factors)
        p = self.lookup(self.user_factors, users, self.wd, self.user_decay)  # (B, k * F)
        q = self.lookup(self.item_factors, items, self.wd, self.item_decay)  # (B, k * F)
        if self.implicit:
            p = p + self.user_implicit(users, self.wd, self.training)
            q = q + self.item_implicit(items, self.wd, self.training)
        p, q = p.view(shape), q.view(shape)
        known = ((users > 0) & (items > 0)).unsqueeze(-1)  # row 0 is zero; the mask keeps it so
        out = self.squash(self.biases(users, items) + (p * q).sum(-1) * known)  # (B, members)
        if self.members == 1:
            return self.clipped(out.squeeze(-1))
        return MemberMean.apply(out) if self.training else self.clipped(out.mean(-1))

    def item_vectors(self) -> torch.Tensor:
        """(n_items + 1, k * F) the ``q_i`` of the dot products, implicit sums included."""
        vectors = self.item_factors.weight
        if self.implicit:
            codes = torch.arange(len(vectors), device=vectors.device)
            vectors = vectors + self.item_implicit(codes, 0.0, training=False)
        return vectors


class EmbeddingNN(_Base):
    """``y_range(global + b_u + b_i + MLP([p_u, q_i]))``; the MLP term is 0 for unknown pairs.

    Example:
        >>> m = EmbeddingNN(3, 4, n_factors=5, layers=(8,))
        >>> m(torch.tensor([1, 0]), torch.tensor([3, 2])).shape
        torch.Size([2])
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50,
                 y_range: tuple[float, float] = (0.5, 5.5), mean: float | None = None,
                 wd: float = 0.0, layers: Sequence[int] = (100,), dropout: float = 0.1):
        super().__init__(n_users, n_items, y_range, mean, wd)
        _check_positive(n_factors=n_factors, **{f"layers[{i}]": n for i, n in enumerate(layers)})
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.user_factors = table(n_users + 1, n_factors)
        self.item_factors = table(n_items + 1, n_factors)
        sizes = [2 * n_factors, *layers]
        blocks: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            blocks += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        blocks.append(nn.Linear(sizes[-1], 1))
        self.mlp = nn.Sequential(*blocks)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.lookup(self.user_factors, users, self.wd, self.user_decay)  # (B, F)
        q = self.lookup(self.item_factors, items, self.wd, self.item_decay)  # (B, F)
        inter = self.mlp(torch.cat([p, q], dim=-1)).squeeze(-1)  # (B,)
        known = ((users > 0) & (items > 0)).to(inter.dtype)
        return self.clipped(self.squash(self.biases(users, items).squeeze(-1) + known * inter))

    def item_vectors(self) -> torch.Tensor:
        return self.item_factors.weight


def _check_positive(**sizes: int) -> None:
    for name, n in sizes.items():
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}.")
