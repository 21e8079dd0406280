"""The tabular learner: the core :class:`~threeline.learner.Learner` with a table's model,
loss and metrics, plus prediction on new rows and interpretation.

    learn = tabular_learner(data)              # embeddings + MLP, sizes from cardinality
    learn.fit(1e-2, 5)                         # the core's loop, epoch table, checkpoints
    learn.predict(new_df)                      # a DataFrame of predictions
    learn.save("runs/adult/model"); Learner.load("runs/adult/model")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from threeline.learner import Learner
from threeline.losses import MSE, CrossEntropy, Loss
from threeline.metrics import Metric, accuracy, rmse
from threeline.tabular.columns import Columns
from threeline.tabular.data import TabularData
from threeline.tabular.model import TabularModel
from threeline.tabular.preprocess import Preprocessor
from threeline.tabular.target import Target

APPLICATION = "threeline.tabular"
MODELS = ("nn", "gbdt", "ensemble")
PREDICT_BATCH = 8192


def log_loss() -> Metric:
    """Classification log-loss (mean negative log-likelihood of the true class).

    Example:
        >>> round(log_loss().compute(torch.zeros(2, 2), torch.tensor([0, 1])), 4)
        0.6931
    """
    return Metric("log_loss", lambda out, y: F.cross_entropy(out.float(), y, reduction="none"))


def loss_and_metrics(target: Target) -> tuple[Loss, list[Metric]]:
    """Cross-entropy with accuracy and log-loss for classes; MSE with RMSE for numbers (RMSLE
    when the target is on a log scale)."""
    if target.task == "classification":
        return CrossEntropy(), [accuracy(), log_loss()]
    metric = rmse()
    if target.log:
        metric.name = "rmsle"
    return MSE(), [metric]


class TabularLearner(Learner):
    """A :class:`Learner` that knows its table's preprocessing and target.

    ``learn.prep`` and ``learn.target`` are stored with the model (JSON), so a loaded learner
    predicts on new rows without the training data.
    """

    name = "tabular"

    def __init__(self, model: TabularModel, data: TabularData | None, prep: Preprocessor,
                 target: Target, config: dict, **kwargs):
        loss, metrics = loss_and_metrics(target)
        kwargs.setdefault("loss", loss)
        kwargs.setdefault("metrics", metrics)
        super().__init__(model, data, **kwargs)
        self.prep, self.target, self.config = prep, target, config

    def describe(self) -> dict:
        return {"application": APPLICATION, "kind": "nn", "model": "TabularModel",
                "config": self.config, "prep": self.prep.to_dict(),
                "target": self.target.to_dict(), "loss": self.loss.describe()}

    # ----------------------------------------------------------------- prediction

    def encode(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """New rows -> (cats, conts), as in training (any column order, extras ignored)."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"predict expects a pandas DataFrame of rows, got "
                            f"{type(df).__name__}; read a file with pandas.read_csv first.")
        return self.prep.transform(Columns(df))

    def raw_outputs(self, cats: np.ndarray, conts: np.ndarray) -> np.ndarray:
        """The network's outputs for encoded rows, (N, n_out) float32 on the CPU."""
        outs, _ = self.get_preds(batches=_chunks(cats, conts, self.device), module=self.model)
        return outs.cpu().numpy()

    def probabilities(self, cats: np.ndarray, conts: np.ndarray) -> np.ndarray:
        """Classification: (N, classes) probabilities; regression: (N,) on the model's scale."""
        outs = torch.from_numpy(self.raw_outputs(cats, conts))
        act = self.loss.activation(outs).numpy()
        return act if self.target.task == "classification" else act.reshape(-1)

    def predict(self, df: pd.DataFrame | None = None) -> pd.DataFrame:
        """Predictions for new rows (default: the validation rows), one row each.

        Classification: ``<target>_pred`` (the class) and ``p_<class>`` per class;
        regression: ``<target>_pred`` in the target's units.

        Example:
            >>> learn.predict(pd.read_csv("new.csv"))          # doctest: +SKIP
        """
        if df is None:
            data = self._need_data()
            rows = data.rows["valid"]
            cats, conts = data.cats[rows], data.conts[rows]
            index = pd.Index(rows)
        else:
            (cats, conts), index = self.encode(df), df.index
        return prediction_frame(self.target, self.probabilities(cats, conts), index)

    def interpret(self):
        """Feature importance, worst-predicted rows, confusion matrix, embedding maps."""
        from threeline.tabular.interpret import TabularInterpretation

        return TabularInterpretation(self)


def prediction_frame(target: Target, act: np.ndarray, index) -> pd.DataFrame:
    """The predictions DataFrame from activations: probabilities (N, C) or values (N,)."""
    if target.task == "classification":
        frame = pd.DataFrame({f"{target.name}_pred": target.decode(act.argmax(1))}, index=index)
        for i, c in enumerate(target.classes):
            frame[f"p_{_label(c)}"] = act[:, i]
        return frame
    return pd.DataFrame({f"{target.name}_pred": target.decode(act)}, index=index)


def _label(c) -> str:
    return str(int(c)) if isinstance(c, float) and c.is_integer() else str(c)


def _chunks(cats: np.ndarray, conts: np.ndarray,
            device: torch.device) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], None]]:
    for i in range(0, len(cats), PREDICT_BATCH):
        xb = (torch.from_numpy(cats[i:i + PREDICT_BATCH]).to(device),
              torch.from_numpy(conts[i:i + PREDICT_BATCH]).to(device))
        yield xb, None


def model_config(data: TabularData, layers: Sequence[int], ps, emb_drop: float,
                 ple: bool = True) -> dict:
    """JSON arguments of :class:`TabularModel` for this data."""
    return {"cardinalities": data.prep.cardinalities, "n_cont": len(data.cont_names),
            "n_out": data.target.n_out, "layers": list(layers),
            "ps": ps if isinstance(ps, (int, float)) else list(ps), "emb_drop": emb_drop,
            "y_range": data.target.y_range,
            "cont_edges": [c.edges for c in data.prep.conts] if ple else None}
