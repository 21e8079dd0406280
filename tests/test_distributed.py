"""Several processes through torchrun, on this machine's CPU with gloo: real photos, real
training, real processes (tests/distributed_job.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_dataset
from threeline import Learner
from threeline.distributed import World, from_environment, shard, share

JOB = Path(__file__).with_name("distributed_job.py")


def run_job(mode: str, data: Path, out: Path, processes: int | None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """The job in ``processes`` torchrun processes (None: plain python, no torchrun)."""
    out.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": "1", "JOB_TMP": str(out)}
    command = [sys.executable, str(JOB), mode, str(data), str(out)]
    if processes is not None:
        command[1:2] = ["-m", "torch.distributed.run", "--standalone",
                        f"--nproc-per-node={processes}", str(JOB)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


@pytest.fixture(scope="module")
def ants_bees() -> Path:
    return shared_dataset("hymenoptera")


def test_share_and_shard_give_each_process_its_own_batches():
    two = [World(0, 2), World(1, 2)]
    assert [list(share(range(5), w)) for w in two] == [[0, 2], [1, 3]]
    assert [list(shard(iter("abcde"), w, count=5)) for w in two] == [["a", "c"], ["b", "d"]]
    assert [list(shard(iter("abcde"), w)) for w in two] == [["a", "c", "e"], ["b", "d"]]
    assert from_environment({"WORLD_SIZE": "2", "RANK": "1"}) == World(1, 2, 0)
    with pytest.raises(ValueError, match="RANK must be in"):
        from_environment({"WORLD_SIZE": "2", "RANK": "2"})


def test_two_processes_take_the_same_step_as_one(ants_bees, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for out, n in ((one, None), (two, 2)):
        done = run_job("step", ants_bees, out, n)
        assert done.returncode == 0, done.stderr[-3000:]
    [alone], pair = results(one), results(two)
    assert [r["world"] for r in pair] == [2, 2]
    for name in ("weight", "bias"):
        expected = alone[name]
        for r in pair:  # both processes hold the weights of one step over the 64 photos
            assert max(abs(a - b) for a, b in zip(r[name], expected, strict=True)) < 1e-5
    moved = max(abs(a) for a in alone["weight"])
    assert moved > 0  # a step was taken


def test_two_processes_reach_the_accuracy_of_one(ants_bees, tmp_path):
    one, two, torchrun_one = tmp_path / "one", tmp_path / "two", tmp_path / "torchrun1"
    for out, n in ((one, None), (two, 2), (torchrun_one, 1)):
        done = run_job("fit", ants_bees, out, n)
        assert done.returncode == 0, done.stderr[-3000:]
    [alone], pair, [launched] = results(one), results(two), results(torchrun_one)
    assert launched["rows"] == [{**r, "time": launched["rows"][i]["time"]}
                                for i, r in enumerate(alone["rows"])]  # torchrun, 1 = plain
    accuracy = alone["rows"][-1]["accuracy"]
    assert accuracy > 0.85
    for r in pair:  # the table covers the whole validation set: same accuracy within noise
        assert abs(r["rows"][-1]["accuracy"] - accuracy) <= 0.03
    losses = [[row["valid_loss"] for row in r["rows"]] for r in pair]
    assert losses[0] == losses[1]  # one table: every process sees the same figures
    # lr_find: one curve (the processes' mean loss), so one suggestion, and a useful one
    assert pair[0]["suggestion"] == pair[1]["suggestion"]
    assert 1e-4 < pair[0]["suggestion"] < 1


def test_a_failing_process_ends_all_with_the_checkpoint_intact(ants_bees, tmp_path):
    done = run_job("crash", ants_bees, tmp_path, 2, timeout=300)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr + done.stdout
    learn = Learner.load(tmp_path / "checkpoints" / "last", device="cpu")
    assert [row["epoch"] for row in learn.history] == [0]  # the finished epoch, readable


def test_threeline_train_gpus_runs_processes_and_writes_one_run(ants_bees, tmp_path):
    out = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "threeline.cli", "train", str(ants_bees),
                           "--arch", "efficientnet_lite0", "--device", "cpu", "--epochs", "2",
                           "--batch-size", "32", "--gpus", "2", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--nproc-per-node=2" in done.stdout
    assert done.stdout.count("epoch  train_loss") == 1  # one table, from the first process
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs
    settings = json.loads((out / "args.json").read_text())
    assert settings["epochs_done"] == 2
    learn = Learner.load(out, device="cpu")
    assert learn.history[-1]["accuracy"] > 0.85


@pytest.mark.parametrize("mode, dataset, metric, tolerance", [
    ("tabular", "adult", "accuracy", 0.015),
    ("collab", "ml-100k", "rmse", 0.03),
    ("chars", "nietzsche", "valid_loss", 0.15),
])
def test_every_application_trains_in_two_processes(mode, dataset, metric, tolerance, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for out, n in ((one, None), (two, 2)):
        done = run_job(mode, shared_dataset(dataset), out, n)
        assert done.returncode == 0, done.stderr[-3000:]
    [alone], pair = results(one), results(two)
    expected = alone["rows"][-1][metric]
    finals = [r["rows"][-1][metric] for r in pair]
    assert finals[0] == finals[1]  # one table for both processes
    assert abs(finals[0] - expected) <= tolerance * (1 if metric != "valid_loss" else expected), \
        (mode, finals, expected)
