"""Small real folders: the three lines and fine_tune against a linear probe and fastai 2.8.

    python3 benchmarks/small_data.py --device cpu --seeds 5 --skip-fastai
    python3 benchmarks/small_data.py --device cuda --arch efficientnet_lite2 --out DIR
    python3 benchmarks/small_data.py --cases dogscats-20,cifar10-50 --seeds 2 --runs fit

Cases (``--cases``; ``small_cases.py`` builds them from ``--data-root`` as folders of links):
ants vs bees; Dogs vs Cats at 20/50/100 training images per class; CIFAR-10 at 50 and 100 per
class (32 px); single-tag landcover chips and Dogs vs Cats shrunk to 64 px (low-resolution
tiles, upsampled by the learner); ``dogscats-1000`` (2,000 training images) is not small: it
checks that larger folders lose nothing. Each seed draws its own training images (and seeds the
training); the validation images of a source are fixed.

Runs (``--runs``), each in its own process:

- ``fit``: the three lines, ``ImageData.from_folder(folder)``, ``Learner.pretrained(arch, data,
  precompute=True, seed=seed)``, ``learn.fit(0.01, 3)``; timed from the folder scan to the
  trained model. The activation cache is shared by the runs of a sweep (``<work>/cache``), so a
  seed computes its training images' activations and finds the validation ones of its source
  cached after the first. In the same process, on the same cached activations:
  ``probe``: scikit-learn's ``LogisticRegressionCV`` on standardized activations, C among
  1e-4 ... 1e2 (7 values) chosen by 5-fold stratified cross-validation on the training images
  (log-loss); the regression's time alone. ``two_layer``: the same ``fit(0.01, 3)`` with
  ``hidden=512``, the head every folder got before small folders got a solved linear head.
- ``fine_tune``: ``Learner.pretrained(arch, data, augment=..., seed=seed)`` (``side_on``;
  ``top_down`` for satellite chips), ``learn.fine_tune(--fine-tune-epochs)``; its accuracy
  is that of what ``predict`` then returns (on these folders, with test-time augmentation:
  the ``tta`` row), the plain view's is kept in the records.

``--size`` sets threeline's input size (default: the library's choice: 1.3x the network's own
on folders this small, ``threeline.vision.small_folder``); e.g. ``--size 224`` for lite0's own.
- ``fastai``: fastai 2.8's ``vision_learner`` on the same files, ``aug_transforms()``,
  ``fine_tune(--fastai-epochs)`` (its defaults otherwise; the same local weights).

Writes ``small_data-<machine>-<date>[-name].md`` and ``.json`` under ``--out`` after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

import small_cases

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNS = ("fit", "fine_tune", "fastai")
METHODS = ("fit", "two_layer", "probe", "fine_tune", "fastai")
DEFAULT_CASES = ",".join(c for c in small_cases.CASES if c != "dogscats-1000")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=DEFAULT_CASES,
                   help=f"comma-separated, of {', '.join(small_cases.CASES)}")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--arch", default=None,
                   help="default: efficientnet_lite0 on cpu, efficientnet_lite2 on cuda")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {RUNS}")
    p.add_argument("--skip-fastai", action="store_true", help="leave out the fastai runs")
    p.add_argument("--size", type=int, default=None,
                   help="input size of threeline's runs (default: the library's choice, "
                   "1.3x the network's own on these small folders)")
    p.add_argument("--fine-tune-epochs", type=int, default=3)
    p.add_argument("--fastai-epochs", type=int, default=3)
    p.add_argument("--fine-tune-seeds", type=int, default=None,
                   help="fine_tune and fastai runs for the first N seeds only (default: all)")
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=None,
                   help="case folders and the activation cache (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--name", default="", help="suffix for the result files")
    p.add_argument("--from-json", nargs="+", type=Path, metavar="JSON",
                   help="no runs: one report from the records of earlier sweeps (--cases "
                   "orders it; pass --device and --arch as they ran)")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.arch = args.arch or ("efficientnet_lite2" if args.device.startswith("cuda")
                              else "efficientnet_lite0")
    return args


# ----------------------------------------------------------------- the parent


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        return child(args.child)
    if args.from_json:
        records = [r for f in args.from_json for r in json.loads(f.read_text())]
        print(write_report(args, records, "from " + ", ".join(map(str, args.from_json))))
        return None
    cases = [c for c in args.cases.split(",") if c]
    runs = [r for r in args.runs.split(",") if r and not (args.skip_fastai and r == "fastai")]
    unknown = (set(cases) - set(small_cases.CASES)) | (set(runs) - set(RUNS))
    if unknown:
        raise SystemExit(f"Unknown cases or runs {sorted(unknown)}; cases: "
                         f"{', '.join(small_cases.CASES)}; runs: {', '.join(RUNS)}.")
    sys.path.insert(0, str(REPO / "src"))
    from threeline.vision.weights import resolve, weights_file

    spec = resolve(args.arch)
    weights = str(weights_file(spec))  # converted once, off every clock
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="small-data-") as tmp:
        work = args.work or Path(tmp)
        for seed in range(args.seeds):
            for case in cases:
                folder, n_train, n_valid = small_cases.build(case, seed, args.data_root, work)
                for name in (folder / "train").rglob("*"):  # files in the page cache
                    if name.is_file():
                        name.read_bytes()
                for run in runs:
                    if run != "fit" and args.fine_tune_seeds is not None \
                            and seed >= args.fine_tune_seeds:
                        continue
                    job = {"run": run, "case": case, "seed": seed, "folder": str(folder),
                           "device": args.device, "arch": args.arch, "weights": weights,
                           "timm_name": spec.timm_name, "cache": str(work / "cache"),
                           "augment": small_cases.CASES[case].augment,
                           "epochs": (args.fine_tune_epochs if run == "fine_tune"
                                      else args.fastai_epochs),
                           "n_train": n_train, "n_valid": n_valid, "size": args.size}
                    result = run_child(job, work)
                    records.extend(result)
                    for r in result:
                        print(line(r), flush=True)
                    write_report(args, records, started)


def run_child(job: dict, work: Path) -> list[dict]:
    """Run one job in a fresh process; its records (or one record of its failure)."""
    path = work / "jobs" / f"{job['case']}-{job['run']}-s{job['seed']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO / "src"), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, __file__, "--child", str(path)], env=env,
                          capture_output=True, text=True)
    base = {k: job[k] for k in ("case", "seed", "n_train", "n_valid")}
    base["command"] = "python3 benchmarks/small_data.py " + " ".join(sys.argv[1:])
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        return [{**base, "method": job["run"], "error": done.stderr.strip()[-600:]}]
    return [{**base, **r} for r in json.loads(path.with_suffix(".out.json").read_text())]


def line(r: dict) -> str:
    head = f"{r['case']} seed {r['seed']} {r['method']}"
    if "error" in r:
        return f"{head}: FAILED {r['error'][-300:]}"
    return f"{head}: {100 * r['accuracy']:.2f} % in {r['seconds']:.1f} s"


# ----------------------------------------------------------------- the children


def child(path: Path) -> None:
    job = json.loads(path.read_text())
    if job["device"].startswith("cuda"):
        import torch
        torch.zeros(1, device=job["device"])  # the CUDA context, off every clock
    out = {"fit": fit_run, "fine_tune": fine_tune_run, "fastai": fastai_run}[job["run"]](job)
    path.with_suffix(".out.json").write_text(json.dumps(out))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def fit_run(job: dict) -> list[dict]:
    from threeline import ImageData, Learner

    start = time.perf_counter()
    data = ImageData.from_folder(job["folder"], verbose=False, size=job.get("size"))
    learn = Learner.pretrained(job["arch"], data, precompute=True, device=job["device"],
                               seed=job["seed"], cache_dir=job["cache"], progress=False)
    learn.checkpoint_dir = False
    learn.fit(0.01, 3)
    _sync(job["device"])
    seconds = time.perf_counter() - start
    out = [{"method": "fit", "accuracy": learn.history[-1]["accuracy"], "seconds": seconds,
            "fit_seconds": sum(r["time"] for r in learn.history),
            "size": learn.preprocess.size,
            "recipe": f"fit(0.01, 3), precompute, hidden={_hidden(learn)}, "
                      f"{learn.preprocess.size} px"}]
    two = Learner.pretrained(job["arch"], data, precompute=True, device=job["device"],
                             seed=job["seed"], cache_dir=job["cache"], progress=False,
                             hidden=512)
    two.checkpoint_dir = False
    start = time.perf_counter()
    two.fit(0.01, 3)
    _sync(job["device"])
    out.append({"method": "two_layer", "accuracy": two.history[-1]["accuracy"],
                "seconds": time.perf_counter() - start,
                "recipe": "fit(0.01, 3), precompute, hidden=512; time: the fit alone"})
    x_train, y_train = (t.cpu().numpy() for t in learn.features("train"))
    x_valid, y_valid = (t.cpu().numpy() for t in learn.features("valid"))
    out.append(probe(x_train, y_train, x_valid, y_valid))
    return out


def _hidden(learn) -> int:
    from torch import nn
    linears = [m for m in learn.head.modules() if isinstance(m, nn.Linear)]
    return linears[0].out_features if len(linears) > 1 else 0


def probe(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray,
          y_valid: np.ndarray) -> dict:
    """Logistic regression on standardized activations, C by 5-fold CV on the training set."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    scale = StandardScaler().fit(x_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes at the weakest penalties
        model = LogisticRegressionCV(Cs=np.logspace(-4, 2, 7), cv=5, scoring="neg_log_loss",
                                     max_iter=3000).fit(scale.transform(x_train), y_train)
    accuracy = float((model.predict(scale.transform(x_valid)) == y_valid).mean())
    return {"method": "probe", "accuracy": accuracy, "seconds": time.perf_counter() - start,
            "C": float(np.atleast_1d(model.C_)[0]),
            "recipe": "sklearn LogisticRegressionCV on the fit run's cached activations, "
                      "standardized; C by 5-fold CV on train (log-loss); time: the regression"}


