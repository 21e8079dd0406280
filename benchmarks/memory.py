"""Peak resident memory of fine-tuning on a CPU, against the number of photos.

Each measurement is a fresh process: the training and validation photos are decoded once into
the decode-once cache (kept in memory, or spilled to a temporary file), then the whole network
trains for a few steps (the working set of a training step is reached at the first one; later
steps reuse it). Peak RSS is the process's ``ru_maxrss``.

    python3 benchmarks/memory.py --counts 300 2000 --out benchmarks/results

Memory model (bytes), fitted here and stated in the results:
    peak = base + N_images x (cache bytes per image, 0 when spilled) + N_images x 4 x D
where D is the body's pooled width (2,560 for efficientnet_lite0's average + max pooling; the
cached activations of the head stage) and base holds Python, torch, the network and a
training step's activations for one batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 3


def child(root: Path, spill: bool, size: int, batch_size: int) -> dict:
    import torch

    from threeline import ImageData, Learner
    from threeline.callbacks import Callback, CancelFit
    from threeline.vision import batches

    class Stop(Callback):
        def on_batch_end(self, learn, loss) -> None:
            if learn.step + 1 >= STEPS:
                raise CancelFit

    torch.set_num_threads(2)
    data = ImageData.from_folder(root, size=size, batch_size=batch_size, verbose=False)
    learn = Learner.pretrained("efficientnet_lite0", data, device="cpu", progress=False)
    learn.checkpoint_dir = False
    learn.presize_max_bytes = 0 if spill else 1 << 62
    start = time.perf_counter()
    caches = [batches.presized_cache(learn, s.files, s.labels) for s in (data.train, data.valid)]
    decoded = time.perf_counter() - start
    learn.unfreeze()
    learn.run_fit([1e-4] * len(learn.layer_groups()), 1, 0.01, [Stop()], validate=False)
    in_memory = sum(img.numel() for c in caches if isinstance(c.images, list) for img in c.images)
    return {"images": len(data.train) + len(data.valid), "spill": spill,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cache_in_memory_mib": in_memory / 2**20, "decode_s": decoded,
            "short": learn.preprocess.resize_to}


def link_subset(source: Path, dest: Path, n_train: int, n_valid: int) -> Path:
    for split, n in (("train", n_train), ("valid", n_valid)):
        for cls in ("cats", "dogs"):
            (dest / split / cls).mkdir(parents=True)
            for f in sorted((source / split / cls).iterdir())[:n // 2]:
                (dest / split / cls / f.name).symlink_to(f.resolve())
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "data" / "dogscats")
    p.add_argument("--counts", type=int, nargs="+", default=[300, 2000],
                   help="training photos per run (validation: a fifth of that)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--machine", default="cpu-2core")
    p.add_argument("--child", nargs=2, metavar=("ROOT", "SPILL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = child(Path(args.child[0]), args.child[1] == "1", args.size, args.batch_size)
        print("RESULT " + json.dumps(result), flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for n in args.counts:
            root = link_subset(args.data, Path(work) / str(n), n, max(2, n // 5))
            for spill in (False, True):
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(root), "1" if spill else "0",
                     "--size", str(args.size), "--batch-size", str(args.batch_size)],
                    capture_output=True, text=True, check=True)
                line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
                rows.append(json.loads(line[7:]))
                print(rows[-1], flush=True)
    text = report(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory-{args.machine}-{time.strftime('%Y-%m-%d')}.md"
    path.write_text(text, encoding="utf-8")
    print(text)


def report(rows: list[dict], args: argparse.Namespace) -> str:
    lines = ["# Peak resident memory, fine-tuning efficientnet_lite0 on a CPU", "",
             f"{platform.node() or 'this machine'}, {os.cpu_count()} cores; size {args.size}, "
             f"batches of {args.batch_size}; decode-once cache of train + valid, then {STEPS} "
             f"steps of the whole network; peak RSS (ru_maxrss) of a fresh process.", "",
             "| photos (train + valid) | decode-once cache | cache in memory | peak RSS | "
             "decode time |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['images']:,} | {'spilled to a file' if r['spill'] else 'in memory'} "
                     f"| {r['cache_in_memory_mib']:.0f} MiB | {r['peak_rss_mib']:.0f} MiB | "
                     f"{r['decode_s']:.1f} s |")
    base = statistics.median(r["peak_rss_mib"] - r["cache_in_memory_mib"] for r in rows)
    per_photo = max(r["cache_in_memory_mib"] / r["images"] for r in rows)  # MiB
    acts = 100_000 * 4 * 2560 / 2**20
    lines += ["", f"Peak RSS less the cache held in memory: {base:.0f} MiB (median of the rows; "
              f"Python, torch, the network and one training step of {args.batch_size} images), "
              f"whatever the number of photos. The cache holds {per_photo * 1024:.0f} KiB a photo "
              f"here (3 x 256 x 256 bytes: these photos are about 200 x 200, upsized to the "
              f"256 px short side; a 3:2 photo takes 3 x 256 x 384 = 288 KiB).", "",
              "peak RSS = base + photos x (cache bytes a photo, or 0 once spilled) "
              "+ photos x 10 KiB (the head stage's cached activations, 2,560 float32 a photo)", "",
              f"- at 100,000 such photos, in memory: {base / 1024:.1f} + "
              f"{100_000 * per_photo / 1024:.1f} + {acts / 1024:.1f} = "
              f"{(base + 100_000 * per_photo + acts) / 1024:.1f} GiB",
              f"- at 100,000 photos, spilled (the default beyond a quarter of the machine's "
              f"memory): {base / 1024:.1f} + 0 + {acts / 1024:.1f} = {(base + acts) / 1024:.1f} "
              f"GiB; the {100_000 * per_photo / 1024:.1f} GiB file lives in the cache folder, "
              f"deleted when the process ends"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
