"""Implicit feedback (SVD++): who rated what, as a fixed sparse matrix times a learned table.

A user's vector gains ``|N(u)|^-1/2 sum_{j in N(u)} y_j``, ``N(u)`` the items the user rated in
the training rows, and an item's vector gains the same sum over the users who rated it
(``|R(i)|^-1/2 sum_{v in R(i)} x_v``). Only the fact of a rating counts, not its value.

Each step computes the term for every row at once (:class:`SparseProduct`: one
``embedding_bag`` forward, one over the transposed pairs backward, no sorting), so the shapes
do not depend on the batch.

    imp = Implicit(n_rows=943, n_cols=1682, width=200)    # users' sums of item vectors
    imp.set_pairs(users, items)                            # the training rows' codes
    imp(users, wd=0.2, training=True)                      # (B,) codes -> (B, 200)
"""

from __future__ import annotations

import torch
from torch import nn

IMPLICIT_WD = 0.6  # the decay of the implicit tables, as a multiple of the factors' wd


class SparseProduct(torch.autograd.Function):
    """``S @ table`` for a fixed sparse ``S`` given both ways round: rows (``cols``, ``offsets``,
    ``weights``) and columns (``t_rows``, ``t_offsets``, ``t_weights``); backward is
    ``S.T @ grad``, computed from the columns.

    Example:
        >>> table = torch.ones(3, 2, requires_grad=True)     # S = [[0, 2, 3]]: one row
        >>> out = SparseProduct.apply(table, torch.tensor([1, 2]), torch.tensor([0]),
        ...                           torch.tensor([2.0, 3.0]), torch.tensor([0, 0]),
        ...                           torch.tensor([0, 0, 1]), torch.tensor([2.0, 3.0]))
        >>> out.tolist()
        [[5.0, 5.0]]
        >>> out.sum().backward(); table.grad[:, 0].tolist()
        [0.0, 2.0, 3.0]
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, cols: torch.Tensor, offsets: torch.Tensor,
                weights: torch.Tensor, t_rows: torch.Tensor, t_offsets: torch.Tensor,
                t_weights: torch.Tensor) -> torch.Tensor:  # table: (C, F) -> (R, F)
        ctx.save_for_backward(t_rows, t_offsets, t_weights)
        return nn.functional.embedding_bag(cols, table, offsets, mode="sum",
                                           per_sample_weights=weights.to(table.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        t_rows, t_offsets, t_weights = ctx.saved_tensors
        grad = grad.contiguous()  # (R, F) -> (C, F)
        table_grad = nn.functional.embedding_bag(t_rows, grad, t_offsets, mode="sum",
                                                 per_sample_weights=t_weights.to(grad.dtype))
        return table_grad, None, None, None, None, None, None


class TableDecay(torch.autograd.Function):
    """Identity forward; backward adds ``scale * table``: L2 on a whole table every step.

    Example:
        >>> table = torch.ones(2, 2, requires_grad=True)
        >>> TableDecay.apply(table, 0.5).sum().backward()
        >>> table.grad.tolist()
        [[1.5, 1.5], [1.5, 1.5]]
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(table)
        ctx.scale = scale
        return table.view_as(table)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (table,) = ctx.saved_tensors
        return grad + ctx.scale * table, None


class Implicit(nn.Module):
    """``|N(r)|^-1/2 sum_{c in N(r)} y_c`` for each row code ``r`` (a user, say), ``N(r)`` the
    column codes (items) paired with it by :meth:`set_pairs`, ``y`` a learned table of columns
    (normal(0, ``std``) at first, zeros by default), decayed as a whole every training step.
    Unpaired rows (such as the unknown row 0) get zeros.

    Example:
        >>> imp = Implicit(n_rows=2, n_cols=3, width=4)
        >>> imp.set_pairs(torch.tensor([1, 1, 2]), torch.tensor([1, 3, 2]))
        >>> imp(torch.tensor([2, 0, 1]), wd=0.0, training=False).shape
        torch.Size([3, 4])
    """

    def __init__(self, n_rows: int, n_cols: int, width: int, std: float = 0.0):
        super().__init__()
        self.factors = table(n_cols + 1, width, std)  # y: (n_cols + 1, F)
        self.register_buffer("indptr", torch.zeros(n_rows + 2, dtype=torch.int64))
        self.register_buffer("cols", torch.zeros(0, dtype=torch.int64))  # (nnz,) by row
        self._derive()

    @torch.no_grad()
    def set_pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """The pairs (e.g. users and items of the training rows), (N,) codes each: row ``r``'s
        columns become ``cols[indptr[r]:indptr[r + 1]]``."""
        device = self.indptr.device
        rows, cols = rows.to(device), cols.to(device)
        self.indptr = _indptr(rows, len(self.indptr) - 1)
        self.cols = cols[torch.argsort(rows, stable=True)]
        self._derive()

    def forward(self, codes: torch.Tensor, wd: float, training: bool) -> torch.Tensor:
        """(B,) row codes -> (B, F); ``wd``: the L2 of the table in training."""
        table = self.factors.weight  # (n_cols + 1, F)
        if training and wd > 0:
            table = TableDecay.apply(table, 2.0 * IMPLICIT_WD * wd / len(codes))
        every = SparseProduct.apply(table, self.cols, self.indptr[:-1], self.weights,
                                    self.t_rows, self.t_indptr[:-1], self.t_weights)
        return every[codes]  # every: (n_rows + 1, F)

    @torch.no_grad()
    def _derive(self) -> None:
        """The weights ``|N(r)|^-1/2`` of the pairs and the pairs by column (not saved)."""
        counts = self.indptr[1:] - self.indptr[:-1]  # (n_rows + 1,)
        rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        weights = counts.clamp(min=1).float().rsqrt()[rows]  # (nnz,)
        order = torch.argsort(self.cols, stable=True)
        n_cols = len(self.factors.weight)
        self.register_buffer("weights", weights, persistent=False)
        self.register_buffer("t_indptr", _indptr(self.cols, n_cols), persistent=False)
        self.register_buffer("t_rows", rows[order], persistent=False)
        self.register_buffer("t_weights", weights[order], persistent=False)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Saved pairs have their own number: take them as they are."""
        cols = state_dict.get(prefix + "cols")
        if cols is not None:
            self.cols = torch.empty_like(cols, device=self.cols.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._derive()


def _indptr(codes: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) codes in 0..n-1 -> (n + 1,) CSR offsets: row ``r`` holds the occurrences of ``r``."""
    counts = torch.bincount(codes, minlength=n)[:n]
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def table(rows: int, width: int, std: float = 0.01) -> nn.Embedding:
    """An embedding table, normal(0, std) with row 0 (unknown) at zero."""
    out = nn.Embedding(rows, width)
    with torch.no_grad():
        out.weight.normal_(0.0, std) if std > 0 else out.weight.zero_()
        out.weight[0].zero_()
    return out
