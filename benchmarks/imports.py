"""Start-up cost of the three lines: fresh processes timed phase by phase.

    python benchmarks/imports.py --runs 5 --out benchmarks/results
    python benchmarks/imports.py --baseline-src /tmp/old/src      # against another checkout

Each run is a new Python process (empty activation cache) that times: ``import torch``;
``from threeline import ImageData, Learner``; ``ImageData.from_folder`` (the folder scan);
``Learner.pretrained(..., precompute=True)`` (the network and its weights); the precompute;
``fit(0.01, 3)`` (which creates the first optimizer, and with it imports ``torch._dynamo``:
torch's optimizers import it on first use); and which heavy modules ended up imported.
Medians over the runs, each source tree run in turn (alternating, so drift hits both).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import publish

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["import torch", "import threeline", "folder scan", "model", "precompute", "fit"]
CHILD = r"""
import json, sys, time
t = [time.perf_counter()]
import torch
if sys.argv[4] == "cuda":
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t.append(time.perf_counter())
from threeline import ImageData, Learner
t.append(time.perf_counter())
data = ImageData.from_folder(sys.argv[1], size=int(sys.argv[3]) if sys.argv[3] != "0" else None)
t.append(time.perf_counter())
learn = Learner.pretrained(sys.argv[2], data, precompute=True, progress=False,
                           cache_dir=sys.argv[5])
t.append(time.perf_counter())
from threeline.vision import features
features.ensure(learn, ["train", "valid"])
t.append(time.perf_counter())
learn.fit(0.01, 3)
if sys.argv[4] == "cuda":
    torch.cuda.synchronize()
t.append(time.perf_counter())
heavy = [m for m in ("timm", "torchvision", "torch._dynamo") if m in sys.modules]
print(json.dumps({"phases": [b - a for a, b in zip(t, t[1:])], "heavy": heavy,
                  "accuracy": learn.validate()["accuracy"]}))
"""


def run_once(src: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.data), args.arch,
                              str(args.size or 0), args.device, cache],
                             capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: dict[str, list[dict]]) -> list[str]:
    names = list(results)
    lines = ["| phase, seconds (median) | " + " | ".join(names) + " |",
             "| --- |" + " --- |" * len(names)]
    for i, phase in enumerate(PHASES):
        cells = [f"{statistics.median(r['phases'][i] for r in results[n]):.2f}" for n in names]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    for label, first in (("launch to trained model", 0), ("the same minus `import torch`", 1)):
        cells = [f"{statistics.median(sum(r['phases'][first:]) for r in results[n]):.2f}"
                 for n in names]
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    lines.append("| heavy modules imported | " + " | ".join(
        ", ".join(results[n][0]["heavy"]) or "none" for n in names) + " |")
    lines.append("| valid accuracy | " + " | ".join(
        f"{results[n][0]['accuracy']:.2%}" for n in names) + " |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path,
                   default=ROOT / "src" / "threeline" / "vision" / "demo_data" / "dogscats")
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=128, help="0: the backbone's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--baseline-src", type=Path, default=None)
    p.add_argument("--machine", default=f"{platform.machine()}-{os.cpu_count()}cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    trees = {"this checkout": ROOT / "src"}
    if args.baseline_src:
        trees = {"baseline": args.baseline_src.resolve(), **trees}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, src in trees.items():
            results[name].append(run_once(src, args))
    command = "python benchmarks/imports.py " + " ".join(argv or sys.argv[1:])
    lines = [f"# Start-up of the three lines ({args.machine}, {datetime.date.today()})", "",
             f"`{command}`: {args.runs} fresh processes per source tree, {args.arch}, "
             f"size {args.size or 'default'}, device {args.device}, data {args.data.name}.", "",
             *table(results)]
    publish(lines, args.out, f"imports-{args.machine}-{datetime.date.today()}.md")


if __name__ == "__main__":
    main()
