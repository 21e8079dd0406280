"""Training through the core on real Adult rows: the epoch table, prediction on new rows,
save/load, the CLI's predict_csv, boosted trees and the ensemble, interpretation."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import shared_dataset
from threeline.cli import main as cli_main
from threeline.learner import Learner
from threeline.saving import ModelFileError
from threeline.tabular import TabularData, predict_csv, tabular_learner
from threeline.tabular.gbdt import NET_WEIGHT

matplotlib.use("Agg")

N_ROWS = 8000  # Adult rows used here (of 32,561), to keep the file fast on 2 CPU cores


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster than two fighting for shared cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    return pd.read_csv(shared_dataset("adult") / "adult.csv", na_values=["?"])


@pytest.fixture(scope="module")
def data(adult) -> TabularData:
    return TabularData.from_df(adult.iloc[:N_ROWS], y="target", seed=0)


@pytest.fixture(scope="module")
def trained(data):
    """The network trained 3 epochs. Shared: tests must not train it further."""
    learn = tabular_learner(data, device="cpu", progress=False, seed=0)
    learn.checkpoint_dir = False
    out = io.StringIO()
    with redirect_stdout(out):
        rows = learn.fit(1e-2, 3)
    return learn, rows, out.getvalue()


@pytest.fixture(scope="module")
def gbdt(data):
    learn = tabular_learner(data, model="gbdt", device="cpu", progress=False)
    out = io.StringIO()
    with redirect_stdout(out):
        rows = learn.fit(1e-2, 3)
    return learn, rows, out.getvalue()


def test_fit_prints_the_epoch_table_and_learns(trained, data):
    learn, rows, printed = trained
    assert Learner.tabular is not None and isinstance(learn, Learner)
    header = printed.splitlines()[0].split()
    assert header == ["epoch", "train_loss", "valid_loss", "accuracy", "log_loss", "time"]
    assert len(rows) == 3 and rows[-1]["accuracy"] > 0.82  # majority class: 0.76
    assert rows[-1]["log_loss"] == pytest.approx(rows[-1]["valid_loss"], rel=1e-5)
    majority = np.bincount(data.y[data.rows["valid"]]).max() / len(data.rows["valid"])
    assert rows[-1]["accuracy"] > majority + 0.05


def test_predict_new_rows_any_order_extra_columns(trained, adult):
    learn, _, _ = trained
    new = adult.iloc[N_ROWS:N_ROWS + 300]
    preds = learn.predict(new)
    assert list(preds.columns) == ["target_pred", "p_<=50K", "p_>50K"]
    np.testing.assert_allclose(preds[["p_<=50K", "p_>50K"]].sum(axis=1), 1.0, rtol=1e-5)
    assert (preds["target_pred"] == new["target"]).mean() > 0.8
    reordered = new[list(reversed(new.columns))].drop(columns=["target"]).assign(note="x")
    pd.testing.assert_frame_equal(learn.predict(reordered), preds)
    odd = new.iloc[:2].copy()
    odd["occupation"] = ["Astronaut", None]
    odd["age"] = [np.nan, 200]
    assert np.isfinite(learn.predict(odd)[["p_<=50K", "p_>50K"]].to_numpy()).all()
    with pytest.raises(ValueError, match=r"lacks columns \['education', 'sex'\]"):
        learn.predict(new.drop(columns=["sex", "education"]))


def test_save_load_and_predict_csv(trained, adult, tmp_path):
    learn, _, _ = trained
    learn.save(tmp_path / "run" / "model")
    loaded = Learner.load(tmp_path / "run" / "model", device="cpu")
    new = adult.iloc[N_ROWS:N_ROWS + 200]
    pd.testing.assert_frame_equal(loaded.predict(new), learn.predict(new))
    assert loaded.history == learn.history and loaded.data is None
    csv = tmp_path / "new.csv"
    new.drop(columns=["target"]).to_csv(csv, index=False)
    out = predict_csv(tmp_path / "run", csv)
    written = pd.read_csv(out)
    assert out.name == "new-predictions.csv" and len(written) == 200
    assert written["row"].tolist() == list(range(200))
    np.testing.assert_allclose(written["p_>50K"], learn.predict(new)["p_>50K"], rtol=1e-5)
    with redirect_stdout(io.StringIO()) as printed:  # the same through the command line
        code = cli_main(["predict", str(tmp_path / "run"), str(csv), "-o",
                         str(tmp_path / "cli.csv"), "--device", "cpu"])
    assert code == 0 and "cli.csv" in printed.getvalue()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cli.csv"), written)
    (tmp_path / "run" / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(ModelFileError):
        Learner.load(tmp_path / "run" / "model")


def test_lr_find_leaves_the_model_alone(data):
    learn = tabular_learner(data, device="cpu", progress=False)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with redirect_stdout(io.StringIO()):
        result = learn.lr_find(num_it=20)
    assert len(result.losses) > 5
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gbdt_same_table_same_metrics_and_save_load(gbdt, adult, tmp_path):
    learn, rows, printed = gbdt
    header = printed.splitlines()[0].split()
    assert header == ["epoch", "rounds", "train_loss", "valid_loss", "accuracy", "log_loss",
                      "time"]
    assert len(rows) == 3 and rows[-1]["accuracy"] > 0.83
    assert rows[0]["rounds"] < rows[-1]["rounds"]
    assert rows[-1]["valid_loss"] == pytest.approx(learn.validate()["valid_loss"], rel=1e-6)
    learn.save(tmp_path / "gbdt")
    loaded = Learner.load(tmp_path / "gbdt", device="cpu")
    new = adult.iloc[N_ROWS:N_ROWS + 200]
    pd.testing.assert_frame_equal(loaded.predict(new), learn.predict(new))
    with pytest.raises(ValueError, match="lr_find is for networks"):
        learn.lr_find()


def test_ensemble_trains_both_and_averages(data, adult, tmp_path):
    learn = tabular_learner(data, model="ensemble", device="cpu", progress=False)
    learn.checkpoint_dir = False
    out = io.StringIO()
    with redirect_stdout(out):
        rows = learn.fit(1e-2, 2)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, "ensemble"]
    assert "ensemble" in out.getvalue()
    new = adult.iloc[N_ROWS:N_ROWS + 100]
    cats, conts = learn.encode(new)
    both = learn.probabilities(cats, conts)
    net = torch.softmax(torch.from_numpy(learn.raw_outputs(cats, conts)), -1)
    model = learn.model
    with torch.inference_mode():
        x = (torch.from_numpy(cats), torch.from_numpy(conts))
        p_net = torch.softmax(model.net.eval()(*x), -1)
        p_gbdt = model.gbdt(*x).exp()
    w = NET_WEIGHT  # the network's fixed share, chosen on training rows only
    np.testing.assert_allclose(both, (w * p_net + (1 - w) * p_gbdt).numpy(), rtol=1e-4,
                               atol=1e-6)
    assert net.shape == (100, 2)
    learn.save(tmp_path / "ens")
    loaded = Learner.load(tmp_path / "ens", device="cpu")
    assert loaded.model.net_weight == w
    pd.testing.assert_frame_equal(loaded.predict(new), learn.predict(new), rtol=1e-5)


def test_interpret(trained, data, tmp_path):
    learn, _, _ = trained
    interp = learn.interpret()
    imp = interp.feature_importance()
    assert set(imp["column"]) == set(learn.prep.sources)
    assert imp["loss_increase"].iloc[0] > 0.01  # shuffling the best column hurts
    # relationship / marital status / capital gain carry most of Adult's signal
    assert set(imp["column"].iloc[:4]) & {"relationship", "marital_status", "capital_gain"}
    worst = interp.worst(5)
    assert len(worst) == 5 and worst["loss"].is_monotonic_decreasing
    assert (worst["prediction"] != worst["target"]).all()
    assert set(worst.index) <= set(data.rows["valid"])
    cm = interp.confusion_matrix()
    assert cm.shape == (2, 2) and cm.sum() == len(data.rows["valid"])
    for name, fig in [("importance", interp.plot_importance(save=tmp_path / "i.png")),
                      ("confusion", interp.plot_confusion_matrix(save=tmp_path / "c.png")),
                      ("embedding", interp.plot_embedding("occupation", save=tmp_path / "e.png"))]:
        assert isinstance(fig, matplotlib.figure.Figure), name
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("i.png", "c.png", "e.png"))
    with pytest.raises(ValueError, match="not a categorical column"):
        interp.plot_embedding("age")
