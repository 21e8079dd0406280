"""Collaborative filtering: ratings tables, dot-product and embedding-network models.

    from threeline.collab import CollabData, collab_learner
    data = CollabData.from_csv("ml-100k/u.data", sep="\\t", names=["user", "item", "rating", "ts"])
    learn = collab_learner(data, n_factors=50, y_range=(0.5, 5.5))
    learn.fit(5e-3, 5)
    learn.recommend(user=196, k=10)
"""

from threeline.collab.data import CollabData
from threeline.collab.learner import CollabLearner, collab_learner, rebuild

__all__ = ["CollabData", "CollabLearner", "collab_learner", "rebuild"]
