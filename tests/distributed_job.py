"""A training job that tests/test_distributed.py starts with torchrun (1 or 2 processes).

    torchrun --nproc-per-node=2 tests/distributed_job.py MODE DATA OUT

MODE: ``step`` (one optimizer step of a linear model on the photos' cached activations, global
batch 64), ``fit`` (the three lines + lr_find), ``crash`` (rank 1 fails in the second epoch);
``tabular``, ``collab``, ``chars`` (three epochs of the other applications).
Each process writes ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from threeline import ImageData, Learner
from threeline.batches import TensorData
from threeline.callbacks import Callback

DEVICE = os.environ.get("JOB_DEVICE", "cpu")


class FailOnRankOne(Callback):
    def on_epoch_begin(self, learn) -> None:
        if learn.world.rank == 1 and learn.epoch == 1:
            raise RuntimeError("rank 1 fails on purpose")


def other_application(mode: str, folder: Path) -> list[dict]:
    """Three epochs of a table, ratings or characters model: its table's rows."""
    if mode == "tabular":
        from threeline.tabular import TabularData

        learn = Learner.tabular(TabularData.from_csv(folder / "adult.csv", y="target"),
                                device=DEVICE, progress=False)
    elif mode == "collab":
        from threeline.collab.movielens import movielens_split

        learn = Learner.collab(movielens_split(folder, 1, batch_size=2048), n_factors=32,
                               device=DEVICE, progress=False)
    else:
        from threeline.text import TextData

        part = Path(os.environ["JOB_TMP"]) / "part.txt"
        part.write_text((folder / "nietzsche.txt").read_text("utf-8")[:46_000], "utf-8")
        text = TextData.from_file(part, level="char", valid_pct=0.13, lower=True,
                                  verbose=False)
        learn = Learner.language_model(text, arch="lstm", n_layers=1, hidden=128,
                                       batch_size=16, bptt=64, device=DEVICE, progress=False)
    learn.checkpoint_dir = False
    return learn.fit(1e-2 if mode != "collab" else 2e-2, 3)


def main(mode: str, folder: str, out: str) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    if mode in ("tabular", "collab", "chars"):
        rows = other_application(mode, Path(folder))
        rank = int(os.environ.get("RANK", "0"))
        (out_dir / f"rank{rank}.json").write_text(json.dumps({"rows": rows}))
        return
    data = ImageData.from_folder(folder, batch_size=32)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device=DEVICE,
                               progress=False)
    world, result = learn.world, {}
    if mode == "step":  # one step, global batch 64: 64 on one process, 32 on each of two
        x, y = learn.features("train")  # (N, D), (N,)
        xv, yv = learn.features("valid")
        tensors = TensorData((x[:64],), y[:64], (xv,), yv, batch_size=64 // world.size)
        torch.manual_seed(0)
        linear = Learner(nn.Linear(x.shape[1], 2), tensors, device=DEVICE, progress=False)
        linear.checkpoint_dir = False
        linear.fit(0.01, 1)
        result = {"weight": linear.model.weight.flatten().tolist(),
                  "bias": linear.model.bias.tolist()}
    elif mode == "fit":
        learn.checkpoint_dir = False
        suggestion = learn.lr_find(num_it=40).suggestion
        result = {"suggestion": suggestion, "rows": learn.fit(0.01, 3)}
    elif mode == "crash":
        learn.checkpoint_dir = out_dir / "checkpoints"
        learn.fit(0.01, 3, callbacks=[FailOnRankOne()])
    result["world"] = world.size
    (out_dir / f"rank{world.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
