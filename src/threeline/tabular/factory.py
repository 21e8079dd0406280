"""``Learner.tabular`` and ``Learner.load`` for tables: the network, or LightGBM and the
ensemble (:mod:`threeline.tabular.gbdt`), from one entry point."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from threeline.learner import Learner
from threeline.tabular.data import TabularData
from threeline.tabular.gbdt import gbdt_learner, rebuild_gbdt
from threeline.tabular.learner import MODELS, TabularLearner, model_config
from threeline.tabular.model import TabularModel
from threeline.tabular.preprocess import Preprocessor
from threeline.tabular.target import Target


def tabular_learner(data: TabularData, model: str = "nn", layers: Sequence[int] = (200, 100),
                    ps: float | Sequence[float] = 0.0, emb_drop: float = 0.0,
                    **kwargs) -> Learner:
    """A learner for a table (``Learner.tabular`` calls this).

    Args:
        data: a :class:`TabularData`.
        model: "nn" (embeddings + MLP), "gbdt" (LightGBM on the same encoded table) or
            "ensemble" (both, probabilities averaged,
            the network weighted 0.2: ``gbdt.NET_WEIGHT``).
        layers, ps, emb_drop: the network's hidden widths, dropout, embedding dropout.
        kwargs: to :class:`~threeline.learner.Learner` (``device=``, ``seed=``,
            ``progress=``, ...); ``params=`` (LightGBM's) for "gbdt" and "ensemble".

    Example:
        >>> learn = tabular_learner(data); learn.fit(1e-2, 5)        # doctest: +SKIP
    """
    if not isinstance(data, TabularData):
        raise TypeError(f"tabular_learner needs a TabularData (TabularData.from_csv(...)), "
                        f"got {type(data).__name__}.")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}.")
    if model != "nn":
        nn_kwargs = {"layers": layers, "ps": ps, "emb_drop": emb_drop}
        return gbdt_learner(data, ensemble=model == "ensemble", nn_kwargs=nn_kwargs, **kwargs)
    config = model_config(data, layers, ps, emb_drop)
    return TabularLearner(TabularModel(**config), data, data.prep, data.target, config, **kwargs)


def rebuild(description: dict, tensors: dict[str, torch.Tensor], device=None,
            data: TabularData | None = None, **kwargs) -> Learner:
    """A tabular learner from its saved JSON and tensors (``Learner.load`` calls this)."""
    if description.get("kind") in ("gbdt", "ensemble"):
        return rebuild_gbdt(description, tensors, device=device, data=data, **kwargs)
    config = description["config"]
    learn = TabularLearner(TabularModel(**config), data,
                           Preprocessor.from_dict(description["prep"]),
                           Target.from_dict(description["target"]), config, device=device,
                           **kwargs)
    learn.load_state_dict(tensors)
    learn.history = list(description.get("history") or [])
    return learn

