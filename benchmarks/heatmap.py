"""Seconds for Grad-CAM heat maps of a batch of chips: ``learn.heatmap(files)``.

    python3 benchmarks/heatmap.py --device cuda --data ../shared/data/landcover --n 64

Trains the three lines on the landcover chips (multi-label, cached activations), then times
``learn.heatmap`` on ``--n`` validation chips, each image's predicted label explained, in
``--rounds`` rounds: the first (kernel selection, the body's first backward) and the median of
the rest are reported apart. Time: files to maps (decode, forward, backward, maps on the host),
CUDA synchronised.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import publish  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "landcover")
    p.add_argument("--device", default=None)
    p.add_argument("--arch", default="efficientnet_lite2")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--machine", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be at least 2: the first round is reported apart from the rest")

    import torch

    from threeline import ImageData, Learner

    data = ImageData.from_csv(args.data, "labels.csv", folder="images", label_delim=" ")
    learn = Learner.pretrained(args.arch, data, precompute=True, device=args.device)
    learn.checkpoint_dir = False
    learn.fit(0.01, 3)
    files = [str(f) for f in data.valid.files[:args.n]]
    times = []
    for _ in range(args.rounds):
        if learn.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        maps = learn.heatmap(files)
        if learn.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    device = torch.cuda.get_device_name() if learn.device.type == "cuda" else "cpu"
    machine = args.machine or ("gpu" if learn.device.type == "cuda" else "cpu")
    lines = [
        f"# Heat maps of {len(files)} landcover chips ({date.today()}, {device})", "",
        f"`{' '.join(['python3', 'benchmarks/heatmap.py'] + (argv or sys.argv[1:]))}`", "",
        f"{args.arch}, maps {tuple(maps.shape)}, torch {torch.__version__}.",
        "", "| round | seconds |", "| --- | --- |",
        *[f"| {i + 1} | {t:.3f} |" for i, t in enumerate(times)], "",
        f"First {times[0]:.3f} s; median of the rest {statistics.median(times[1:]):.3f} s "
        f"({len(files) / statistics.median(times[1:]):.0f} images/s).",
    ]
    publish(lines, args.out, f"heatmap-{machine}-{date.today()}.md")


if __name__ == "__main__":
    main()
