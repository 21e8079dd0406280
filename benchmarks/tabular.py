"""Tables: accuracy on UCI Adult (5 seeded 20 % validation splits) and speed on synthetic rows
of the Adult schema, threeline against fastai 2.8's tabular_learner.

    python benchmarks/tabular.py --part accuracy                 # nn, gbdt, ensemble x 5 seeds
    python benchmarks/tabular.py --part speed --rows 1000000     # CPU rows/s, Adult schema
    python benchmarks/tabular.py --part speed --device cuda --out benchmarks/results

Accuracy: ``TabularData.from_csv(adult.csv, y="target", seed=s)``, then
``Learner.tabular(data, model="ensemble").fit(1e-2, 5)``: one fit trains the network through
the core's loop (its last epoch is the "nn" figure), then LightGBM ("gbdt"), then averages
both ("ensemble", the network's share fixed at 0.2). Nothing is tuned on the validation rows:
the boosting stops early on a holdout of the training rows.

Speed: ``--rows`` rows drawn with replacement from Adult, their numbers jittered (seeded), so
the schema, types and missing values are Adult's; and a 200-column table (100 categorical
columns of 3-50 classes, 100 continuous) with ``--wide-rows`` rows and a target that depends on
both. Both libraries get the same rows, the same split (20 % validation), batch size, layers
(200, 100), one epoch of one-cycle at 1e-2. Reported: building the data (types, split,
preprocessing), training rows/s (one epoch, training rows / seconds, validation included), and
predict rows/s on the validation rows given as a DataFrame (preprocessing included).
The markdown goes to ``--out`` as ``tabular-<machine>-<date>.md`` (``tabular-accuracy-...`` or
``tabular-speed-...`` for one part).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from threeline.learner import Learner  # noqa: E402
from threeline.tabular import TabularData  # noqa: E402

ADULT = REPO.parent / "shared" / "data" / "adult" / "adult.csv"
CATS = ["work_class", "education", "education_num", "marital_status", "occupation",
        "relationship", "race", "sex", "native_country"]
CONTS = ["age", "fnlgwt", "capital_gain", "capital_loss", "hours_per_week"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["accuracy", "speed", "all"], default="all")
    p.add_argument("--adult", default=str(ADULT), help="path of adult.csv")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the Adult-schema table")
    p.add_argument("--wide-rows", type=int, default=200_000, help="rows of the 200-column table")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--frameworks", default="threeline,fastai")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=str(HERE / "results"))
    return p.parse_args(argv)


def machine(device: str) -> str:
    if device.startswith("cuda"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout
            return re.sub(r"[^a-z0-9]+", "-", out.strip().splitlines()[0].lower()).strip("-")
        except (OSError, IndexError, subprocess.SubprocessError):
            return "cuda"
    return f"cpu-{os.cpu_count()}core"


# ------------------------------------------------------------------------- accuracy

def accuracy(args) -> list[str]:
    lines = ["## Accuracy on UCI Adult (32,561 rows, seeded 20 % validation split)", "",
             f"`Learner.tabular(data, model='ensemble').fit(1e-2, {args.epochs})`, defaults "
             "otherwise; device " + args.device + ".", "",
             "| seed | nn | gbdt (rounds) | ensemble | seconds |",
             "| --- | --- | --- | --- | --- |"]
    results = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        data = TabularData.from_csv(args.adult, y="target", seed=seed)
        learn = Learner.tabular(data, model="ensemble", device=args.device, seed=seed,
                                progress=False)
        learn.checkpoint_dir = False
        with contextlib.redirect_stdout(io.StringIO()):
            rows = learn.fit(1e-2, args.epochs)
        nn_row = [r for r in rows if r.get("model") is None][-1]
        gbdt_row = [r for r in rows if r.get("model") == "gbdt"][-1]
        ens_row = rows[-1]
        seconds = time.perf_counter() - start
        results.append((nn_row["accuracy"], gbdt_row["accuracy"], ens_row["accuracy"]))
        lines.append(f"| {seed} | {nn_row['accuracy']:.4f} | {gbdt_row['accuracy']:.4f} "
                     f"({gbdt_row['rounds']}) | {ens_row['accuracy']:.4f} | {seconds:.1f} |")
        print(lines[-1], flush=True)
    a = np.array(results)
    lines.append(f"| mean | {a[:, 0].mean():.4f} | {a[:, 1].mean():.4f} | "
                 f"{a[:, 2].mean():.4f} | |")
    lines.append(f"| min-max | {a[:, 0].min():.4f}-{a[:, 0].max():.4f} | "
                 f"{a[:, 1].min():.4f}-{a[:, 1].max():.4f} | "
                 f"{a[:, 2].min():.4f}-{a[:, 2].max():.4f} | |")
    return lines


# ------------------------------------------------------------------------- tables for speed

def adult_like(adult: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` Adult rows drawn with replacement, numbers jittered: Adult's schema and types."""
    rng = np.random.default_rng(seed)
    df = adult.iloc[rng.integers(0, len(adult), n)].reset_index(drop=True)
    df["age"] = (df["age"] + rng.integers(-2, 3, n)).clip(17, 90)
    df["fnlgwt"] = (df["fnlgwt"] * rng.uniform(0.9, 1.1, n)).round().astype(np.int64)
    df["hours_per_week"] = (df["hours_per_week"] + rng.integers(-2, 3, n)).clip(1, 99)
    return df


