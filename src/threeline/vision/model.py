"""The network: a pretrained body that ends in pooled features, and a small new head.

``body(images)`` -> (B, D) pooled activations (average and max pooling concatenated), which is what
``precompute=True`` caches. ``head(features)`` -> (B, C) logits.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


class Body(nn.Module):
    """A headless network (``forward_features`` and ``num_features``, as timm's have) followed
    by concatenated average + max pooling.

    Example:
        >>> from threeline.models.efficientnet_lite import efficientnet_lite
        >>> Body(efficientnet_lite(0))(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 2560])
    """

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features
        self.out_features = 2 * features.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features.forward_features(images))  # maps: (B, F, H/32, W/32)

    @staticmethod
    def pool(maps: torch.Tensor) -> torch.Tensor:
        """(B, F, h, w) feature maps -> (B, 2F): their average and maximum, concatenated."""
        return torch.cat([maps.mean((2, 3)), maps.amax((2, 3))], 1)


SOLVED_HEAD_MAX_IMAGES = 2000  # up to this many training images the default head is linear


def head_width(n_train: int) -> int:
    """The default hidden width for ``n_train`` training images: 0 (a linear head, which
    ``fit`` solves on cached activations; :mod:`threeline.vision.solve`) up to
    ``SOLVED_HEAD_MAX_IMAGES``, else 512. On 40 to 2,000 images a two-layer head trained by
    ``fit(0.01, 3)`` ended 0.5 to 5 points below the solved linear head
    (``benchmarks/results/small_data-*.md``).

    Example:
        >>> head_width(500), head_width(10_000)
        (0, 512)
    """
    return 0 if n_train <= SOLVED_HEAD_MAX_IMAGES else 512


def check_head(hidden: int, dropout: float) -> None:
    """Raise a ValueError that says how to fix a head's width or dropout that cannot train.

    Example:
        >>> check_head(512, 0.5)
        Traceback (most recent call last):
        ...
        ValueError: dropout must be at least 0 and below 0.5, got 0.5: the head drops ...
    """
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise ValueError(f"hidden must be a whole number >= 0 (the head's hidden width; 0 for "
                         f"a linear head), got {hidden!r}. None picks 0 for up to "
                         f"{SOLVED_HEAD_MAX_IMAGES:,} training images, else 512.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0 <= dropout < 0.5:
        raise ValueError(
            f"dropout must be at least 0 and below 0.5, got {dropout!r}: the head drops "
            f"inputs with this probability before its first layer and with twice it before its "
            f"last, and a probability of 1 would drop everything. The default is 0.25.")


def make_head(in_features: int, n_classes: int, hidden: int = 512,
              dropout: float = 0.25) -> nn.Sequential:
    """BatchNorm -> Dropout(p) -> Linear -> ReLU -> BatchNorm -> Dropout(2p) -> Linear, or
    with ``hidden=0`` the linear head BatchNorm -> Dropout(p) -> Linear.

    Example:
        >>> make_head(2560, 2)(torch.zeros(4, 2560)).shape
        torch.Size([4, 2])
        >>> [type(m).__name__ for m in make_head(2560, 2, hidden=0)]
        ['BatchNorm1d', 'Dropout', 'Linear']
    """
    check_head(hidden, dropout)
    if hidden == 0:
        return nn.Sequential(nn.BatchNorm1d(in_features), nn.Dropout(dropout),
                             nn.Linear(in_features, n_classes))
    return nn.Sequential(
        nn.BatchNorm1d(in_features),
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout * 2),
        nn.Linear(hidden, n_classes),
    )


def body_groups(body: Body, n_groups: int = 2) -> list[list[nn.Parameter]]:
    """The body's parameters in ``n_groups`` contiguous groups, from the input side up.

    Uses the network's own stage grouping (``parameter_stages()``, or a timm network's
    ``group_matcher``: stem, then each stage of blocks, then the last convolution) and splits
    the stages into ``n_groups`` runs of equal length, so for an EfficientNet the first group is
    the stem and early stages and the second the late stages. Other networks are split by
    their top-level children.

    Example:
        >>> from threeline.models.efficientnet_lite import efficientnet_lite
        >>> net = efficientnet_lite(0)
        >>> early, late = body_groups(Body(net))
        >>> len(early) + len(late) == len(list(net.parameters()))
        True
    """
    net = body.features
    if hasattr(net, "parameter_stages"):
        stages = net.parameter_stages()
    elif hasattr(net, "group_matcher"):
        from timm.models import group_parameters

        named = dict(net.named_parameters())
        stages = [[named[n] for n in names]
                  for names in group_parameters(net, net.group_matcher(coarse=True)).values()]
    else:
        stages = [list(child.parameters()) for child in net.children()]
    stages = [s for s in stages if s]
    n = min(n_groups, len(stages))
    cuts = [round(i * len(stages) / n) for i in range(n + 1)]
    groups = [[p for s in stages[a:b] for p in s] for a, b in itertools.pairwise(cuts)]
    seen = {id(p) for g in groups for p in g}
    rest = [p for p in net.parameters() if id(p) not in seen]  # anything no stage claimed
    groups[-1] += rest
    return groups


def layer_groups(body: Body, head: nn.Module) -> list[list[nn.Parameter]]:
    """[early body, late body, head]: the groups that differential learning rates spread over.

    Example:
        >>> from threeline.models.efficientnet_lite import efficientnet_lite
        >>> body = Body(efficientnet_lite(0))
        >>> len(layer_groups(body, make_head(body.out_features, 2)))
        3
    """
    return [*body_groups(body), list(head.parameters())]
