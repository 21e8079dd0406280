"""Multi-label satellite chips (landcover): threeline against a probe and fastai 2.8.

    python3 benchmarks/multilabel.py --device cuda --seeds 5 --out benchmarks/results
    python3 benchmarks/multilabel.py --device cpu --n 400 --arch efficientnet_lite0 --seeds 2 \\
        --runs fit,fine_tune,probe

Runs (``--runs``), each in its own process with an empty activation cache, timed from reading
the labels to the trained model (imports and weight conversion off the clock):

- ``fit``: the three lines: ``ImageData.from_csv(..., label_delim=" ")``,
  ``Learner.pretrained(arch, data, precompute=True)``, ``learn.fit(0.01, 3)``;
- ``fine_tune``: ``learn.augment = "top_down"; learn.fine_tune(3)``;
- ``probe``: one-vs-rest logistic regression (scikit-learn's ``LogisticRegressionCV`` on
  standardized features, C chosen per label by 3-fold log-loss; a torch L-BFGS version of the
  same when scikit-learn is absent) on the activations the ``fit`` run cached (seed 0 only: it
  has no randomness); its time is the regression's alone;
- ``fastai_frozen`` / ``fastai_fine_tune``: fastai's ``vision_learner`` with
  ``MultiCategoryBlock`` on the same files and split, ``fit_one_cycle(3, 1e-2)`` (frozen body),
  or the Planet lesson's ``aug_transforms(flip_vert=True, max_lighting=0.1, max_zoom=1.05,
  max_warp=0)`` and ``fine_tune(3)``.

All runs share one seeded 20 % validation split (``--split-seed``); ``--seeds`` varies the
training seed. Every method's validation probabilities are scored the same way: F2 averaged over
samples (Kaggle Planet's), at 0.5, and at per-label thresholds **cross-fitted** on the validation
set (tuned with ``threeline.vision.label_scores.tune_thresholds`` on one half, applied to the
other, and back), so no image is scored with thresholds tuned on it; "tuned" (thresholds chosen
on the whole validation set, as ``learn.tune_thresholds()`` does) is optimistic. Per-label F1 is
at the cross-fitted thresholds. Writes ``multilabel-<machine>-<date>.md`` and ``.json`` to
``--out``. Extra packages: fastai (``benchmarks/wheels.txt``) for the fastai runs; scikit-learn
is optional.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = REPO.parent / "shared" / "data" / "landcover"
RUNS = ("fit", "fine_tune", "probe", "fastai_frozen", "fastai_fine_tune")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="folder with labels.csv, images/")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--n", type=int, default=None, help="use a seeded subset of N chips")
    p.add_argument("--arch", default="efficientnet_lite2")
    p.add_argument("--size", type=int, default=None, help="default: the backbone's")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--split-seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {RUNS}")
    p.add_argument("--name", default="", help="suffix for the result files")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------- the parent


def prepare(args, work: Path) -> tuple[Path, dict]:
    """The data folder the runs read (a seeded subset when --n), and the split every run uses."""
    from threeline import ImageData

    root = args.data
    if args.n is not None:
        lines = (args.data / "labels.csv").read_text().splitlines()
        rng = np.random.default_rng(0)
        keep = sorted(rng.permutation(len(lines) - 1)[: args.n] + 1)
        root = work / "data"
        (root / "images").mkdir(parents=True)
        for i in keep:
            name = lines[i].split(",")[0]
            (root / "images" / f"{name}.jpg").symlink_to(args.data / "images" / f"{name}.jpg")
        (root / "labels.csv").write_text("\n".join([lines[0], *(lines[i] for i in keep)]) + "\n")
    data = ImageData.from_csv(root, "labels.csv", folder="images", label_delim=" ",
                              seed=args.split_seed)
    split = {"classes": data.classes,
             "train": [[str(f), list(r)] for f, r in zip(data.train.files, data.train.labels,
                                                         strict=True)],
             "valid": [[str(f), list(r)] for f, r in zip(data.valid.files, data.valid.labels,
                                                         strict=True)]}
    for f in split["train"] + split["valid"]:  # every run starts with the files in memory
        Path(f[0]).read_bytes()
    return root, split


def run_child(spec: dict, work: Path) -> dict:
    path = work / f"{spec['run']}-s{spec['seed']}.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, __file__, "--child", str(path)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        return {"run": spec["run"], "seed": spec["seed"], "error": done.stderr[-600:]}
    return json.loads(path.with_suffix(".out.json").read_text())


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        return child(args.child)
    import torch

    from threeline.vision.weights import resolve, weights_file

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    runs = [r for r in args.runs.split(",") if r]
    unknown = set(runs) - set(RUNS)
    if unknown:
        raise SystemExit(f"Unknown runs {sorted(unknown)}; choose from {RUNS}.")
    spec = resolve(args.arch)
    weights = str(weights_file(spec))  # converted once, off every clock
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    results = []
    with tempfile.TemporaryDirectory(prefix="multilabel-") as tmp:
        work = Path(tmp)
        root, split = prepare(args, work)
        (work / "split.json").write_text(json.dumps(split))
        for seed in range(args.seeds):
            for run in runs:
                if run == "probe":
                    continue  # computed inside the fit run of seed 0
                spec_json = {"run": run, "seed": seed, "device": device, "root": str(root),
                             "arch": args.arch, "timm_name": spec.timm_name, "weights": weights,
                             "size": args.size, "epochs": args.epochs, "split_seed":
                             args.split_seed, "batch_size": args.batch_size,
                             "split": str(work / "split.json"), "cache": str(work / "cache"),
                             "probe": "probe" in runs and run == "fit" and seed == 0}
                result = run_child(spec_json, work)
                results.append(result)
                print(summary_line(result, split), flush=True)
                write_report(args, device, split, results, started)  # kept if stopped later


# ----------------------------------------------------------------- the children


def child(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    split = json.loads(Path(spec["split"]).read_text())
    if spec["run"].startswith("fastai"):
        out = fastai_run(spec, split)
    else:
        out = threeline_run(spec, split)
    out.update(run=spec["run"], seed=spec["seed"])
    spec_path.with_suffix(".out.json").write_text(json.dumps(out))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def threeline_run(spec: dict, split: dict) -> dict:
    import torch

    from threeline import ImageData, Learner

    if spec["device"].startswith("cuda"):
        torch.zeros(1, device=spec["device"])  # CUDA context, off the clock
    cache = Path(spec["cache"]) / f"{spec['run']}-{spec['seed']}"  # empty: precompute is paid
    start = time.perf_counter()
    data = ImageData.from_csv(spec["root"], "labels.csv", folder="images", label_delim=" ",
                              size=spec["size"], seed=spec["split_seed"],
                              batch_size=spec["batch_size"])
    learn = Learner.pretrained(spec["arch"], data, precompute=spec["run"] == "fit",
                               device=spec["device"], seed=spec["seed"], cache_dir=cache,
                               progress=False)
    learn.checkpoint_dir = False
    if spec["run"] == "fit":
        learn.fit(0.01, spec["epochs"])
    else:
        learn.augment = "top_down"
        learn.fine_tune(spec["epochs"])
    _sync(spec["device"])
    seconds = time.perf_counter() - start
    assert [str(f) for f in data.valid.files] == [f for f, _ in split["valid"]]
    out = {"time_s": seconds, "probs": learn.predict().tolist(), "history": learn.history,
           "recipe": (f"fit(0.01, {spec['epochs']}), precompute" if spec["run"] == "fit"
                      else f"augment='top_down'; fine_tune({spec['epochs']})")}
    if spec["probe"]:
        x_train, _ = learn.features("train")
        x_valid, _ = learn.features("valid")
        y_train = np.asarray(data.train.labels)
        out["probe"] = probe(x_train.cpu().numpy(), y_train, x_valid.cpu().numpy())
    return out


def probe(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray) -> dict:
    """One-vs-rest logistic regression, C per label by 3-fold log-loss; valid probabilities."""
    start = time.perf_counter()
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_valid - mean) / std
    cs = [0.001, 0.01, 0.1, 1.0]
    try:
        from sklearn.linear_model import LogisticRegressionCV

        probs = np.stack([LogisticRegressionCV(Cs=cs, cv=3, scoring="neg_log_loss",
                                               max_iter=3000).fit(a, y_train[:, j])
                          .predict_proba(b)[:, 1] for j in range(y_train.shape[1])], 1)
        how = "scikit-learn LogisticRegressionCV"
    except ImportError:
        probs, how = _torch_logreg_cv(a, y_train, b, cs), "torch L-BFGS, 3-fold CV"
    return {"probs": probs.tolist(), "time_s": time.perf_counter() - start, "how": how}


def _torch_logreg_cv(a: np.ndarray, y: np.ndarray, b: np.ndarray, cs: list[float]) -> np.ndarray:
    """sklearn's objective (C * sum log-loss + |w|^2 / 2), per label, C by 3-fold log-loss."""
    import torch

    x, t, xv = (torch.tensor(v, dtype=torch.float64) for v in (a, y, b))
    folds = np.arange(len(x)) % 3
    np.random.default_rng(0).shuffle(folds)

    def fit(xs, ts, c):
        w = torch.zeros(xs.shape[1], ts.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(ts.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, bias], max_iter=500, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                xs @ w + bias, ts, reduction="sum") * c + (w * w).sum() / 2
            loss.backward()
            return loss
        opt.step(closure)
        return w.detach(), bias.detach()

    losses = np.zeros((len(cs), y.shape[1]))
    for i, c in enumerate(cs):
        for k in range(3):
            tr, te = torch.tensor(folds != k), torch.tensor(folds == k)
            w, bias = fit(x[tr], t[tr], c)
            losses[i] += torch.nn.functional.binary_cross_entropy_with_logits(
                x[te] @ w + bias, t[te], reduction="none").mean(0).numpy()
    best = losses.argmin(0)
    out = np.zeros((len(xv), y.shape[1]))
    for i, c in enumerate(cs):
        labels = np.flatnonzero(best == i)
        if len(labels):
            w, bias = fit(x, t[:, labels], c)
            out[:, labels] = torch.sigmoid(xv @ w + bias).numpy()
    return out


