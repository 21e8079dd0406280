"""Tables: a CSV or Parquet file (or a DataFrame) to a trained model in three lines.

    from threeline.tabular import TabularData, tabular_learner
    data = TabularData.from_csv("adult.csv", y="target")    # types inferred, split, encoded
    learn = tabular_learner(data)                           # embeddings + MLP
    learn.fit(1e-2, 5)                                      # the core's loop and epoch table

``Learner.tabular(data)`` is the same factory. ``model="gbdt"`` trains LightGBM on the same
encoded table, ``model="ensemble"`` averages both. Needs pandas and pyarrow (and lightgbm for
the boosted trees): ``pip install threeline[tabular]``.
"""

from threeline.tabular.data import TabularData
from threeline.tabular.factory import rebuild, tabular_learner
from threeline.tabular.learner import TabularLearner

__all__ = ["TabularData", "TabularLearner", "predict_csv", "rebuild", "tabular_learner"]


def predict_csv(run_folder, csv, out=None):
    """Predictions for the rows of a CSV or Parquet file, written as CSV; see
    :func:`threeline.tabular.cli.predict_csv`."""
    from threeline.tabular.cli import predict_csv as run

    return run(run_folder, csv, out)
