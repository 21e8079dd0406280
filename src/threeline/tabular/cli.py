"""``threeline predict RUN new.csv``: a saved tabular model's predictions for a file's rows.

    predict_csv("runs/adult", "new.csv", "new-predictions.csv")
    # row,target_pred,p_<=50K,p_>50K        (row: the position in new.csv, from 0)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from threeline.saving import atomic_write
from threeline.tabular.columns import read_table
from threeline.tabular.learner import prediction_frame


def predict_csv(run_folder: str | Path, csv: str | Path, out: str | Path | None = None,
                na_values: tuple[str, ...] = ("?",), device=None) -> Path:
    """Predict every row of ``csv`` (CSV or Parquet) with the model saved in ``run_folder``
    (a folder holding ``model.safetensors`` + ``model.json``, or the path of those files
    without suffix) and write a CSV of predictions to ``out`` (default: beside ``csv``, named
    ``<stem>-predictions.csv``). Columns may come in any order; extra ones are ignored; a
    missing one is an error naming it. Returns the path written.

    Example:
        >>> predict_csv("runs/adult", "new.csv")                    # doctest: +SKIP
        PosixPath('new-predictions.csv')
    """
    from threeline.learner import Learner

    csv = Path(csv)
    out = Path(out) if out is not None else csv.with_name(f"{csv.name.split('.')[0]}"
                                                         "-predictions.csv")
    learn = Learner.load(run_folder, device=device or "cpu")
    if not hasattr(learn, "prep"):
        raise ValueError(f"{run_folder} holds a {learn.describe().get('application')} model, "
                         "not a tabular one; expected a run saved by a tabular learner.")
    cols = read_table(csv, na_values)
    n = cols.n_rows
    cats, conts = learn.prep.transform(cols)
    del cols
    frame = prediction_frame(learn.target, learn.probabilities(cats, conts), pd.RangeIndex(n))
    atomic_write(out, lambda tmp: frame.to_csv(tmp, index_label="row"))
    return out
