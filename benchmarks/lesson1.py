"""Lesson 1 benchmark: the three lines on Dogs vs Cats, timed, with the backbone's bare speed.

    python benchmarks/lesson1.py --data ../shared/data/dogscats     # full: 10k train, 2k valid
    python benchmarks/lesson1.py --data ../shared/data/dogscats --max-train 1000 --max-valid 400

Prints (and with --out writes) a markdown table: images, precompute seconds and images/s, the
backbone's bare forward images/s on already-decoded batches (same batch size, dtype and memory
format; measured just before and just after the precompute), their ratio, fit(0.01, 3) seconds,
valid accuracy, with ``--rounds N`` the precompute and its ratio N times (each with an empty
cache; the median and every round are shown, since a shared machine's speed drifts), and a
cold start (a fresh process: imports, model, precompute with an empty cache, fit), timed from
its launch to the trained model and to its exit.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from threeline import ImageData, Learner
from threeline.vision import features
from threeline.vision.batches import inference_batch_size, model_input
from threeline.vision.scan import Split


def subset(split: Split, n: int | None, seed: int = 0) -> Split:
    """A seeded, class-balanced subset of at most ``n`` files."""
    if n is None or n >= len(split):
        return split
    labels = np.asarray(split.labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: n // len(classes)]
                           for c in classes])
    keep.sort()
    return Split([split.files[i] for i in keep], [split.labels[i] for i in keep])


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads, " \
           f"torch {torch.__version__}"


class BareForward:
    """Images/s of the body alone (no decoding, no disk) at the batch size, dtype and memory
    format that precompute uses, with BatchNorm folded as there. The batches are distinct
    photos decoded once beforehand, cycled, so that the input is no warmer in the caches than
    precompute's is."""

    def __init__(self, learn: Learner, distinct: int = 4):
        self.batch_size = inference_batch_size(learn)
        files = (learn.data.train.files * distinct * self.batch_size)[:distinct * self.batch_size]
        images = torch.stack([learn.preprocess(f) for f in files]).to(learn.device)  # uint8
        self.batches = images.split(self.batch_size)

    def rate(self, learn: Learner, batches: int) -> float:
        """Median images/s over ``batches`` batches, after two warm-up batches."""
        sync = torch.cuda.synchronize if learn.device.type == "cuda" else (lambda: None)
        body = features.inference_body(learn)
        rates = []
        with torch.inference_mode():
            for i in range(batches + 2):
                images = self.batches[i % len(self.batches)]
                start = time.perf_counter()
                x = model_input(learn, images)
                with learn.autocast():
                    body(x)
                sync()
                if i >= 2:  # two warm-up batches
                    rates.append(self.batch_size / (time.perf_counter() - start))
        return statistics.median(rates)


COLD = """
import sys, time
t = [time.perf_counter()]
from threeline import ImageData, Learner
from threeline.vision import features
t.append(time.perf_counter())
data = ImageData.from_folder(sys.argv[1], size=None if sys.argv[3] == 'None' else int(sys.argv[3]))
t.append(time.perf_counter())
learn = Learner.pretrained(sys.argv[2], data, precompute=True, cache_dir=sys.argv[4],
                           progress=False)
t.append(time.perf_counter())
features.ensure(learn, ["train", "valid"])
t.append(time.perf_counter())
learn.fit(0.01, 3)
t.append(time.perf_counter())
trained_at = time.time()
phases = " ".join(f"{b - a:.2f}" for a, b in zip(t, t[1:]))
print('TRAINED', phases, t[-1] - t[0], trained_at, learn.validate()['accuracy'])
"""
PHASES = ("import", "folder scan", "model", "precompute", "fit")


def cold_start(data_dir: str, arch: str, size: int | None) -> tuple[float, float, float, str]:
    """A fresh process with an empty activation cache: seconds from launch to trained model
    (read on the wall clock, as the process reports it), seconds from launch to its exit
    (which adds one validation pass and tearing the process down), its accuracy, and the
    seconds of each phase inside it."""
    with tempfile.TemporaryDirectory() as cache:
        launched, start = time.time(), time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD, data_dir, arch, str(size), cache],
                             capture_output=True, text=True, check=True)
        to_exit = time.perf_counter() - start
    fields = out.stdout.strip().splitlines()[-1].split()
    phases = ", ".join(f"{name} {s}" for name, s in zip(PHASES, fields[1:6], strict=True))
    return float(fields[7]) - launched, to_exit, float(fields[-1]), phases


