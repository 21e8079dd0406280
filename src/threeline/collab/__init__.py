"""Collaborative filtering: ratings tables, dot-product and embedding-network models.

    from threeline.collab import CollabData, collab_learner
    data = CollabData.from_csv("ml-100k/u.data", sep="\\t", names=["user", "item", "rating", "ts"])
    learn = collab_learner(data, n_factors=50)          # y_range from the ratings
    learn.fit(5e-3, 5)
    learn.recommend(user=196, k=10)

The names load torch and pandas when first used, so the command line can parse its arguments
(``threeline.collab.commands``) without them.
"""

from __future__ import annotations

import importlib

__all__ = ["CollabData", "CollabLearner", "collab_learner", "rebuild"]
_HOME = {"CollabData": "threeline.collab.data", "CollabLearner": "threeline.collab.learner",
         "collab_learner": "threeline.collab.learner", "rebuild": "threeline.collab.learner"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'threeline.collab' has no attribute {name!r}")