def fastai_run(spec: dict, split: dict) -> dict:
    import stand_ins

    stand_ins.install()
    import fastai
    import torch
    from fastai.vision.all import (
        DataBlock,
        ImageBlock,
        IndexSplitter,
        MultiCategoryBlock,
        Resize,
        accuracy_multi,
        aug_transforms,
        set_seed,
        vision_learner,
    )

    from threeline.vision.weights import resolve

    if spec["device"].startswith("cuda"):
        torch.zeros(1, device=spec["device"])
    size = spec["size"] or resolve(spec["arch"]).size or 224
    classes = split["classes"]
    set_seed(spec["seed"])
    start = time.perf_counter()
    pairs = split["train"] + split["valid"]
    files = [Path(f) for f, _ in pairs]
    tags = {Path(f): [c for c, on in zip(classes, row, strict=True) if on] for f, row in pairs}

    def label_of(path):  # no annotations: fastai dispatches on them
        return tags[path]

    tuned = spec["run"] == "fastai_fine_tune"
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock(vocab=classes)), get_items=lambda _: files,
        get_y=label_of, splitter=IndexSplitter(list(range(len(split["train"]), len(files)))),
        item_tfms=Resize(size),
        batch_tfms=aug_transforms(flip_vert=True, max_lighting=0.1, max_zoom=1.05,
                                  max_warp=0.0) if tuned else None)
    dls = block.dataloaders(spec["root"], bs=spec["batch_size"],
                            device=torch.device(spec["device"]))
    learn = vision_learner(dls, spec["timm_name"], metrics=accuracy_multi, pretrained=True,
                           pretrained_cfg_overlay=dict(file=spec["weights"]))
    if spec["device"].startswith("cuda"):
        learn = learn.to_bf16()
    with learn.no_bar(), learn.no_logging():
        if tuned:
            learn.fine_tune(spec["epochs"])
        else:
            learn.fit_one_cycle(spec["epochs"], 1e-2)
    _sync(spec["device"])
    seconds = time.perf_counter() - start
    with learn.no_bar(), learn.no_logging():
        probs, _ = learn.get_preds()  # sigmoid applied (BCEWithLogitsLossFlat's activation)
    return {"time_s": seconds, "probs": probs.float().numpy().tolist(), "size": size,
            "fastai_version": fastai.__version__,
            "recipe": ("aug_transforms(flip_vert=True, max_lighting=0.1, max_zoom=1.05, "
                       f"max_warp=0); fine_tune({spec['epochs']})" if tuned
                       else f"fit_one_cycle({spec['epochs']}, 1e-2), frozen body")}