def wide(n: int, seed: int = 0) -> tuple[pd.DataFrame, list[str], list[str]]:
    """100 categorical (3-50 classes, text) + 100 continuous columns and a binary target."""
    rng = np.random.default_rng(seed)
    cols, logit = {}, np.zeros(n)
    cats = [f"c{i}" for i in range(100)]
    conts = [f"x{i}" for i in range(100)]
    for i, name in enumerate(cats):
        k = 3 + (i * 7) % 48
        codes = rng.integers(0, k, n)
        logit += rng.normal(0, 0.3, k)[codes]
        cols[name] = pd.Categorical.from_codes(codes, [f"v{j}" for j in range(k)]).astype(str)
    for name in conts:
        x = rng.normal(0, 1, n).astype(np.float32)
        logit += rng.normal(0, 0.1) * x
        cols[name] = x
    cols["target"] = np.where(logit + rng.logistic(0, 1, n) > np.median(logit), "yes", "no")
    return pd.DataFrame(cols), cats, conts


def split_idx(n: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:round(0.2 * n)])


# ------------------------------------------------------------------------- the two libraries

def run_threeline(df, cats, conts, valid_idx, args) -> dict:
    start = time.perf_counter()
    data = TabularData.from_df(df, y="target", cat=cats, cont=conts, valid_idx=valid_idx,
                               batch_size=args.batch_size)
    built = time.perf_counter() - start
    learn = Learner.tabular(data, device=args.device, progress=False)
    learn.checkpoint_dir = False
    learn.fit(1e-2, 1)  # warm-up: allocations, a CUDA graph's capture
    start = time.perf_counter()
    rows = learn.fit(1e-2, 1)
    _sync(args.device)
    train_s = time.perf_counter() - start
    valid = df.iloc[valid_idx]
    start = time.perf_counter()
    learn.predict(valid)
    predict_s = time.perf_counter() - start
    return {"build_s": built, "train_s": train_s, "predict_s": predict_s,
            "n_train": len(data.rows["train"]), "n_valid": len(valid),
            "accuracy": rows[-1]["accuracy"]}


def run_fastai(df, cats, conts, valid_idx, args) -> dict:
    import stand_ins

    stand_ins.install()  # fastai imports requests/scipy/sklearn at start-up, never used here
    from fastai.tabular.all import (
        Categorify,
        FillMissing,
        Normalize,
        TabularPandas,
        accuracy,
        tabular_learner,
    )

    start = time.perf_counter()
    is_valid = np.zeros(len(df), bool)
    is_valid[valid_idx] = True
    splits = (list(np.flatnonzero(~is_valid)), list(np.flatnonzero(is_valid)))
    to = TabularPandas(df, procs=[Categorify, FillMissing, Normalize], cat_names=cats,
                       cont_names=conts, y_names="target", splits=splits)
    dls = to.dataloaders(bs=args.batch_size, device=torch.device(args.device))
    built = time.perf_counter() - start
    learn = tabular_learner(dls, layers=[200, 100], metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, 1e-2)  # warm-up, as for threeline
        start = time.perf_counter()
        learn.fit_one_cycle(1, 1e-2)
        _sync(args.device)
        train_s = time.perf_counter() - start
        valid = df.iloc[valid_idx]
        start = time.perf_counter()
        test_dl = learn.dls.test_dl(valid.drop(columns=["target"]))
        learn.get_preds(dl=test_dl)
        predict_s = time.perf_counter() - start
        acc = float(learn.validate()[1])
    return {"build_s": built, "train_s": train_s, "predict_s": predict_s,
            "n_train": len(splits[0]), "n_valid": len(valid), "accuracy": acc}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def speed(args) -> list[str]:
    adult = pd.read_csv(args.adult, na_values=["?"])
    cases = [("Adult schema", adult_like(adult, args.rows), CATS, CONTS)]
    if args.wide_rows:
        cases.append(("200 columns", *wide(args.wide_rows)))
    lines = ["## Speed", "", f"batch size {args.batch_size}, layers (200, 100), one epoch of "
             f"one-cycle at 1e-2 after a warm-up epoch, device {args.device}, "
             f"{torch.get_num_threads()} torch threads.", "",
             "| table | rows | library | build s | train rows/s | predict rows/s | accuracy |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    runners = {"threeline": run_threeline, "fastai": run_fastai}
    for label, df, cats, conts in cases:
        valid_idx = split_idx(len(df))
        for name in args.frameworks.split(","):
            with contextlib.redirect_stdout(io.StringIO()):
                r = runners[name](df, cats, conts, valid_idx, args)
            lines.append(f"| {label} | {len(df):,} | {name} | {r['build_s']:.1f} | "
                         f"{r['n_train'] / r['train_s']:,.0f} | "
                         f"{r['n_valid'] / r['predict_s']:,.0f} | {r['accuracy']:.4f} |")
            print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    day = datetime.date.today().isoformat()
    stem = "tabular" if args.part == "all" else f"tabular-{args.part}"
    out = Path(args.out) / f"{stem}-{machine(args.device)}-{day}.md"
    lines = [f"# Tabular benchmark, {machine(args.device)}, {day}", "",
             f"torch {torch.__version__}, pandas {pd.__version__}, command: "
             f"`python benchmarks/tabular.py {' '.join(sys.argv[1:])}`", ""]
    if args.part in ("accuracy", "all"):
        lines += [*accuracy(args), ""]
    if args.part in ("speed", "all"):
        lines += [*speed(args), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
