"""The network: a pretrained timm body that ends in pooled features, and a small new head.

``body(images)`` -> (B, D) pooled activations (average and max pooling concatenated), which is what
``precompute=True`` caches. ``head(features)`` -> (B, C) logits.
"""

from __future__ import annotations

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn


class Body(nn.Module):
    """A headless timm network followed by concatenated average + max pooling.

    Example:
        >>> import timm
        >>> net = timm.create_model("tf_efficientnet_lite0", num_classes=0, global_pool="")
        >>> Body(net)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 2560])
    """

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features
        self.pool = SelectAdaptivePool2d(pool_type="catavgmax", flatten=True)
        self.out_features = 2 * features.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.features(images)  # (B, F, H/32, W/32)
        return self.pool(maps)  # (B, 2F)


def make_head(in_features: int, n_classes: int, hidden: int = 512, dropout: float = 0.25) -> nn.Sequential:
    """BatchNorm -> Dropout -> Linear -> ReLU -> BatchNorm -> Dropout -> Linear.

    Example:
        >>> make_head(2560, 2)(torch.zeros(4, 2560)).shape
        torch.Size([4, 2])
    """
    return nn.Sequential(
        nn.BatchNorm1d(in_features),
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout * 2),
        nn.Linear(hidden, n_classes),
    )


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters so weight decay skips norms and biases (1-d tensors)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
