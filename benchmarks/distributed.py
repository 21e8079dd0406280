"""Several GPUs: fine-tuning speed and accuracy on 1, 2, ..., N processes of one host.

    python3 benchmarks/distributed.py --data ../shared/data/dogscats --gpus 1,2,4,8 --out DIR
    python3 benchmarks/distributed.py --data ../shared/data/hymenoptera --device cpu --gpus 1,2 \\
        --arch efficientnet_lite0 --epochs 1 --freeze-epochs 1       # gloo, to try it on a CPU

Each count runs the three lines' ``fine_tune`` under ``torchrun --nproc-per-node=N`` (the same
code as one process; the batch size is per process). Reported: the whole-network epochs' images/s
(training images x epochs / the epochs' seconds, validation included, as the table shows them),
its ratio to one process, the final validation accuracy, and the whole run's seconds (the
decode-once cache and the head's precompute included). Writes ``distributed-<machine>-<date>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="train/ and valid/ class folders")
    p.add_argument("--gpus", default="1,2", help="process counts, comma-separated")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--arch", default="efficientnet_lite2")
    p.add_argument("--epochs", type=int, default=2, help="whole-network epochs")
    p.add_argument("--freeze-epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--machine", default=None)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(args: argparse.Namespace) -> None:
    """One process of a torchrun run: fine_tune, then rank 0 writes what it measured."""
    import torch

    from threeline import ImageData, Learner

    start = time.perf_counter()
    data = ImageData.from_folder(args.data, batch_size=args.batch_size, verbose=False)
    learn = Learner.pretrained(args.arch, data, device=args.device, seed=args.seed,
                               progress=False)
    learn.checkpoint_dir = False
    rows = learn.fine_tune(args.epochs, freeze_epochs=args.freeze_epochs)
    if args.device == "cuda":
        torch.cuda.synchronize()
    if learn.world.main:
        whole = rows[args.freeze_epochs:]
        seconds = sum(r["time"] for r in whole)
        args.child.write_text(json.dumps({
            "processes": learn.world.size, "train": len(data.train), "valid": len(data.valid),
            "accuracy": rows[-1]["accuracy"], "epoch_seconds": [r["time"] for r in whole],
            "images_per_s": len(data.train) * len(whole) / seconds,
            "run_seconds": time.perf_counter() - start}))


def run(args: argparse.Namespace, n: int, result: Path) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={n}", __file__, "--child", str(result),
               "--data", str(args.data), "--device", args.device, "--arch", args.arch,
               "--epochs", str(args.epochs), "--freeze-epochs", str(args.freeze_epochs),
               "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    env = os.environ | ({"OMP_NUM_THREADS": "1"} if args.device == "cpu" else {})
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{n} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def table(args: argparse.Namespace, results: list[dict]) -> str:
    import torch

    machine = args.machine or (torch.cuda.get_device_name(0).replace(" ", "-").lower()
                               if args.device == "cuda" else "cpu")
    base = results[0]["images_per_s"]
    lines = [f"# Several processes: `fine_tune` on {args.data.name}, {machine}", "",
             f"{date.today()}, torch {torch.__version__}, {args.arch}, batch {args.batch_size} "
             f"per process, {args.freeze_epochs} head epochs + {args.epochs} whole-network "
             f"epochs, seed {args.seed}. Command: `python3 benchmarks/distributed.py "
             f"{' '.join(sys.argv[1:])}`", "",
             "| processes | whole-network images/s | vs 1 | accuracy | epoch seconds "
             "| run seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        epochs = " / ".join(f"{s:.2f}" for s in r["epoch_seconds"])
        lines.append(f"| {r['processes']} | {r['images_per_s']:,.0f} | "
                     f"{r['images_per_s'] / base:.2f}x | {100 * r['accuracy']:.2f} % | {epochs} | "
                     f"{r['run_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.child is not None:
        return child(args)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(x) for x in args.gpus.split(",")):
        results.append(run(args, n, args.out / f"distributed-{n}.json"))
        print(results[-1], flush=True)
    text = table(args, results)
    name = f"distributed-{args.data.name}-{args.machine or args.device}-{date.today()}.md"
    (args.out / name).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
