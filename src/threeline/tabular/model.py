"""The network for tables: an embedding per categorical column, BatchNorm'd continuous
columns, an MLP; regression squashed into the target's range by a sigmoid.

    model = TabularModel([10, 18, 4], n_cont=5, n_out=2)     # cardinalities incl. missing/unknown
    out = model(cats, conts)                                  # (B, C) int, (B, K) -> (B, n_out)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from threeline.tabular.embedding import GroupedEmbedding, emb_size

__all__ = ["PiecewiseLinear", "TabularModel", "emb_size"]


class PiecewiseLinear(nn.Module):
    """Each continuous value as its position within training-quantile bins: bin t of column k
    reads ``clamp((x - e_t) / (e_{t+1} - e_t), 0, 1)`` (Gorishniy et al. 2022, "On Embeddings
    for Numerical Features"), so the MLP sees skewed columns at every scale.

    Example:
        >>> ple = PiecewiseLinear([[0.0, 1.0, 3.0], [0.0, 2.0]])
        >>> ple(torch.tensor([[2.0, 1.0]])).tolist()
        [[1.0, 0.5, 0.5]]
    """

    def __init__(self, edges: Sequence[Sequence[float]]):
        super().__init__()
        k, t = len(edges), max([len(e) - 1 for e in edges] + [0])
        left, width = torch.zeros(k, t), torch.ones(k, t)
        keep = torch.zeros(k, t, dtype=torch.bool)
        for i, e in enumerate(edges):
            e = torch.tensor(list(e), dtype=torch.float32)
            n = max(len(e) - 1, 0)
            left[i, :n], width[i, :n] = e[:-1], (e[1:] - e[:-1]).clamp(min=1e-6)
            keep[i, :n] = True
        self.register_buffer("left", left, persistent=False)  # (K, T)
        self.register_buffer("width", width, persistent=False)  # (K, T)
        self.register_buffer("keep", keep.flatten().nonzero().flatten(), persistent=False)
        self.out_features = int(keep.sum())
        self.all_kept = bool(keep.all())  # every column has T bins: no gather needed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x[:, :, None] - self.left) / self.width).clamp(0, 1).flatten(1)  # (B, K * T)
        return z if self.all_kept else z[:, self.keep]  # (B, sum of bins)


class TabularModel(nn.Module):
    """Embeddings + BatchNorm'd continuous inputs -> Linear/ReLU/BatchNorm/Dropout blocks -> out.

    Args:
        cardinalities: categories per categorical column (codes 0..n-1).
        n_cont: continuous columns.
        n_out: outputs (classes, or 1 for regression).
        layers: hidden widths.
        ps: dropout after each hidden block (one number or one per layer).
        emb_drop: dropout on the concatenated embeddings.
        y_range: (low, high) for regression: ``low + (high - low) * sigmoid(x)``.
        cont_edges: per continuous column, quantile bin edges (normalized scale) for a
            :class:`PiecewiseLinear` encoding fed to the MLP beside the values themselves.

    Example:
        >>> model = TabularModel([4, 7], n_cont=3, n_out=2).eval()
        >>> model(torch.tensor([[1, 5]]), torch.zeros(1, 3)).shape
        torch.Size([1, 2])
    """

    def __init__(self, cardinalities: Sequence[int], n_cont: int, n_out: int,
                 layers: Sequence[int] = (200, 100), ps: float | Sequence[float] = 0.0,
                 emb_drop: float = 0.0, y_range: Sequence[float] | None = None,
                 cont_edges: Sequence[Sequence[float]] | None = None):
        super().__init__()
        if not cardinalities and not n_cont:
            raise ValueError("The table has no feature columns: expected at least one "
                             "categorical or continuous column besides the target.")
        ps = [float(ps)] * len(layers) if isinstance(ps, (int, float)) else list(ps)
        if len(ps) != len(layers):
            raise ValueError(f"ps has {len(ps)} values for {len(layers)} layers; give one each.")
        self.n_cat = len(cardinalities)
        self.embeds = GroupedEmbedding(cardinalities) if self.n_cat else None
        self.emb_drop = nn.Dropout(emb_drop)
        self.bn_cont = nn.BatchNorm1d(n_cont) if n_cont else None
        self.ple = None
        if cont_edges and n_cont and any(len(e) > 1 for e in cont_edges):
            if len(cont_edges) != n_cont:
                raise ValueError(f"cont_edges has {len(cont_edges)} columns for {n_cont} "
                                 "continuous inputs; give one list of edges each.")
            self.ple = PiecewiseLinear(cont_edges)
        width = (self.embeds.embedding_dim if self.embeds is not None else 0) + n_cont
        width += self.ple.out_features if self.ple is not None else 0
        blocks: list[nn.Module] = []
        for size, p in zip(layers, ps, strict=True):
            blocks += [nn.Linear(width, size, bias=False), nn.BatchNorm1d(size),
                       nn.ReLU(inplace=True)]
            if p:
                blocks.append(nn.Dropout(p))
            width = size
        blocks.append(nn.Linear(width, n_out))
        self.layers = nn.Sequential(*blocks)
        self.y_range = None if y_range is None else tuple(float(v) for v in y_range)

    def forward(self, cats: torch.Tensor, conts: torch.Tensor) -> torch.Tensor:
        parts = [self.embeds(cats)] if self.embeds is not None else []  # (B, sum E_i)
        if self.bn_cont is not None:
            parts.append(self.bn_cont(conts))  # (B, K)
        if self.ple is not None:
            parts.append(self.ple(conts))  # (B, sum of bins)
        x = torch.cat(parts, dim=1)  # (B, width)
        if self.embeds is not None:
            x = self.emb_drop(x)
        out = self.layers(x)  # (B, n_out)
        if self.y_range is not None:
            low, high = self.y_range
            out = low + (high - low) * torch.sigmoid(out)
        return out

    def embedding(self, column: int) -> torch.Tensor:
        """The (n, E) embedding matrix of one categorical column."""
        return self.embeds.weight(column).detach()
