"""What a new user hit: each case reproduced on real files, folders and processes.

Silent wrong results first (split folders read as classes, a damaged model predicting NaN,
truncated photos trained under a label, classes without validation images, run folders read as
data), then runs that lose or mix files (kill -9, two trainings at once, Ctrl-C pressed three
times, a closed pipe), then errors that must name the option and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from threeline import ImageData, Learner
from threeline.cli import main
from threeline.saving import ModelFileError

ARCH = ["--arch", "efficientnet_lite0", "--size", "64"]


def _copy_demo(demo: Path, dest: Path, names: dict[str, str]) -> Path:
    """The demo's train/ and valid/ copied under other split names."""
    for split, name in names.items():
        shutil.copytree(demo / split, dest / name)
    return dest


def _cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "threeline.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})}, **kwargs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dogscats_demo) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pets"
    assert main(["train", str(dogscats_demo), *ARCH, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _photo(demo: Path) -> Path:
    return sorted((demo / "valid" / "cats").iterdir())[0]


# ------------------------------------------------------------------ silent wrong results


@pytest.mark.parametrize("names", [
    {"train": "Training", "valid": "Testing"},
    {"train": "Train", "valid": "Valid"},
    {"train": "training", "valid": "validation"},
])
def test_split_folders_in_any_case_are_splits_not_classes(dogscats_demo, tmp_path, names):
    data = ImageData.from_folder(_copy_demo(dogscats_demo, tmp_path / "d", names))
    assert data.classes == ["cats", "dogs"]
    assert (len(data.train), len(data.valid)) == (80, 40)
    assert all(names["valid"] in f.parts for f in data.valid.files)
    if names["valid"] == "Testing":
        assert any("Testing/ is used as the validation set" in n for n in data.notes)


def test_test_folder_beside_valid_is_named_and_left_alone(dogscats_demo, tmp_path):
    root = _copy_demo(dogscats_demo, tmp_path / "d",
                      {"train": "train", "valid": "valid"})
    shutil.copytree(dogscats_demo / "valid", root / "test")
    data = ImageData.from_folder(root)
    assert (data.classes, len(data.valid)) == (["cats", "dogs"], 40)
    assert not any("test" in f.parts for f in data.train.files + data.valid.files)
    assert any("test/ is not used" in n for n in data.notes)


def test_class_folders_holding_only_sub_folders_are_pointed_out(dogscats_demo, tmp_path, capsys):
    root = tmp_path / "photos"
    for kind in ("pets", "more pets"):  # unrecognised split names: two "classes" of classes
        for cls in ("cats", "dogs"):
            shutil.copytree(dogscats_demo / "train" / cls, root / kind / cls)
    data = ImageData.from_folder(root)
    assert data.classes == ["more pets", "pets"]
    err = capsys.readouterr().err
    assert "hold only sub-folders" in err and "pets/ holds cats/, dogs/" in err
    assert any("hold only sub-folders" in n for n in data.notes)


def test_a_class_without_validation_images_is_named_with_what_accuracy_means(
        dogscats_demo, tmp_path, capsys):
    root = _copy_demo(dogscats_demo, tmp_path / "a", {"train": "train", "valid": "valid"})
    shutil.rmtree(root / "valid" / "dogs")
    data = ImageData.from_folder(root)
    err = capsys.readouterr().err
    assert "folder cannot be read" not in err and not data.skipped
    assert "No validation images for 1 of 2 classes: dogs (valid/ has no dogs/ folder)" in err
    assert "measure the other 1 class only" in err

    flat = tmp_path / "b"
    shutil.copytree(dogscats_demo / "train" / "cats", flat / "cats")
    (flat / "dogs").mkdir()
    shutil.copy(sorted((dogscats_demo / "train" / "dogs").iterdir())[0], flat / "dogs")
    data = ImageData.from_folder(flat)
    assert data.valid.counts(data.classes) == {"cats": 8, "dogs": 0}
    assert "dogs (1 image, all kept for training)" in capsys.readouterr().err
    assert "note: No validation images" in repr(data)


def test_run_folders_inside_the_data_are_never_read(run_dir, dogscats_demo, tmp_path):
    root = tmp_path / "photos"
    for cls in ("cats", "dogs"):
        shutil.copytree(dogscats_demo / "train" / cls, root / cls)
    shutil.copytree(run_dir, root / "run1")  # --out photos/run1
    shutil.copytree(run_dir, root / "runs" / "pets-20260101")  # default --out, cwd photos/
    shutil.copytree(run_dir, root / "cats" / "run2")  # --out inside a class folder
    data = ImageData.from_folder(root)
    assert data.classes == ["cats", "dogs"]
    assert not any("run" in part for f in data.train.files + data.valid.files
                   for part in f.relative_to(root).parts)
    assert any("Ignored 1 run folder" in n for n in data.notes)


def test_truncated_and_header_only_photos_are_failed_rows_in_predict(
        run_dir, dogscats_demo, tmp_path, capsys):
    photo = _photo(dogscats_demo)
    jpeg = photo.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    scan = jpeg.index(b"\xff\xda")
    (tmp_path / "header_only.jpg").write_bytes(jpeg[:scan + 2 + jpeg[scan + 3]])
    shutil.copy(photo, tmp_path / "good.jpg")
    assert main(["predict", str(run_dir), str(tmp_path), "--csv"]) == 0
    rows = {Path(r["file"]).name: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows["good.jpg"]["label"] in ("cats", "dogs") and not rows["good.jpg"]["error"]
    for name in ("truncated.jpg", "header_only.jpg"):
        assert rows[name]["label"] == "" and rows[name]["probability"] == ""
        assert "truncated" in rows[name]["error"]

    data_root = tmp_path / "data"
    for cls in ("cats", "dogs"):
        shutil.copytree(dogscats_demo / "train" / cls, data_root / cls)
    shutil.copy(tmp_path / "truncated.jpg", data_root / "dogs")
    shutil.copy(tmp_path / "header_only.jpg", data_root / "cats")
    data = ImageData.from_folder(data_root)
    assert {p.name for p in data.skipped} == {"truncated.jpg", "header_only.jpg"}
    assert not {p.name for p in data.train.files + data.valid.files} & {
        "truncated.jpg", "header_only.jpg"}


def test_a_damaged_model_file_is_refused_in_one_line(run_dir, dogscats_demo, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    weights = damaged / "model.safetensors"
    with open(weights, "r+b") as f:  # 4,000 bytes in the middle: tensors, not the header
        f.seek(weights.stat().st_size // 2)
        f.write(os.urandom(4000))
    with pytest.raises(ModelFileError, match="does not match the checksum"):
        Learner.load(damaged, device="cpu")
    for argv in (["predict", str(damaged), str(_photo(dogscats_demo))],
                 ["export", str(damaged), "--onnx"]):
        assert main(argv) == 1, argv
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and "does not match the checksum" in err and not out
    assert not (damaged / "model.onnx").exists()
    # its checkpoints still work, as the message says
    assert main(["predict", str(damaged / "checkpoints" / "last"),
                 str(_photo(dogscats_demo))]) == 0


# ------------------------------------------------------------------ nothing lost, no races


def test_after_kill_9_the_checkpoints_are_kept_and_pointed_at(
        run_dir, dogscats_demo, tmp_path, capsys):
    killed = tmp_path / "killed"  # what kill -9 after two epochs leaves
    (killed / "checkpoints").mkdir(parents=True)
    for name in ("last", "best"):
        for suffix in (".json", ".safetensors"):
            shutil.copy(run_dir / "checkpoints" / f"{name}{suffix}", killed / "checkpoints")
    shutil.copy(run_dir / "args.json", killed)
    before = {p.name: p.read_bytes() for p in (killed / "checkpoints").iterdir()}
    assert main(["train", str(dogscats_demo), *ARCH, "--out", str(killed)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not finish" in err and "checkpoints/last" in err
    assert {p.name: p.read_bytes() for p in (killed / "checkpoints").iterdir()} == before

    assert main(["predict", str(killed), str(_photo(dogscats_demo))]) == 1
    err = capsys.readouterr().err
    assert f"threeline predict {killed / 'checkpoints' / 'last'}" in err
    assert main(["predict", str(killed / "checkpoints" / "last"),
                 str(_photo(dogscats_demo))]) == 0


def test_a_second_training_into_a_busy_run_folder_is_refused(dogscats_demo, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen(  # another process holding the run folder's lock
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
         "time.sleep(120)", str(out / ".threeline.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", str(dogscats_demo), *ARCH, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "another threeline train is writing there now" in err and "--out" in err
        assert sorted(p.name for p in out.iterdir()) == [".threeline-run", ".threeline.lock"]
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_three_times_saves_exactly_the_last_checkpoint(dogscats_demo, tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "threeline.cli", "train", str(dogscats_demo), *ARCH,
         "--epochs", "100000", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 500
        while not (out / "checkpoints" / "last.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(1.0)  # a few more epochs
        for _ in range(3):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    # 130, or killed by the SIGINT itself when a press lands after Python has put back the
    # default handler at the very end of its shutdown (a shell shows 130 for both)
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert "could not be read back" not in stdout + stderr and "Traceback" not in stderr
    assert "went back to the weights after epoch" in stdout
    saved, last = load_file(str(out / "model.safetensors")), load_file(
        str(out / "checkpoints" / "last.safetensors"))
    assert saved.keys() == last.keys()
    assert [k for k in saved if not torch.equal(saved[k], last[k])] == []
    epochs = json.loads((out / "model.json").read_text())["history"]
    assert epochs and json.loads((out / "args.json").read_text())["interrupted"] is True


def test_a_closed_pipe_is_a_normal_end(run_dir, dogscats_demo):
    proc = subprocess.Popen(
        [sys.executable, "-m", "threeline.cli", "predict", str(run_dir),
         str(dogscats_demo / "valid")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first row: `| head -0`
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and b"Broken pipe" not in err and b"Error" not in err, err


# ------------------------------------------------------------------ clear errors


def test_usage_errors_name_the_option_before_anything_loads(dogscats_demo, capsys):
    cases = [(["--device", "tpu"], "--device: expected cpu, cuda, cuda:N or mps"),
             (["--lr", "1e38"], "--lr: expected a number in (0, 10]"),
             (["--batch-size", "1"], "--batch-size: expected a whole number >= 2"),
             (["--valid-pct", "1"], "--valid-pct: expected a number in (0, 1)"),
             (["--size", "8"], "--size: expected a whole number >= 32")]
    for extra, words in cases:
        assert main(["train", str(dogscats_demo), *extra]) == 2, extra
        assert words in capsys.readouterr().err, extra


def test_environment_errors_name_the_option_or_variable(dogscats_demo, tmp_path, capsys,
                                                         monkeypatch):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    assert main(["train", str(dogscats_demo), *ARCH, "--out", str(a_file)]) == 1
    assert "--out" in capsys.readouterr().err
    if torch.cuda.device_count() < 8:
        assert main(["train", str(dogscats_demo), *ARCH, "--device", "cuda:7"]) == 1
        assert "--device cuda:7: this machine has" in capsys.readouterr().err
    monkeypatch.setenv("THREELINE_CACHE", str(a_file / "cache"))
    assert main(["train", str(dogscats_demo), *ARCH, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "cannot be written" in err and "THREELINE_CACHE" in err
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    assert main(["train", str(dogscats_demo), "--arch", "resnet18", "--out",
                 str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "efficientnet_lite0" in err and "--weights" in err and time.monotonic() - start < 30
    # (chmod 000 cannot be tested here: the tests run as root, who reads any file.)


def test_huge_images_in_predict_name_the_option_predict_has(run_dir, dogscats_demo, capsys):
    assert main(["predict", str(run_dir), str(_photo(dogscats_demo)), "--csv",
                 "--max-pixels", "1000"]) == 1
    err = capsys.readouterr().err
    assert "too large" in err and "--max-pixels" in err and "max_pixels" not in err


# ------------------------------------------------------------------ feel


def test_help_imports_no_torch():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "threeline.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "examples:" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert not {"torch", "timm", "numpy"} & imported


def test_cli_defaults_match_the_library():
    from threeline import cli
    from threeline.vision.images import MAX_PIXELS
    from threeline.vision.scan import RUN_MARKER
    from threeline.vision.weights import DEFAULT_ARCH, available_models

    assert (cli.MAX_PIXELS, cli.DEFAULT_ARCH, cli.RUN_MARKER) == (MAX_PIXELS, DEFAULT_ARCH,
                                                                RUN_MARKER)
    assert list(cli.OFFLINE_ARCHS) == available_models()
    args = cli.build_parser().parse_args(["train", "photos"])
    assert args.seed == 42 == ImageData.from_folder.__defaults__[2]


def test_run_files_read_as_numbers_with_the_usual_permissions(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(0 < float(r["time"]) < 600 for r in rows)
    mask = os.umask(0)
    os.umask(mask)
    for path in [run_dir / "model.safetensors", run_dir / "checkpoints" / "last.safetensors",
                 run_dir / "args.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    # (lr-find --out without .png, and export --onnx to a folder: tests/test_cli.py)


def test_the_summary_shows_the_size_used_and_aligned_totals(dogscats_demo, capsys):
    data = ImageData.from_folder(dogscats_demo, verbose=False)
    text = data.summary(224)
    assert "size 224" in text and "None" not in text
    lines = text.splitlines()
    total = next(line for line in lines if line.strip().startswith("total"))
    cats = next(line for line in lines if line.strip().startswith("cats"))
    assert len(total) == len(cats) and total.rindex("40") == cats.rindex("20")


def test_the_decode_once_cache_spills_to_a_file_beyond_its_budget(dogscats_demo):
    from threeline.vision import batches
    from threeline.vision.presize import SpilledImages

    data = ImageData.from_folder(dogscats_demo, size=64, batch_size=16, verbose=False)
    learn = Learner.pretrained("efficientnet_lite0", data, device="cpu", progress=False)
    memory = batches.presized_cache(learn, data.valid.files, data.valid.labels)
    learn._presized.clear()
    learn.presize_max_bytes = 0  # every image beyond the budget: all to the file
    spilled = batches.presized_cache(learn, data.valid.files, data.valid.labels)
    assert isinstance(spilled.images, SpilledImages) and isinstance(memory.images, list)
    assert len(spilled) == len(memory) == 40
    assert all(torch.equal(a, b) for a, b in zip(memory.batch(range(40)), spilled.batch(range(40)),
                                                 strict=True))
    xb, yb = next(batches.train_batches(learn))  # training batches read back from the file
    assert xb.shape == (16, 3, 64, 64) and yb.shape == (16,)


def test_the_splits_share_one_memory_budget_and_hold_no_descriptors(dogscats_demo):
    from threeline.vision import batches
    from threeline.vision.presize import SpilledImages

    data = ImageData.from_folder(dogscats_demo, size=64, batch_size=16, num_workers=1,
                                 verbose=False)
    learn = Learner.pretrained("efficientnet_lite0", data, device="cpu", progress=False)
    short = learn.preprocess.resize_to
    learn.presize_max_bytes = len(data.train) * 3 * short * int(1.5 * short)  # train's bound
    descriptors = len(os.listdir("/proc/self/fd"))
    train = batches.presized_cache(learn, data.train.files, data.train.labels)
    valid = batches.presized_cache(learn, data.valid.files, data.valid.labels)
    assert isinstance(train.images, list)  # within the budget: in memory
    assert isinstance(valid.images, SpilledImages)  # what train left is too little: a file
    # the decoding worker's images arrive in shared memory, a descriptor each; the cache keeps
    # copies in this process's memory, so no descriptor stays open per image
    assert len(os.listdir("/proc/self/fd")) - descriptors < 5
    assert len(train) == len(data.train) and train.batch([0])[0].dtype == torch.uint8


def test_the_suggestion_is_a_decade_above_the_steepest_fall(dogscats_demo):
    from threeline import lr_finder

    data = ImageData.from_folder(dogscats_demo, size=64, verbose=False)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False)
    result = learn.lr_find(num_it=50)
    low = result.losses.index(min(result.losses))
    steep = lr_finder.steepest(result.lrs, result.losses)
    assert result.suggestion == result.lrs[result.suggestion_index]
    assert result.suggestion_index <= low and result.suggestion <= result.lrs[low] / 10 * 1.2
    expected = min(10 * result.lrs[steep], result.lrs[low] / 10)
    step = result.lrs[1] / result.lrs[0]  # the rates tried are this factor apart
    assert expected / step ** 0.5 <= result.suggestion <= expected * step ** 0.5
    assert "steepest x 10" in result.rule
