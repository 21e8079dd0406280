"""The ``threeline`` command, end to end on the demo photos."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from threeline import Learner
from threeline.cli import main

ARCH = ["--arch", "efficientnet_lite0", "--size", "128"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dogscats_demo) -> Path:
    """A run folder from ``threeline train`` with the lr finder."""
    out = tmp_path_factory.mktemp("runs") / "pets"
    code = main(["train", str(dogscats_demo), *ARCH, "--epochs", "2", "--lr", "0.01",
                 "--lr-find", "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_the_run_folder(run_dir, capsys):
    names = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    assert names == ["args.json", "checkpoints", "confusion_matrix.png", "history.csv",
                     "lr_find.png", "model.json", "model.safetensors"]
    with open(run_dir / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert [row["epoch"] for row in history] == ["0", "1"]
    assert float(history[-1]["accuracy"]) >= 0.8
    args = json.loads((run_dir / "args.json").read_text())
    assert args["epochs"] == 2 and args["lr_used"] == 0.01 and args["arch"] == "efficientnet_lite0"
    assert args["command"][:2] == ["threeline", "train"]
    for png in ("confusion_matrix.png", "lr_find.png"):
        with Image.open(run_dir / png) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir())[0] == "best.json"
    assert Learner.load(run_dir, device="cpu", progress=False).classes == ["cats", "dogs"]


def test_train_refuses_to_overwrite_a_run(run_dir, dogscats_demo, capsys):
    code = main(["train", str(dogscats_demo), *ARCH, "--out", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "already holds a trained model" in err


def test_predict_table_csv_and_top_k(run_dir, dogscats_demo, tmp_path, capsys):
    folder = dogscats_demo / "valid"
    assert main(["predict", str(run_dir), str(folder / "cats"), str(folder / "dogs"),
                 "--csv", "--top-k", "2", "--device", "cpu"]) == 0  # compared with the CPU below
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2 * 40 and set(rows[0]) == {"file", "label", "probability", "error"}
    first, second = rows[0], rows[1]
    assert first["file"] == second["file"] and first["label"] != second["label"]
    assert float(first["probability"]) >= float(second["probability"])
    assert float(first["probability"]) + float(second["probability"]) == pytest.approx(1, abs=1e-5)
    top = rows[::2]
    truth = [Path(r["file"]).parent.name for r in top]
    assert np.mean([r["label"] == t for r, t in zip(top, truth, strict=True)]) >= 0.8

    learn = Learner.load(run_dir, device="cpu", progress=False)
    probs = np.exp(learn.predict([Path(r["file"]) for r in top[:3]]))
    assert [float(r["probability"]) for r in top[:3]] == pytest.approx(probs.max(1), abs=1e-5)

    photo = sorted((folder / "cats").iterdir())[0]
    (tmp_path / "broken.jpg").write_bytes(photo.read_bytes()[:20])
    (tmp_path / "notes.txt").write_text("not a photo")
    assert main(["predict", str(run_dir), str(photo), str(tmp_path / "broken.jpg"),
                 str(tmp_path / "notes.txt")]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["file", "label", "probability"] and len(lines) == 4
    assert lines[1].startswith(str(photo)) and lines[1].split()[1] in ("cats", "dogs")
    assert lines[2].startswith(str(tmp_path / "broken.jpg"))
    assert lines[3].startswith(str(tmp_path / "notes.txt"))
    assert all("-      -            failed: not a readable image" in x for x in lines[2:])
    assert "2 of 3 files could not be predicted" in err

    assert main(["predict", str(run_dir), str(photo), "-o", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().startswith("file,label,probability,error\n")


def test_export_onnx_command(run_dir, dogscats_demo, tmp_path, capsys):
    folder = tmp_path / "exported"
    folder.mkdir()
    assert main(["export", str(run_dir), "--onnx", str(folder)]) == 0  # a folder: model.onnx
    path = folder / "model.onnx"
    assert str(path) in capsys.readouterr().out and not (tmp_path / "exported.onnx").exists()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    learn = Learner.load(run_dir, device="cpu", progress=False)
    files = sorted((dogscats_demo / "valid" / "dogs").iterdir())[:3]
    pixels = np.stack([learn.preprocess(f).numpy() for f in files]).astype(np.float32) / 255
    np.testing.assert_allclose(session.run(None, {"pixels": pixels})[0],
                               np.exp(learn.predict(files)), atol=1e-4)


def test_lr_find_command(dogscats_demo, tmp_path, capsys):
    assert main(["lr-find", str(dogscats_demo), *ARCH, "--out", str(tmp_path / "lr")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("suggested learning rate: "))
    assert 1e-7 < float(line.split(": ")[1]) < 10
    assert f"plot: {tmp_path / 'lr.png'}" in out  # the file written, named as written
    assert f"use it: threeline train {dogscats_demo} --arch=efficientnet_lite0" in out
    with Image.open(tmp_path / "lr.png") as image:
        assert image.format == "PNG"


def test_train_fine_tune(hymenoptera_demo, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["train", str(hymenoptera_demo), "--arch", "efficientnet_lite0", "--size", "64",
                 "--epochs", "1", "--fine-tune", "--out", str(out)]) == 0
    with open(out / "history.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) >= 2  # the head, then the whole network
    assert json.loads((out / "args.json").read_text())["fine_tune"] is True


def test_errors_are_one_line_with_meaningful_exit_codes(tmp_path, dogscats_demo, capsys):
    cases = [
        (["train", str(tmp_path / "nowhere")], 1, "does not exist"),
        (["predict", str(tmp_path / "no-model"), str(dogscats_demo)], 1, "No saved model"),
        (["predict", str(tmp_path / "no-model"), "missing.jpg"], 1, "missing.jpg does not exist"),
        (["export", str(tmp_path / "no-model"), "--onnx"], 1, "No saved model"),
    ]
    one_class = tmp_path / "one"
    shutil.copytree(dogscats_demo / "train" / "cats", one_class / "cats")
    cases.append((["train", str(one_class)], 1, "Only one class folder"))
    for argv, expected, words in cases:
        assert main(argv) == expected, argv
        err = capsys.readouterr().err
        assert err.startswith("threeline: error: ") and err.count("\n") == 1, err
        assert words in err and "Traceback" not in err
    for argv in (["train", str(dogscats_demo), "--epochs", "0"], ["predict", "model-only"],
                 ["export", "m"], ["fly"], []):
        assert main(argv) == 2, argv
    capsys.readouterr()
    with pytest.raises(FileNotFoundError):
        main(["train", str(tmp_path / "nowhere"), "--debug"])


def test_help_everywhere_has_examples(capsys):
    for command in ([], ["train"], ["predict"], ["lr-find"], ["export"]):
        assert main([*command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "examples:" in out and "threeline" in out, command


def test_console_script_runs(run_dir, dogscats_demo):
    script = Path(sys.executable).with_name("threeline")
    photo = sorted((dogscats_demo / "valid" / "dogs").iterdir())[0]
    done = subprocess.run([str(script), "predict", str(run_dir), str(photo), "--csv"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["file"] for r in rows] == [str(photo)] and rows[0]["label"] in ("cats", "dogs")