def fine_tune_run(job: dict) -> list[dict]:
    from threeline import ImageData, Learner

    start = time.perf_counter()
    data = ImageData.from_folder(job["folder"], verbose=False, size=job.get("size"))
    learn = Learner.pretrained(job["arch"], data, augment=job["augment"], device=job["device"],
                               seed=job["seed"], cache_dir=job["cache"], progress=False)
    learn.checkpoint_dir = False
    learn.fine_tune(job["epochs"])
    _sync(job["device"])
    last = learn.history[-1]  # what predict returns: with TTA when fine_tune turned it on
    return [{"method": "fine_tune", "accuracy": last.get("tta_accuracy", last["accuracy"]),
             "plain_accuracy": last["accuracy"], "tta_views": learn.tta_views,
             "seconds": time.perf_counter() - start, "size": learn.preprocess.size,
             "recipe": f"augment={job['augment']!r}; fine_tune({job['epochs']}), "
                       f"hidden={_hidden(learn)}, {learn.preprocess.size} px; accuracy of "
                       f"predict (TTA with {learn.tta_views} copies when on; the plain "
                       f"view's in the records)"}]


def fastai_run(job: dict) -> list[dict]:
    import stand_ins

    stand_ins.install()
    import fastai
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        GrandparentSplitter,
        ImageBlock,
        Resize,
        accuracy,
        aug_transforms,
        get_image_files,
        parent_label,
        set_seed,
        vision_learner,
    )

    from threeline.vision.weights import resolve

    size = resolve(job["arch"]).size or 224
    set_seed(job["seed"])
    start = time.perf_counter()
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      get_y=parent_label, splitter=GrandparentSplitter(valid_name="valid"),
                      item_tfms=Resize(size), batch_tfms=aug_transforms())
    dls = block.dataloaders(job["folder"], bs=64, device=torch.device(job["device"]))
    learn = vision_learner(dls, job["timm_name"], metrics=accuracy, pretrained=True,
                           pretrained_cfg_overlay=dict(file=job["weights"]))
    if job["device"].startswith("cuda"):
        learn = learn.to_bf16()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(job["epochs"])
    _sync(job["device"])
    assert (len(dls.train_ds), len(dls.valid_ds)) == (job["n_train"], job["n_valid"])
    return [{"method": "fastai", "accuracy": float(learn.recorder.values[-1][-1]),
             "seconds": time.perf_counter() - start,
             "recipe": f"vision_learner, aug_transforms(), fine_tune({job['epochs']}), "
                       f"{size} px; fastai {fastai.__version__}"}]


