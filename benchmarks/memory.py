"""Peak resident memory of fine-tuning on a CPU, against the number of photos.

Every measurement is a fresh process; its peak RSS is the process's ``ru_maxrss`` (the decoding
workers are processes of their own: their largest peak is reported beside it). Three kinds:

- ``steps``: the training and validation photos are decoded once into the decode-once cache
  (kept in memory, or spilled to a temporary file), then the whole network trains for a few
  steps (a step's working set is reached at the first one). With ``--step-memory 0`` a batch
  runs as one pass, as before ``learn.step_memory`` existed.
- ``fine_tune``: ``learn.fine_tune(1, freeze_epochs=1)`` as a user runs it: decode-once cache of
  every photo, activations of every photo (precompute), one epoch of the head, then the whole
  network, stopped after ``--steps`` steps; the peak so far is read after each stage.
- ``compare``: the same photos fine-tuned in full (``fine_tune(1, freeze_epochs=1)``), with
  ``step_memory`` off and at its default: accuracy, peak RSS, and the whole-network epoch's
  wall and CPU seconds.

Photo folders are made of symbolic links to Dogs vs Cats photos, repeated under distinct names
when more are asked for than there are.

    python3 benchmarks/memory.py steps --counts 300 2000 --json rows.json
    python3 benchmarks/memory.py fine_tune --counts 2400 12000 --json rows.json
    python3 benchmarks/memory.py compare --counts 1000 --json rows.json
    python3 benchmarks/memory.py report --json rows.json --tag night

Memory model (bytes), fitted from the ``fine_tune`` rows and stated in the results:
    peak = base + N_photos x per_photo
where base holds Python, torch, the network and a training pass's activations (bounded by
``learn.step_memory``), and per_photo the photo's cached activations (2,560 bfloat16 for
efficientnet_lite0) and its bookkeeping; the decode-once cache adds its bytes while it is held
in memory (the splits together up to a quarter of the machine's memory, at most 1 GiB; beyond, a
split is spilled to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogscats"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def learner(root: Path, spill: str, step_memory: int | None, cache: Path):
    import torch

    from threeline import ImageData, Learner

    torch.set_num_threads(2)
    data = ImageData.from_folder(root, size=224, batch_size=64, verbose=False)
    learn = Learner.pretrained("efficientnet_lite0", data, device="cpu", progress=False,
                               cache_dir=cache)
    learn.checkpoint_dir = False
    learn.presize_max_bytes = {"memory": 1 << 62, "file": 0, "default": None}[spill]
    if step_memory is not None:
        learn.step_memory = step_memory or None
    return data, learn


def stop_after(steps: int):
    from threeline.callbacks import Callback, CancelFit

    class Stop(Callback):  # ends the whole-network stage after ``steps`` steps
        def on_batch_end(self, learn, loss) -> None:
            if not learn.precompute and learn.step + 1 >= steps:
                raise CancelFit

    return Stop()


def child(kind: str, root: Path, spill: str, step_memory: int | None, steps: int,
          cache: Path) -> dict:
    from threeline.vision import batches
    from threeline.vision import features as feature_cache

    data, learn = learner(root, spill, step_memory, cache)
    row = {"kind": kind, "photos": len(data.train) + len(data.valid), "spill": spill,
           "step_memory": learn.step_memory, "stages": {}}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        row["stages"][name] = {"s": time.perf_counter() - clock, "peak_mib": peak_mib()}
        clock = time.perf_counter()

    caches = [batches.presized_cache(learn, s.files, s.labels) for s in (data.train, data.valid)]
    row["cache_in_memory_mib"] = sum(
        img.numel() for c in caches if isinstance(c.images, list) for img in c.images) / 2**20
    stage("decode")
    if kind == "steps":
        learn.unfreeze()
        learn.run_fit([1e-4] * len(learn.layer_groups()), 1, 0.01, [stop_after(steps)],
                      validate=False)
        stage("steps")
    elif kind == "fine_tune":
        feature_cache.ensure(learn, ["train", "valid"])
        stage("precompute")
        learn.callbacks.append(stop_after(steps))
        learn.fine_tune(1, freeze_epochs=1)
        row["head_accuracy"] = learn.history[0]["accuracy"]
        stage("head and steps")
    else:  # compare: the whole recipe, to the end
        feature_cache.ensure(learn, ["train", "valid"])
        stage("precompute")
        cpu = cpu_seconds()
        rows = learn.fine_tune(1, freeze_epochs=1)
        row.update(head_accuracy=rows[0]["accuracy"], accuracy=rows[-1]["accuracy"],
                   valid_loss=rows[-1]["valid_loss"], whole_s=rows[-1]["time"],
                   fine_tune_cpu_s=cpu_seconds() - cpu)
        stage("fine_tune")
    row["peak_rss_mib"] = peak_mib()
    row["workers_peak_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    row["step_bytes_per_image"] = learn._step_bytes
    return row


def link_photos(dest: Path, n_train: int, n_valid: int) -> Path:
    """train/ and valid/ with cats and dogs, half each: links to the Dogs vs Cats photos,
    repeated under distinct names when more are asked for than there are."""
    for split, n in (("train", n_train), ("valid", n_valid)):
        for cls in ("cats", "dogs"):
            (dest / split / cls).mkdir(parents=True)
            sources = sorted((DATA / split / cls).iterdir())
            for i in range(n // 2):
                f = sources[i % len(sources)]
                (dest / split / cls / f"{i // len(sources)}-{f.name}").symlink_to(f.resolve())
    return dest


def run_child(args: argparse.Namespace, root: Path, spill: str, step_memory: int | None,
              cache: Path) -> dict:
    command = [sys.executable, __file__, "child", "--of", args.kind, "--root", str(root),
               "--spill", spill, "--steps", str(args.steps), "--cache", str(cache)]
    if step_memory is not None:
        command += ["--step-memory", str(step_memory)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the measured process failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[7:])


def measure(args: argparse.Namespace) -> None:
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    spills = args.spill or {"steps": ["memory", "file"]}.get(args.kind, ["default"])
    with tempfile.TemporaryDirectory() as work:
        for n in args.counts:
            n_train = n if args.kind == "compare" else n - max(2, n // 6)
            root = link_photos(Path(work) / str(n), n_train, n if args.kind == "compare"
                               else n - n_train)
            for spill in spills:
                for step_memory in args.step_memory:
                    cache = Path(work) / "cache"  # shared: compare's second run reads the first
                    row = run_child(args, root, spill, step_memory, cache)
                    row["machine"] = args.machine
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    args.json.write_text(json.dumps(rows, indent=1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["steps", "fine_tune", "compare", "report", "child"])
    p.add_argument("--counts", type=int, nargs="+", default=[2400],
                   help="photos per run, train + valid (compare: training photos, as many "
                        "validation photos)")
    p.add_argument("--step-memory", type=int, nargs="+", default=[None],
                   help="learn.step_memory in bytes; 0 for one pass a batch; none: default")
    p.add_argument("--steps", type=int, default=3, help="whole-network steps before stopping")
    p.add_argument("--json", type=Path, default=Path("memory-rows.json"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--machine", default="cpu-2core")
    p.add_argument("--tag", default="")
    p.add_argument("--of", help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--spill", nargs="+", choices=["memory", "file", "default"],
                   help="the decode-once cache: in memory, in a file, or the default choice "
                        "(steps: memory and file; others: default)")
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.kind == "child":
        step_memory = args.step_memory[0]
        result = child(args.of, args.root, args.spill[0], step_memory, args.steps,
                       args.cache)
        print("RESULT " + json.dumps(result), flush=True)
    elif args.kind == "report":
        text = report(json.loads(args.json.read_text()))
        stamp = time.strftime("%Y-%m-%d") + (f"-{args.tag}" if args.tag else "")
        path = args.out / f"memory-{args.machine}-{stamp}.md"
        path.write_text(text, encoding="utf-8")
        print(text)
    else:
        measure(args)



def report(rows: list[dict]) -> str:
    node = f"{platform.node() or 'this machine'}, {os.cpu_count()} cores"
    lines = ["# Peak resident memory, fine-tuning efficientnet_lite0 on a CPU", "",
             f"{node}, shared with other work while measured (wall seconds vary with it; "
             f"CPU seconds less). Size 224, batches of 64, `torch.set_num_threads(2)`; peak RSS "
             f"is `ru_maxrss` of a fresh process (the decoding worker, a process of its own, "
             f"peaked lower: see the last column). Made by `benchmarks/memory.py` (commands "
             f"below).", ""]
    lines += steps_table([r for r in rows if r["kind"] == "steps"])
    lines += fine_tune_table([r for r in rows if r["kind"] == "fine_tune"])
    lines += compare_table([r for r in rows if r["kind"] == "compare"])
    return "\n".join(lines) + "\n"


def passes(r: dict) -> str:
    if not r["step_memory"]:
        return "one pass of 64"
    most = max(2, r["step_memory"] // r["step_bytes_per_image"])
    parts = min(-(-64 // most), 32)
    return f"{parts} passes of {64 // parts} ({r['step_memory'] / 2**30:g} GiB)"


def steps_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = ["## A training step's working set", "",
           "`python3 benchmarks/memory.py steps --counts 300 2000 --step-memory 0 1073741824`: "
           "decode-once cache of train + valid, then 3 steps of the whole network.", "",
           "| photos | decode-once cache | a step | cache in memory | peak RSS | decode | "
           "3 steps (wall) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        st = r["stages"]
        out.append(f"| {r['photos']:,} | {'in memory' if r['spill'] == 'memory' else 'a file'} "
                   f"| {passes(r)} | {r['cache_in_memory_mib']:.0f} MiB | "
                   f"{r['peak_rss_mib']:.0f} MiB | {st['decode']['s']:.1f} s | "
                   f"{st['steps']['s']:.1f} s |")
    per_image = [r["step_bytes_per_image"] for r in rows if r["step_bytes_per_image"]]
    if per_image:
        out += ["", f"Activations a training pass keeps per image (measured by "
                    f"`batches.saved_bytes_per_image`): {per_image[0] / 2**20:.1f} MiB."]
    return [*out, ""]


def fine_tune_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = ["## fine_tune, photos against peak RSS", "",
           "`python3 benchmarks/memory.py fine_tune --counts ... --steps 3`: "
           "`fine_tune(1, freeze_epochs=1)`, the whole-network stage stopped after 3 steps "
           "(so its validation pass does not run); the decode-once caches at their default "
           "(in memory while both splits together fit a quarter of the machine's memory, at "
           "most 1 GiB; else a file); the peak so far after each stage.", "",
           "| photos | decode-once cache | decode | precompute | head epoch + 3 steps | "
           "peak after decode | after precompute | peak RSS | decoding worker's peak |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: r["photos"]):
        st = r["stages"]
        out.append(
            f"| {r['photos']:,} | {r['cache_in_memory_mib']:.0f} MiB in memory | "
            f"{st['decode']['s'] / 60:.1f} min | {st['precompute']['s'] / 60:.1f} min | "
            f"{st['head and steps']['s'] / 60:.1f} min | {st['decode']['peak_mib']:.0f} MiB | "
            f"{st['precompute']['peak_mib']:.0f} MiB | {r['peak_rss_mib']:.0f} MiB | "
            f"{r['workers_peak_mib']:.0f} MiB |")
    if len(rows) >= 2:  # the fit: peak less the pixels held in memory, against photos
        small, large = (min(rows, key=lambda r: r["photos"]), max(rows, key=lambda r: r["photos"]))
        net = [r["peak_rss_mib"] - r["cache_in_memory_mib"] for r in (small, large)]
        per = (net[1] - net[0]) / (large["photos"] - small["photos"])
        base = net[0] - per * small["photos"]
        at = base + per * 100_000
        out += ["", f"peak RSS = base + photos x per photo + the pixels held in memory (at most "
                    f"1 GiB), from the {small['photos']:,}- and {large['photos']:,}-photo rows: "
                    f"base {base:.0f} MiB, per photo {per * 1024:.1f} KiB (the cached "
                    f"activations take 5 KiB: 2,560 bfloat16).", "",
                f"At 100,000 photos: {base:.0f} + 100,000 x {per * 1024:.1f} KiB = {at:.0f} MiB "
                f"({at / 1024:.2f} GiB) with every pixel in a file; at most 1 GiB more when the "
                f"photos are few enough for memory."]
    return [*out, ""]


def compare_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = ["## One pass a batch against passes within `step_memory`", "",
           "`python3 benchmarks/memory.py compare --counts 1000 --step-memory 0 1073741824`: "
           "`fine_tune(1, freeze_epochs=1)` in full on the same photos (1,000 training, 1,000 "
           "validation), same seed; the activations come from the same cache.", "",
           "| a step | accuracy after the head | accuracy after fine_tune | valid loss | "
           "whole-network epoch (wall) | fine_tune CPU time | peak RSS |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {passes(r)} | {r['head_accuracy']:.4f} | {r['accuracy']:.4f} | "
                   f"{r['valid_loss']:.4f} | {r['whole_s']:.0f} s | "
                   f"{r['fine_tune_cpu_s']:.0f} s | {r['peak_rss_mib']:.0f} MiB |")
    return [*out, ""]


if __name__ == "__main__":
    main()