def precompute_round(data: ImageData, args: argparse.Namespace, bare: BareForward | None
                     ) -> tuple[Learner, float, float, float, BareForward]:
    """A new learner with an empty cache: its precompute seconds and the bare forward's
    images/s just before and just after it."""
    learn = Learner.pretrained(args.arch, data, precompute=True,
                               cache_dir=tempfile.mkdtemp(prefix="lesson1-"))
    if args.channels_last:  # compare against the layout the library picks for the device
        learn.memory_format = torch.channels_last
        learn.body.to(memory_format=torch.channels_last)
    bare = bare or BareForward(learn)
    sync = torch.cuda.synchronize if learn.device.type == "cuda" else (lambda: None)
    before = bare.rate(learn, args.bare_batches)
    start = time.perf_counter()
    features.ensure(learn, ["train", "valid"])
    sync()
    pre = time.perf_counter() - start
    return learn, pre, before, bare.rate(learn, args.bare_batches), bare


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    data = ImageData.from_folder(args.data, size=args.size, batch_size=args.batch_size)
    data.train, data.valid = subset(data.train, args.max_train), subset(data.valid, args.max_valid)
    n = len(data.train) + len(data.valid)
    rounds, bare = [], None
    for _ in range(args.rounds):
        learn, pre, before, after, bare = precompute_round(data, args, bare)
        rounds.append((pre, before, after, n / pre / ((before + after) / 2)))
    sync = torch.cuda.synchronize if learn.device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    learn.fit(0.01, 3)
    sync()
    fit = time.perf_counter() - start
    accuracy = learn.validate()["accuracy"]
    rows = [
        ("machine", machine()),
        ("architecture, input size", f"{args.arch}, {learn.preprocess.size} px"),
        ("memory layout", str(learn.memory_format).replace("torch.", "")),
        ("images (train + valid)", f"{len(data.train)} + {len(data.valid)}"),
        ("precompute seconds", " / ".join(f"{r[0]:.2f}" for r in rounds)),
        ("precompute images/s", " / ".join(f"{n / r[0]:.1f}" for r in rounds)),
        (f"bare backbone forward images/s (batch {bare.batch_size}), before / after precompute",
         ", ".join(f"{r[1]:.1f} / {r[2]:.1f}" for r in rounds)),
        ("precompute / bare forward (mean of before and after)",
         " / ".join(f"{r[3]:.1%}" for r in rounds)),
    ]
    if len(rounds) > 1:
        rows.append((f"median of the {len(rounds)} rounds: precompute / bare forward",
                     f"{statistics.median(r[3] for r in rounds):.1%}"))
    rows += [("fit(0.01, 3) seconds on the cache", f"{fit:.3f}"),
             ("valid accuracy", f"{accuracy:.2%}")]
    if args.cold_start:
        if args.max_train or args.max_valid:
            print("note: the cold start uses the whole folder, not the subset", file=sys.stderr)
        trained, to_exit, cold_accuracy, phases = cold_start(str(args.data), args.arch, args.size)
        rows += [("cold start: launch to trained model, seconds", f"{trained:.2f}"),
                 ("cold start: launch to process exit, seconds", f"{to_exit:.2f}"),
                 ("cold start phases, seconds", phases),
                 ("cold start valid accuracy", f"{cold_accuracy:.2%}")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/dogscats")
    parser.add_argument("--arch", default="efficientnet_lite2")
    parser.add_argument("--size", type=int, default=None, help="default: the weights' size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-valid", type=int, default=None)
    parser.add_argument("--bare-batches", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1,
                        help="precompute (and its ratio to the bare forward) this many times")
    parser.add_argument("--cold-start", action="store_true")
    parser.add_argument("--channels-last", action="store_true",
                        help="force channels_last instead of the layout chosen for the device")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    rows = run(args)
    table = "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(f"\n{' '.join(sys.argv)}\n\n{table}\n")


if __name__ == "__main__":
    main()
