"""Which learning-rate suggestion rule can users follow? Heads on cached activations.

For each small real folder, for each head seed: train ``fit(lr, 3)`` at fixed rates, run the
lr finder, and train at the rate each candidate rule suggests from the same finder curve.
A rule is fit to recommend when its accuracy is within noise of the best fixed rate.

    python3 benchmarks/lr_suggestion.py --threads 1 --out benchmarks/results     # lite0, 5 seeds
    python3 benchmarks/lr_suggestion.py --threads 1 --arch efficientnet_lite2 --only "(a)" \
        --seeds 3 --out benchmarks/results

Data (read-only, linked into a temporary folder): two disjoint 300-photo Dogs vs Cats training
subsets (150 per class) validated on the same 400 validation photos, and hymenoptera (ants and
bees, 245 + 153). Landcover is multi-label and left out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from threeline import ImageData, Learner, lr_finder
from threeline.lr_finder import suggest
from threeline.vision.model import make_head

FIXED = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
EPOCHS = 3


# ------------------------------------------------------------------ candidate rules


def steepest(lrs: list[float], losses: list[float]) -> float:
    """The earlier rule: the steepest fall of the smoothed loss before its minimum."""
    return lrs[_steepest_index(lrs, losses)]


def _steepest_index(lrs: list[float], losses: list[float]) -> int:
    return lr_finder.steepest(lrs, losses)


def minimum_over(factor: float) -> Callable[[list[float], list[float]], float]:
    def rule(lrs: list[float], losses: list[float]) -> float:
        y = np.asarray(losses, dtype=np.float64)
        return lrs[int(np.argmin(np.where(np.isfinite(y), y, np.inf)))] / factor

    rule.__name__ = f"minimum / {factor:g}"
    return rule


def valley(lrs: list[float], losses: list[float]) -> float:
    """The longest run of steps over which the smoothed loss keeps falling; two thirds of the
    way along it (in steps)."""
    y = np.asarray(losses, dtype=np.float64)
    best, start, best_span = (0, 0), 0, -1
    for i in range(1, len(y)):
        if not y[i] < y[i - 1]:
            start = i
        elif i - start > best_span:
            best, best_span = (start, i), i - start
    a, b = best
    return lrs[a + (b - a) * 2 // 3]


def steepest_times(factor: float) -> Callable[[list[float], list[float]], float]:
    """The steepest fall's rate times ``factor`` (the nearest rate tried), never beyond the
    minimum's rate / 10."""
    def rule(lrs: list[float], losses: list[float]) -> float:
        y = np.asarray(losses, dtype=np.float64)
        cap = lrs[int(np.argmin(np.where(np.isfinite(y), y, np.inf)))] / 10
        target = min(lrs[_steepest_index(lrs, losses)] * factor, cap)
        return lrs[int(np.argmin(np.abs(np.log(lrs) - np.log(target))))]

    rule.__name__ = f"steepest x {factor:g}"
    return rule


def threeline_rule(lrs: list[float], losses: list[float]) -> float:
    """What ``threeline.lr_finder.suggest`` returns in the code being measured."""
    return lrs[suggest(lrs, losses)]


RULES = {"steepest": steepest, "steepest x 10": steepest_times(10),
         "steepest x 25": steepest_times(25), "minimum / 10": minimum_over(10),
         "minimum / 3": minimum_over(3), "valley": valley, "threeline's suggest": threeline_rule}


# ------------------------------------------------------------------ data


def link_subset(source: Path, dest: Path, train_slice: slice, valid_count: int) -> Path:
    """dest/{train,valid}/<class>/ of links to a class-balanced, sorted slice of source."""
    for split, pick in (("train", train_slice), ("valid", slice(0, valid_count))):
        for cls in sorted(p.name for p in (source / split).iterdir() if p.is_dir()):
            files = sorted((source / split / cls).iterdir())[pick]
            (dest / split / cls).mkdir(parents=True)
            for f in files:
                (dest / split / cls / f.name).symlink_to(f.resolve())
    return dest


def datasets(data: Path, work: Path) -> dict[str, Path]:
    dogs = data / "dogscats"
    return {
        "dogscats 300 (a)": link_subset(dogs, work / "a", slice(0, 150), 200),
        "dogscats 300 (b)": link_subset(dogs, work / "b", slice(150, 300), 200),
        "hymenoptera": data / "hymenoptera",
    }


