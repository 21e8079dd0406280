"""Where the first multi-label ``fine_tune`` of a fresh process spends its time (one GPU).

    python3 benchmarks/first_pass.py --data DATA/landcover --mode plain
    python3 benchmarks/first_pass.py --data DATA/landcover --mode dynamo_first   # import it first
    python3 benchmarks/first_pass.py --data DATA/landcover --mode thread         # ... in a thread
    python3 benchmarks/first_pass.py --data DATA/landcover --mode cprofile --out DIR

Run each mode in its own process. Prints each phase's seconds (the GPU synchronized at each
mark), whether ``torch._dynamo`` was loaded by then, the epoch times, and the clock the
multi-label benchmark uses (``from_csv`` to the end of ``fine_tune``).
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

MODES = ("plain", "dynamo_first", "thread", "cprofile")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder with labels.csv, images/")
    p.add_argument("--mode", choices=MODES, default="plain")
    p.add_argument("--arch", default="efficientnet_lite2")
    p.add_argument("--out", type=Path, default=Path("."), help="cprofile: where tables go")
    args = p.parse_args()
    marks: list[tuple[str, float, bool]] = []

    import torch

    def mark(name: str) -> None:
        torch.cuda.synchronize()
        marks.append((name, time.perf_counter(), "torch._dynamo" in sys.modules))

    torch.zeros(1, device="cuda")
    mark("import torch + CUDA")
    if args.mode == "dynamo_first":
        importlib.import_module("torch._dynamo")
        mark("import torch._dynamo")
    from threeline import ImageData, Learner
    mark("import threeline")
    if args.mode == "thread":
        threading.Thread(target=importlib.import_module, args=("torch._dynamo",),
                         daemon=True).start()
    profile = cProfile.Profile() if args.mode == "cprofile" else None
    if profile:
        profile.enable()
    data = ImageData.from_csv(args.data, "labels.csv", folder="images", label_delim=" ",
                              seed=42, batch_size=64)
    mark("from_csv")
    learn = Learner.pretrained(args.arch, data, device="cuda", seed=0,
                               cache_dir=tempfile.mkdtemp(), progress=False)
    learn.checkpoint_dir = False
    learn.augment = "top_down"
    mark("Learner.pretrained")
    learn.fine_tune(3)
    mark("fine_tune(3)")
    if profile:
        profile.disable()
        for order in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats(order).print_stats(45)
            (args.out / f"first_pass_cprofile_{order}.txt").write_text(text.getvalue())
    print(f"== mode {args.mode}")
    previous = START
    for name, at, dynamo in marks:
        print(f"{name:24s} {at - previous:7.2f} s  (torch._dynamo loaded: {dynamo})")
        previous = at
    epochs = [h["time"] for h in learn.history]
    print("epochs: " + ", ".join(f"{t:.2f}" for t in epochs))
    clock = marks[-1][1] - next(at for name, at, _ in marks if name == "import threeline")
    print(f"clock (from_csv to the end of fine_tune): {clock:.2f} s; epochs {sum(epochs):.2f} s")


if __name__ == "__main__":
    main()