# ----------------------------------------------------------------- the report


def _med(values: list[float], digits: int, scale: float = 1.0) -> str:
    v = np.asarray(values, dtype=np.float64) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.median(v):.{digits}f} ({v.min():.{digits}f}-{v.max():.{digits}f})"


def machine(device: str) -> str:
    if device.startswith("cuda"):
        from compare import machine_name
        return machine_name(device)
    return f"cpu-{len(os.sched_getaffinity(0))}core"


def table(records: list[dict], cases: list[str]) -> list[str]:
    lines = ["| case | train / valid | method | accuracy % | seconds | seeds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for case in cases:
        rows = [r for r in records if r["case"] == case and "error" not in r]
        for method in METHODS:
            got = [r for r in rows if r["method"] == method]
            if got:
                lines.append(f"| {case} | {got[0]['n_train']} / {got[0]['n_valid']} | {method} | "
                             f"{_med([r['accuracy'] for r in got], 2, 100)} | "
                             f"{_med([r['seconds'] for r in got], 1)} | {len(got)} |")
    return lines


def goals(records: list[dict], cases: list[str]) -> list[str]:
    """Per case: median fit and fine_tune against the median probe, and the goal met or not."""
    lines = ["| case | probe median | fit median | fit - probe | goal fit >= probe | "
             "fine_tune median | fine_tune - probe | goal |", "| --- " * 8 + "|"]
    for case in cases:
        med = {m: float(np.median([r["accuracy"] for r in records if r["case"] == case
                                   and r["method"] == m and "error" not in r] or [np.nan]))
               for m in ("probe", "fit", "fine_tune")}
        if np.isnan(med["probe"]):
            continue
        p, f, t = (100 * med[m] for m in ("probe", "fit", "fine_tune"))
        need = p + 2 if p < 95 else p
        lines.append(
            f"| {case} | {p:.2f} | {f:.2f} | {f - p:+.2f} | {'yes' if f >= p else 'NO'} | "
            + ("- | - | - |" if np.isnan(t) else
               f"{t:.2f} | {t - p:+.2f} | {'yes' if t >= need else 'NO'} (>= {need:.2f}) |"))
    return lines


def write_report(args, records: list[dict], started: str) -> Path:
    import torch

    name = machine(args.device)
    cases = [c for c in args.cases.split(",") if c]
    recipes = {r["method"]: r["recipe"] for r in records if "recipe" in r}
    commands = sorted({r["command"] for r in records if "command" in r}
                      | {"python3 benchmarks/small_data.py " + " ".join(sys.argv[1:])})
    lines = [f"# Small folders: the three lines, fine_tune, a linear probe and fastai ({name})",
             "", f"- started {started}; " + "; ".join(f"`{c}`" for c in commands),
             f"- backbone `{args.arch}` at its default size; device {args.device} "
             f"({platform.processor() or platform.machine()}), torch {torch.__version__}",
             "- accuracy: validation accuracy after the last epoch, median (range) over seeds; "
             "each seed draws its own training images, the validation images of a source are "
             "fixed (`benchmarks/small_cases.py`).",
             "- seconds: fit: folder scan to trained model, the validation activations of the "
             "source cached by the first seed; two_layer: its fit alone, on the cache; probe: "
             "the regression alone; fine_tune, fastai: folder to trained model.", "",
             *table(records, cases), "", "Goals (medians over seeds):", "",
             *goals(records, cases), "", "Recipes:", ""]
    lines += [f"- {m}: {recipes[m]}" for m in METHODS if m in recipes]
    failed = [r for r in records if "error" in r]
    if failed:
        lines += ["", "Failed runs:"] + [
            f"- {r['case']} seed {r['seed']} {r['method']}: "
            f"`{(r['error'].strip().splitlines() or [''])[-1]}`" for r in failed]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"small_data-{name}-{date.today().isoformat()}" + (f"-{args.name}" if args.name
                                                             else "")
    path = args.out / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(records, indent=0))
    return path


if __name__ == "__main__":
    main()
