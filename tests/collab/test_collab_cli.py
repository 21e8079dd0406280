"""The ratings command-line functions on a real slice of MovieLens 100k: train, recommend,
predict, and the one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import shared_dataset
from threeline.collab.cli import predict_cli, recommend_cli, sniff, train_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    ml = shared_dataset("ml-100k")
    folder = tmp_path_factory.mktemp("ratings")
    lines = (ml / "u.data").read_text().splitlines(keepends=True)
    (folder / "ratings.tsv").write_text("".join(lines[:6000]))
    shutil.copy(ml / "u.item", folder / "u.item")
    out = folder / "run"
    learn = train_cli(folder / "ratings.tsv", out, epochs=1, titles=folder / "u.item",
                      device="cpu")
    return folder, out, learn


def test_sniff_finds_tab_and_no_header(run):
    folder, _, _ = run
    assert sniff(folder / "ratings.tsv") == ("\t", ["user", "item", "rating", "timestamp"])
    (folder / "h.csv").write_text("who,what,stars\nann,x,4\n")
    assert sniff(folder / "h.csv") == (",", None)


def test_train_writes_the_run_folder(run):
    _, out, learn = run
    for name in ("model.safetensors", "model.json", "history.csv", "args.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "args.json").read_text())["epochs"] == 1
    assert len(pd.read_csv(out / "history.csv")) == len(learn.history) == 1


def test_recommend_from_the_run_folder(run):
    _, out, learn = run
    top = recommend_cli(out, user="196", k=5)  # text from a command line reaches user 196
    pd.testing.assert_frame_equal(top, learn.recommend(196, k=5))
    assert top["title"].str.contains(r"\(\d{4}\)").all()  # titles from u.item


def test_predict_from_files_with_and_without_header(run):
    folder, out, learn = run
    (folder / "pairs.csv").write_text("user,item\n196,242\n186,302\n")
    (folder / "bare.tsv").write_text("196\t242\n186\t302\n")
    with_header = predict_cli(out, folder / "pairs.csv", out_csv=folder / "pred.csv")
    bare = predict_cli(out, folder / "bare.tsv")
    expected = learn.predict([(196, 242), (186, 302)])
    np.testing.assert_allclose(with_header["predicted"], expected, rtol=1e-6)
    np.testing.assert_allclose(bare["predicted"], expected, rtol=1e-6)
    assert pd.read_csv(folder / "pred.csv").shape == (2, 3)


def test_errors_are_one_line(run, tmp_path):
    folder, _, _ = run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_cli(tmp_path / "missing.csv", tmp_path / "out")
    (tmp_path / "two.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="fewer than 3 fields"):
        train_cli(tmp_path / "two.csv", tmp_path / "out")
    with pytest.raises(ValueError, match="No saved model at"):
        recommend_cli(folder, user=1)


def test_threeline_command_trains_recommends_and_predicts(tmp_path):
    import subprocess
    import sys

    ml = shared_dataset("ml-100k")
    out = tmp_path / "run"

    def threeline(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "threeline.cli", *words],
                              capture_output=True, text=True, timeout=600)

    done = threeline("ratings", str(ml / "u1.base"), "--valid", str(ml / "u1.test"),
                     "--titles", str(ml / "u.item"), "--epochs", "2", "--device", "cpu",
                     "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "valid RMSE 0.9" in done.stdout  # u1.test, after two epochs
    top = threeline("recommend", str(out), "--user", "196", "-k", "5", "--csv",
                    "--device", "cpu")
    assert top.returncode == 0, top.stderr[-2000:]
    table = pd.read_csv(__import__("io").StringIO(top.stdout))
    rated = {int(r.split("\t")[1]) for r in (ml / "u1.base").read_text().splitlines()
             if r.split("\t")[0] == "196"}
    assert len(table) == 5 and not set(table["item"]) & rated  # unrated items only
    assert table["title"].str.len().min() > 0
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user,item\n196,242\n196,999999\n")
    predicted = threeline("predict", str(out), str(pairs), "--device", "cpu")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = pd.read_csv(__import__("io").StringIO(predicted.stdout))
    assert list(rows.columns) == ["user", "item", "predicted"]
    assert rows["predicted"].between(0.5, 5.5).all()  # the unknown item: bias-only, no error
    missing = threeline("recommend", str(out), "--user", "no-such-user", "--device", "cpu")
    assert missing.returncode == 0  # an unknown user: the best items by bias, said in one line
    assert missing.stderr.startswith("threeline: warning:") and missing.stderr.count("\n") == 1
    assert "bias" in missing.stderr
