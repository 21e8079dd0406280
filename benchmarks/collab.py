"""Collaborative filtering: RMSE on MovieLens 100k's standard splits against other libraries,
and the seconds per epoch of a 20-million-rating table.

    python3 benchmarks/collab.py --out benchmarks/results                  # CPU, all folds
    python3 benchmarks/collab.py --device cuda --out DIR                   # on a GPU
    python3 benchmarks/collab.py --what scale --device cuda --out DIR      # 20M ratings
    python3 benchmarks/collab.py --folds 1 --methods threeline-dot,surprise-svd --out DIR
    python3 benchmarks/collab.py --holdout --methods threeline-dot --options '{"members": 2}'

Every method trains on u{i}.base and is scored on u{i}.test (the splits shipped with the data),
RMSE of predictions clipped to nothing, seconds from a prepared table to a trained model.
``--holdout`` scores on a seeded random 10 % of u{i}.base instead, after training on the rest:
for choosing settings without looking at u{i}.test. ``--options``: JSON of keyword arguments
for threeline's ``collab_learner`` (quality and scale).
Methods: threeline-dot and threeline-nn (the defaults: ``fit(5e-3, 5)``), surprise-svd and
surprise-svdpp (scikit-surprise, default settings), fastai-dot (fastai 2.8
``collab_learner(n_factors=50, y_range=(0, 5.5))``, ``fit_one_cycle(5, 5e-3, wd=0.1)``, as in
its lesson). A method whose library is missing is reported as such.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data" / "ml-100k"
NAMES = ["user", "item", "rating", "ts"]
HOLDOUT_PCT, HOLDOUT_SEED = 0.1, 0  # --holdout: 10 % of u{i}.base, seeded
METHODS = ["threeline-dot", "threeline-nn", "surprise-svd", "surprise-svdpp", "fastai-dot"]


def fold_tables(fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    base = pd.read_csv(DATA / f"u{fold}.base", sep="\t", names=NAMES)
    test = pd.read_csv(DATA / f"u{fold}.test", sep="\t", names=NAMES)
    return base, test


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, dtype=np.float64) - truth) ** 2)))


def down(value: float, digits: int = 6) -> str:
    """``value`` cut (not rounded) to ``digits`` decimals: an RMSE is never shown better than
    it is."""
    return f"{math.floor(value * 10**digits) / 10**digits:.{digits}f}"


def holdout_tables(fold: int, pct: float = HOLDOUT_PCT, seed: int = HOLDOUT_SEED
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """u{fold}.base split in two, a seeded random ``pct`` of its rows held out: for choosing
    settings without looking at u{fold}.test."""
    base, _ = fold_tables(fold)
    held = np.zeros(len(base), dtype=bool)
    held[np.random.default_rng(seed).permutation(len(base))[: round(len(base) * pct)]] = True
    return base[~held].reset_index(drop=True), base[held].reset_index(drop=True)


def run_threeline(kind: str, fold: int, device: str, holdout: bool = False,
                  options: dict | None = None) -> tuple[float, float]:
    """RMSE on u{fold}.test after training on u{fold}.base, or with ``holdout`` on the held-out
    rows of u{fold}.base after training on the rest; ``options`` go to ``collab_learner``."""
    import warnings

    from threeline.collab import CollabData, collab_learner

    train, test = holdout_tables(fold) if holdout else fold_tables(fold)
    start = time.perf_counter()
    df = pd.concat([train, test], ignore_index=True)
    data = CollabData.from_df(df, valid_idx=np.arange(len(train), len(df)))
    learn = collab_learner(data, kind=kind, device=device, progress=False, **(options or {}))
    learn.checkpoint_dir = False
    learn.fit(5e-3, 5)
    seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few u{i}.test items are not in u{i}.base
        pred = learn.predict(test[["user", "item"]])
    return rmse(pred, test.rating.to_numpy()), seconds


def run_surprise(algo_name: str, fold: int) -> tuple[float, float]:
    from surprise import SVD, Dataset, Reader, SVDpp

    base, test = fold_tables(fold)
    start = time.perf_counter()
    reader = Reader(rating_scale=(1, 5))
    train = Dataset.load_from_df(base[["user", "item", "rating"]], reader).build_full_trainset()
    algo = (SVD if algo_name == "svd" else SVDpp)(random_state=0)
    algo.fit(train)
    seconds = time.perf_counter() - start
    pred = [algo.predict(u, i).est for u, i in zip(test.user, test.item, strict=True)]
    return rmse(np.array(pred), test.rating.to_numpy()), seconds


def run_fastai(fold: int, device: str) -> tuple[float, float]:
    from fastai.collab import TabularCollab, collab_learner
    from fastai.data.block import TransformBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.tabular.core import Categorify

    base, test = fold_tables(fold)
    df = pd.concat([base, test], ignore_index=True)
    start = time.perf_counter()
    splits = IndexSplitter(list(range(len(base), len(df))))(range(len(df)))
    to = TabularCollab(df, [Categorify], cat_names=["user", "item"], y_names=["rating"],
                       y_block=TransformBlock(), splits=splits)
    dls = to.dataloaders(bs=64, device=torch.device(device))
    learn = collab_learner(dls, n_factors=50, y_range=(0, 5.5))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(5, 5e-3, wd=0.1)
        seconds = time.perf_counter() - start
        preds, targets = learn.get_preds()
    return rmse(preds.reshape(-1).numpy(), targets.reshape(-1).numpy()), seconds


def quality(folds: list[int], methods: list[str], device: str, holdout: bool = False,
            options: dict | None = None) -> list[str]:
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    notes = []
    for method in methods:
        for fold in folds:
            try:
                if method.startswith("threeline"):
                    out = run_threeline(method.split("-")[1], fold, device, holdout, options)
                elif holdout:
                    notes.append(f"- {method}: not run (--holdout is for threeline only).")
                    break
                elif method.startswith("surprise"):
                    out = run_surprise(method.split("-")[1], fold)
                else:
                    out = run_fastai(fold, device)
            except ImportError as err:
                notes.append(f"- {method}: not run ({err}).")
                break
            results[method].append(out)
            print(f"{method} u{fold}: RMSE {down(out[0])}, {out[1]:.1f} s", flush=True)
    head = "| method | " + " | ".join(f"u{f}" for f in folds) + " | mean RMSE | s per fit |"
    lines = [head, "|" + " --- |" * (len(folds) + 3)]
    for method, rows in results.items():
        if not rows:
            continue
        cells = [down(r) for r, _ in rows] + ["-"] * (len(folds) - len(rows))
        mean = statistics.mean(r for r, _ in rows)
        secs = [s for _, s in rows]
        lines.append(f"| {method} | " + " | ".join(cells) +
                     f" | {down(mean)} | {min(secs):.1f}-{max(secs):.1f} |")
    return [*lines, "", *notes]


def scale(device: str, batch_size: int, epochs: int, options: dict | None = None) -> list[str]:
    """A synthetic table of 20,000,000 ratings by 138,000 users of 27,000 items."""
    from threeline.collab import CollabData, collab_learner

    rng = np.random.default_rng(0)
    n_users, n_items, n = 138_000, 27_000, 20_000_000
    start = time.perf_counter()
    pairs = np.unique(rng.integers(0, n_users * n_items, int(n * 1.01)))[:n]
    rng.shuffle(pairs)
    users, items = pairs // n_items, pairs % n_items
    taste = rng.normal(size=(n_users, 4)).astype(np.float32)
    kind = rng.normal(size=(n_items, 4)).astype(np.float32)
    score = (taste[users] * kind[items]).sum(1) + rng.normal(0, 0.5, len(pairs))
    ratings = np.clip(np.round(3 + score), 1, 5).astype(np.float32)
    df = pd.DataFrame({"user": users.astype(np.int32), "item": items.astype(np.int32),
                       "rating": ratings})
    del pairs, users, items, score, taste, kind
    data = CollabData.from_df(df, valid_pct=0.02, batch_size=batch_size)
    del df
    prepare = time.perf_counter() - start
    learn = collab_learner(data, **({"n_factors": 50} | (options or {})), device=device,
                           progress=False)
    learn.checkpoint_dir = False
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows = learn.fit(5e-3, epochs)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    gpu = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
           if device == "cuda" else "")
    lines = [f"{len(data.train_idx):,} training / {len(data.valid_idx):,} validation ratings, "
             f"{data.n_users:,} users, {data.n_items:,} items, batch size {batch_size:,}, "
             f"{data.steps('train'):,} steps per epoch; table to CollabData {prepare:.1f} s; "
             f"peak process memory {peak_rss:.2f} GiB{gpu}.", "",
             "| epoch | seconds (train + validate) | valid RMSE |", "| --- | --- | --- |"]
    lines += [f"| {r['epoch']} | {r['time']:.1f} | {r['rmse']:.4f} |" for r in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=["quality", "scale"], default="quality")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--folds", default="1,2,3,4,5")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch-size", type=int, default=16_384, help="scale only")
    parser.add_argument("--epochs", type=int, default=1, help="scale only")
    parser.add_argument("--holdout", action="store_true",
                        help="quality: score on 10 %% of u{i}.base held out, not on u{i}.test")
    parser.add_argument("--options", type=json.loads, default=None,
                        help="JSON keyword arguments for threeline's collab_learner")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--machine", default=None, help="name in the results file")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = args.machine or (torch.cuda.get_device_name(0).lower().replace(" ", "-")
                               if args.device == "cuda" else f"cpu-{torch.get_num_threads()}core")
    if args.what == "quality":
        folds = [int(f) for f in args.folds.split(",")]
        methods = args.methods.split(",")
        unknown = set(methods) - set(METHODS)
        if unknown:
            parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
        body = quality(folds, methods, args.device, args.holdout, args.options)
        title = ("MovieLens 100k, standard splits: RMSE on u{i}.test after training on u{i}.base"
                 if not args.holdout else "MovieLens 100k: RMSE on a seeded 10 % of u{i}.base "
                 "after training on the other 90 %")
    else:
        body = scale(args.device, args.batch_size, args.epochs, args.options)
        title = "Scale: one epoch of a synthetic 20-million-rating table"
    header = [f"# Collaborative filtering: {title}", "",
              f"{datetime.date.today()}, {machine}, device {args.device}, torch "
              f"{torch.__version__}, {torch.get_num_threads()} torch threads, Python "
              f"{platform.python_version()}. Command: `python3 benchmarks/collab.py "
              f"{shlex.join(sys.argv[1:])}`", ""]
    text = "\n".join(header + body) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    what = "holdout" if args.what == "quality" and args.holdout else args.what
    name = f"collab-{what}-{machine}-{datetime.date.today()}.md"
    (args.out / name).write_text(text)
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
