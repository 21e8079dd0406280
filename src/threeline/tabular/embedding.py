"""The categorical columns' embeddings, one table per embedding width.

A table with many categorical columns would otherwise pay one ``nn.Embedding`` call (and one
backward kernel) per column per batch: 100 columns, 100 small lookups. Columns whose embeddings
have the same width share one weight matrix, each column at its own row offset, so a batch is
one lookup per width; the outputs come back in column order, the same numbers as one
``nn.Embedding`` per column.

    emb = GroupedEmbedding([10, 18, 4])      # cardinalities; widths from emb_size
    emb(cats)                                # (B, C) int -> (B, sum of widths), column order
    emb.weight(1)                            # (18, E) rows of column 1
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def emb_size(n: int) -> int:
    """Embedding width for a column of ``n`` categories: min(600, round(1.6 n^0.56)).

    Example:
        >>> emb_size(2), emb_size(10), emb_size(43), emb_size(100_000)
        (2, 6, 13, 600)
    """
    return min(600, round(1.6 * n ** 0.56))


class GroupedEmbedding(nn.Module):
    """One embedding per categorical column, stored as one matrix per width.

    ``tables[g]`` stacks the rows of the columns ``groups[g]``; initialised as one
    ``nn.Embedding`` per column followed by ``trunc_normal_(std=0.01)`` each (the same random
    draws in the same order), so a seeded model starts from the same weights either way.

    Example:
        >>> emb = GroupedEmbedding([4, 7, 4])
        >>> emb.widths, emb.groups, emb(torch.tensor([[1, 5, 3]])).shape
        ([3, 5, 3], [[0, 2], [1]], torch.Size([1, 11]))
    """

    def __init__(self, cardinalities: Sequence[int]):
        super().__init__()
        self.cardinalities = [int(n) for n in cardinalities]
        self.widths = [emb_size(n) for n in self.cardinalities]
        weights = [torch.empty(n, w).normal_()
                   for n, w in zip(self.cardinalities, self.widths, strict=True)]
        for w in weights:  # as nn.Embedding(n, w) then trunc_normal_: the same RNG draws
            nn.init.trunc_normal_(w, std=0.01)
        self.groups = [[j for j, w in enumerate(self.widths) if w == width]
                       for width in dict.fromkeys(self.widths)]
        self.tables = nn.ParameterList(nn.Parameter(torch.cat([weights[j] for j in g]))
                                       for g in self.groups)
        self.place = {}  # column -> (group, first row)
        for g, cols in enumerate(self.groups):
            starts = torch.tensor([0] + [self.cardinalities[j] for j in cols]).cumsum(0)
            self.place.update({j: (g, int(starts[i])) for i, j in enumerate(cols)})
            self.register_buffer(f"cols_{g}", torch.tensor(cols), persistent=False)
            self.register_buffer(f"offsets_{g}", starts[:-1].to(torch.int32), persistent=False)
        order = _column_order(self.groups, self.widths)
        self.register_buffer("order", order, persistent=False)
        self.in_order = bool(torch.equal(order, torch.arange(len(order))))
        self.embedding_dim = sum(self.widths)
        self._register_load_state_dict_pre_hook(self._from_per_column)

    def forward(self, cats: torch.Tensor) -> torch.Tensor:
        parts = []
        for g, table in enumerate(self.tables):
            index = cats[:, getattr(self, f"cols_{g}")] + getattr(self, f"offsets_{g}")
            parts.append(F.embedding(index, table).flatten(1))  # (B, C_g * width)
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, sum E), by group
        return x if self.in_order else x[:, self.order]  # (B, sum E), column order

    def weight(self, column: int) -> torch.Tensor:
        """The (n, E) embedding rows of one column (a view into its group's table)."""
        g, start = self.place[column]
        return self.tables[g][start:start + self.cardinalities[column]]

    def _from_per_column(self, state: dict, prefix: str, *args) -> None:
        """Load a state saved with one ``nn.Embedding`` per column (``<i>.weight`` keys)."""
        old = [f"{prefix}{j}.weight" for j in range(len(self.widths))]
        if self.widths and all(k in state for k in old):
            weights = [state.pop(k) for k in old]
            for g, cols in enumerate(self.groups):
                state[f"{prefix}tables.{g}"] = torch.cat([weights[j] for j in cols])


def _column_order(groups: list[list[int]], widths: list[int]) -> torch.Tensor:
    """Positions, in the by-group output, of each column's features in column order."""
    start, at = 0, {}
    for cols in groups:
        for j in cols:
            at[j] = start
            start += widths[j]
    return torch.tensor([at[j] + i for j in range(len(widths)) for i in range(widths[j])],
                        dtype=torch.long)