# ------------------------------------------------------------------ runs


def accuracy_after_fit(learn: Learner, head_state: dict, seed: int, lr: float) -> float:
    learn.head.load_state_dict(head_state)
    learn.seed, learn.history = seed, []
    with contextlib.redirect_stdout(io.StringIO()):
        learn.fit(lr, EPOCHS)
    return float(learn.history[-1]["accuracy"])


def run_dataset(name: str, root: Path, arch: str, seeds: int) -> dict:
    data = ImageData.from_folder(root, verbose=False)
    learn = Learner.pretrained(arch, data, precompute=True, device="cpu", progress=False)
    learn.checkpoint_dir = False
    learn.features("train"), learn.features("valid")
    fixed: dict[float, list[float]] = {lr: [] for lr in FIXED}
    ruled: dict[str, list[tuple[float, float]]] = {r: [] for r in RULES}
    for seed in range(seeds):
        torch.manual_seed(seed)
        head = make_head(learn.body.out_features, len(data.classes), 512, 0.25)
        state = {k: v.clone() for k, v in head.state_dict().items()}
        for lr in FIXED:
            fixed[lr].append(accuracy_after_fit(learn, state, seed, lr))
        learn.head.load_state_dict(state)
        learn.seed, learn.history = seed, []
        finder = learn.lr_find()
        for rule_name, rule in RULES.items():
            lr = float(rule(finder.lrs, finder.losses))
            ruled[rule_name].append((lr, accuracy_after_fit(learn, state, seed, lr)))
        print(f"{name} seed {seed}: fixed {[round(fixed[lr][-1], 4) for lr in FIXED]}, "
              f"rules {[(f'{a:.1e}', round(b, 4)) for a, b in (v[-1] for v in ruled.values())]}",
              flush=True)
    return {"train": len(data.train), "valid": len(data.valid), "fixed": fixed, "rules": ruled}


def spread(values: list[float]) -> str:
    return (f"{100 * statistics.median(values):.2f} % ({100 * min(values):.2f}-"
            f"{100 * max(values):.2f})")


def report(results: dict, arch: str, seeds: int, seconds: float) -> str:
    lines = [f"# Learning-rate suggestion rules, {arch}, heads on cached activations", "",
             f"{platform.node() or 'this machine'}: {os.cpu_count()} CPU cores, torch "
             f"{torch.__version__}; `fit(lr, {EPOCHS})` per head seed ({seeds} seeds: the same "
             f"head initialisations and batch orders for every rate); {seconds:.0f} s in all.", ""]
    for name, r in results.items():
        lines += [f"## {name} ({r['train']} train, {r['valid']} valid)", "",
                  "| rate | valid accuracy, median (range) | suggested rate, median (range) |",
                  "| --- | --- | --- |"]
        lines += [f"| fixed {lr:g} | {spread(acc)} | - |" for lr, acc in r["fixed"].items()]
        for rule, pairs in r["rules"].items():
            lrs = [p[0] for p in pairs]
            lines.append(f"| {rule} | {spread([p[1] for p in pairs])} | "
                         f"{statistics.median(lrs):.1e} ({min(lrs):.1e}-{max(lrs):.1e}) |")
        lines.append("")
    lines += ["## Summary: median accuracy minus the best fixed rate's, in points", "",
              "| rule | " + " | ".join(results) + " |", "| --- |" + " --- |" * len(results)]
    for rule in RULES:
        gaps = []
        for r in results.values():
            best = max(statistics.median(acc) for acc in r["fixed"].values())
            gaps.append(100 * (statistics.median([p[1] for p in r["rules"][rule]]) - best))
        lines.append(f"| {rule} | " + " | ".join(f"{g:+.2f}" for g in gaps) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                   / "data")
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--machine", default="cpu-2core")
    p.add_argument("--only", default="", help="datasets whose name contains this")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (1 runs far faster on a machine shared with others)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        results = {name: run_dataset(name, root, args.arch, args.seeds)
                   for name, root in datasets(args.data, Path(work)).items()
                   if args.only in name}
    text = report(results, args.arch, args.seeds, time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"lr_suggestion-{args.arch}-{args.machine}-{time.strftime('%Y-%m-%d')}"
    path = args.out / f"{stem}.md"
    path.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