# ----------------------------------------------------------------- scoring and the report


def score(probs: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """F2 at 0.5, cross-fitted and tuned; per-label F1 at the cross-fitted thresholds."""
    from threeline.vision import label_scores as scores

    halves = np.array_split(np.random.default_rng(0).permutation(len(targets)), 2)
    preds = np.zeros(targets.shape, dtype=bool)
    for fit_on, apply_to in (halves, halves[::-1]):
        t = scores.tune_thresholds(probs[fit_on], targets[fit_on])
        preds[apply_to] = scores.decide(probs[apply_to], t)
    tuned = scores.tune_thresholds(probs, targets)
    per_label = scores.label_metrics(preds, targets, classes)
    return {"f2_05": scores.fbeta_samples(probs, targets, 0.5),
            "f2_cross": float(scores.fbeta_per_sample(preds, targets).mean()),
            "f2_tuned": scores.fbeta_samples(probs, targets, tuned),
            "f1": {c: per_label[c]["f1"] for c in classes}}


def summary_line(result: dict, split: dict) -> str:
    if "error" in result:
        return f"{result['run']} seed {result['seed']}: FAILED {result['error'][-300:]}"
    targets = np.asarray([r for _, r in split["valid"]])
    s = score(np.asarray(result["probs"]), targets, split["classes"])
    return (f"{result['run']} seed {result['seed']}: F2 {s['f2_05']:.4f} at 0.5, "
            f"{s['f2_cross']:.4f} cross-fitted, {s['f2_tuned']:.4f} tuned; "
            f"{result['time_s']:.1f} s")


def _med(values: list[float], digits: int = 4, scale: float = 1.0) -> str:
    v = np.asarray(values) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.median(v):.{digits}f} ({v.min():.{digits}f}-{v.max():.{digits}f})"


def write_report(args, device: str, split: dict, results: list[dict], started: str) -> Path:
    import platform

    import torch

    classes, targets = split["classes"], np.asarray([r for _, r in split["valid"]])
    rows: dict[str, list[tuple[dict, float]]] = {}
    recipes = {}
    for r in results:
        if "error" in r:
            continue
        rows.setdefault(r["run"], []).append((score(np.asarray(r["probs"]), targets, classes),
                                              r["time_s"]))
        recipes[r["run"]] = r["recipe"]
        if "probe" in r:
            rows.setdefault("probe", []).append((score(np.asarray(r["probe"]["probs"]), targets,
                                                       classes), r["probe"]["time_s"]))
            recipes["probe"] = (f"one-vs-rest logistic regression on the fit run's cached "
                                f"activations ({r['probe']['how']}); time: the regression only")
    machine = (torch.cuda.get_device_name(0).lower().replace(" ", "-") if device == "cuda"
               else f"cpu-{os.cpu_count()}core")
    times = {k: float(np.median([t for _, t in v])) for k, v in rows.items()}
    lines = [f"# Multi-label landcover: threeline vs a probe and fastai ({machine})", "",
             f"- started {started}; `python3 benchmarks/multilabel.py "
             f"{' '.join(sys.argv[1:])}`",
             f"- data: {args.data} ({len(split['train'])} train + {len(split['valid'])} valid "
             f"chips{', a seeded subset of ' + str(args.n) if args.n else ''}; split seed "
             f"{args.split_seed}); labels {', '.join(classes)}",
             f"- backbone `{args.arch}`, size {args.size or 'default'}, batch {args.batch_size}, "
             f"{args.seeds} training seed(s); device {device} ({platform.processor() or ''}), "
             f"torch {torch.__version__}",
             "- F2: sample-averaged; at 0.5; cross-fitted thresholds (tuned on one half of the "
             "validation set, applied to the other, and back); tuned on all of it (optimistic). "
             "Per-label F1 at the cross-fitted thresholds. Median (range) over seeds.",
             "- time: reading the labels to the trained model, empty activation cache, "
             "imports and weight conversion excluded.", "",
             "| run | recipe | F2 at 0.5 | F2 cross-fitted | F2 tuned | "
             + " | ".join(f"F1 {c}" for c in classes) + " | time (s) |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in classes) + " | --- |"]
    for run in RUNS:
        if run not in rows:
            continue
        scores = [s for s, _ in rows[run]]
        lines.append(
            f"| {run} | {recipes[run]} | {_med([s['f2_05'] for s in scores])} | "
            f"{_med([s['f2_cross'] for s in scores])} | {_med([s['f2_tuned'] for s in scores])}"
            " | " + " | ".join(_med([s['f1'][c] for s in scores], 3) for c in classes)
            + f" | {_med([t for _, t in rows[run]], 1)} |")
    for ours, theirs in (("fit", "fastai_frozen"), ("fine_tune", "fastai_fine_tune")):
        if ours in times and theirs in times:
            lines.append(f"\nTime ratio {ours} / {theirs}: {times[ours] / times[theirs]:.2f}")
    failed = [r for r in results if "error" in r]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {r['run']} seed {r['seed']}: "
                                         f"`{r['error'].strip().splitlines()[-1]}`"
                                         for r in failed]
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.name}" if args.name else ""
    stem = f"multilabel-{machine}-{date.today().isoformat()}{suffix}"
    path = args.out / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(  # probabilities kept, to score again
        {"classes": classes, "valid": split["valid"], "runs": results}, default=str))
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
