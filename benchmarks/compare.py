"""threeline, fastai and a PyTorch-tutorial loop, side by side, on one machine in one sweep.

    python benchmarks/compare.py --preset cpu           # small settings for a 2-core CPU
    python benchmarks/compare.py --preset gpu --data-root .gpu/data --out-dir results/

Every run is a fresh process (``run_one.py``) that trains one framework once on one task and
mode with one seed; all runs get the same files, image size, epochs, backbone and weights.
Seeds are the outer loop and the framework order rotates from seed to seed, so a slow spell of
the machine does not always hit the same framework. After every run the markdown table under
``--out-dir`` (``<machine>-<date>.md``) and the raw records (``.json``) are rewritten, so a sweep
cut short still leaves its figures. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import report
from common import Selection, Spec, cpu_count, read_all, select_files

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

PRESETS = {
    "cpu": dict(data_root=str(REPO.parent / "shared" / "data"), tasks="hymenoptera",
                arch="efficientnet_lite0", size=160, epochs=2, finetune_epochs=1, seeds=3,
                finetune_seeds=3, batch_size=16, max_train=80, max_valid=60, device="cpu",
                budget_s=1200),
    "gpu": dict(data_root=str(REPO / ".gpu" / "data"), tasks="dogscats,hymenoptera",
                arch="efficientnet_lite2", size=260, epochs=3, finetune_epochs=2, seeds=3,
                finetune_seeds=3, batch_size=64, max_train=None, max_valid=None, device="cuda",
                budget_s=480, keep_logs=True),
}
DEFAULTS = dict(modes="frozen,finetune", frameworks="threeline,fastai,torch", lr=1e-2,
                finetune_lr=2e-3, torch_lr=1e-2,
                warm_cache=True, tta=True, name=None, out_dir=str(HERE / "results"),
                keep_logs=False)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="default settings (every option below overrides its part)")
    p.add_argument("--data-root", help="folder that holds one folder per task")
    p.add_argument("--tasks", help="comma-separated task folders under --data-root; missing ones "
                   "are skipped with a note")
    p.add_argument("--modes", help="frozen,finetune")
    p.add_argument("--frameworks", help="threeline,fastai,torch")
    p.add_argument("--arch", help="efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2")
    p.add_argument("--size", type=int, help="image size (pixels, square)")
    p.add_argument("--epochs", type=int, help="frozen mode: epochs of head training")
    p.add_argument("--finetune-epochs", type=int,
                   help="finetune mode: epochs after the one frozen epoch (fine_tune(N))")
    p.add_argument("--seeds", type=int, help="repeats of the frozen runs (seeds 0..N-1)")
    p.add_argument("--finetune-seeds", type=int, help="repeats of the finetune runs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="frozen mode, threeline and fastai (one-cycle peak)")
    p.add_argument("--finetune-lr", type=float,
                   help="fastai's fine_tune base_lr (threeline's fine_tune keeps its defaults)")
    p.add_argument("--torch-lr", type=float, help="SGD learning rate of the tutorial loop")
    p.add_argument("--max-train", type=int, help="use a seeded, class-balanced subset of train")
    p.add_argument("--max-valid", type=int, help="the same for valid")
    p.add_argument("--device", help="cpu | cuda")
    p.add_argument("--budget-s", type=float,
                   help="stop starting repeats that would end after this many seconds")
    p.add_argument("--no-warm-cache", dest="warm_cache", action="store_false", default=None,
                   help="skip the extra threeline run on a warm activation cache")
    p.add_argument("--no-tta", dest="tta", action="store_false", default=None)
    p.add_argument("--name", help="machine name for the result file (default: from the device)")
    p.add_argument("--out-dir", help="where the .md and .json go (default benchmarks/results)")
    p.add_argument("--keep-logs", action="store_true", default=None,
                   help="copy each run's output to <out-dir>/logs/ (on by default on the GPU)")
    p.add_argument("--from-json", nargs="+", metavar="JSON",
                   help="no runs: rebuild one table from the raw records of earlier sweeps")
    args = p.parse_args(argv)
    for key, value in {**DEFAULTS, **PRESETS[args.preset]}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


# ------------------------------------------------------------------------- the machine

def machine_name(device: str) -> str:
    if device.startswith("cuda"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout
            gpu = out.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            gpu = "cuda"
        return re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    return f"cpu-{cpu_count()}core"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_weights(arch: str) -> tuple[str, str]:
    """(timm name, local weights file), converting the weights once, before any run."""
    sys.path.insert(0, str(REPO / "src"))
    from threeline.vision.weights import resolve, weights_file

    spec = resolve(arch)
    path = weights_file(spec)
    if path is None:
        raise SystemExit(f"{arch} has no offline weights; use one of the efficientnet_lite names.")
    return spec.timm_name, str(path)


# ------------------------------------------------------------------------- the sweep

def plan(args, tasks: list[str]) -> list[tuple[str, str, str, int, bool]]:
    """(task, mode, framework, seed, warm) in run order: seeds outermost, frameworks rotated."""
    modes = args.modes.split(",")
    frameworks = args.frameworks.split(",")
    runs = []
    for seed in range(max(args.seeds, args.finetune_seeds)):
        turn = frameworks[seed % len(frameworks):] + frameworks[:seed % len(frameworks)]
        for task in tasks:
            for mode in modes:
                if seed >= (args.seeds if mode == "frozen" else args.finetune_seeds):
                    continue
                for framework in turn:
                    runs.append((task, mode, framework, seed, False))
                    if framework == "threeline" and mode == "frozen" and args.warm_cache:
                        runs.append((task, mode, framework, seed, True))
    return runs


def child_env() -> dict:
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO / "src")])
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def run_child(spec: Spec, work: Path, index: int, timeout: float | None) -> dict:
    warm = "-warm" if spec.warm_cache else ""
    tag = f"{index:03d}-{spec.task}-{spec.mode}-{spec.framework}{warm}-s{spec.seed}"
    spec_path, result_path = work / f"{tag}.spec.json", work / f"{tag}.result.json"
    log_path = work / "logs" / f"{tag}.log"
    log_path.parent.mkdir(exist_ok=True)
    spec_path.write_text(json.dumps(asdict(spec)))
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run([sys.executable, str(HERE / "run_one.py"), str(spec_path),
                                   str(result_path)], stdout=log, stderr=subprocess.STDOUT,
                                  env=child_env(), timeout=timeout, cwd=REPO)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code == 0 and result_path.exists():
        return {"status": "ok", **json.loads(result_path.read_text())}
    tail = log_path.read_text()[-3000:]
    print(f"  FAILED ({code}); last lines of {log_path}:\n{tail}", flush=True)
    return {"status": f"failed ({code})", "spec": asdict(spec), "log_tail": tail[-600:]}


def header(args, tasks: dict[str, Selection], runs: list[dict], load: tuple, started: str) -> str:
    ok = [r for r in runs if r.get("status") == "ok"]
    first = ok[0] if ok else {}
    versions = {r.get("fastai_version") for r in ok} - {None}
    stand_ins = sorted({s for r in ok for s in r.get("stand_ins", [])})
    device = first.get("device_name", args.device)
    machine, commands = args.machine, args.commands  # set by write()
    lines = [
        f"# threeline vs fastai vs a PyTorch-tutorial loop — {args.name}, {started[:10]}",
        "",
        f"- machine: {device + ', ' if args.device.startswith('cuda') else ''}"
        f"{machine['cpu']}, {machine['cores']} CPU cores; device `{args.device}`"
        + (f"; load average at start / end: {load[0]:.2f} / {load[1]:.2f}" if load else ""),
        f"- software: Python {first.get('python', platform.python_version())}, torch "
        f"{first.get('torch_version', '?')}, timm {first.get('timm_version', '?')}, fastai "
        f"{', '.join(sorted(versions)) or '?'}"
        + (f" (with stand-ins for the unused {', '.join(stand_ins)}: "
           f"see benchmarks/stand_ins.py)" if stand_ins else ""),
        f"- backbone: `{args.arch}` (timm `{args.timm_name}`), the same local ImageNet weights "
        f"for all; image size {args.size}; batch size {args.batch_size}",
        f"- frozen: {args.epochs} epochs, lr {args.lr:g} (threeline, fastai), SGD lr "
        f"{args.torch_lr:g} (tutorial loop); finetune: fine_tune({args.finetune_epochs}), fastai "
        f"with base_lr {args.finetune_lr:g} (1 frozen + {args.finetune_epochs} unfrozen "
        f"epochs), threeline with its own defaults (see What ran)",
        f"- repeats: {args.seeds} seeds frozen, {args.finetune_seeds} finetune"
        + (f"; time budget {args.budget_s:g} s" if args.budget_s else ""),
    ]
    for name, sel in tasks.items():
        lines.append(f"- data `{name}`: {len(sel.train)} train / {len(sel.valid)} valid images, "
                     f"classes {', '.join(sel.classes)}"
                     + (f" (seeded subset: --max-train {args.max_train} --max-valid "
                        f"{args.max_valid})" if args.max_train or args.max_valid else ""))
    lines += [f"- command: `python benchmarks/compare.py {c}`" for c in commands]
    return "\n".join(lines)


def write(args, tasks, runs, load, started, skipped) -> Path:
    args.machine = getattr(args, "machine", None) or {"cpu": cpu_model(), "cores": cpu_count()}
    args.commands = getattr(args, "commands", None) or [" ".join(sys.argv[1:])]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{args.name}-{started[:10]}"
    stem.with_suffix(".json").write_text(json.dumps(
        {"args": {k: v for k, v in vars(args).items() if k != "from_json"},
         "tasks": {k: {"train": len(v.train), "valid": len(v.valid), "classes": v.classes}
                   for k, v in tasks.items()},
         "load": load, "started": started, "skipped": skipped, "runs": runs}, indent=1))
    path = stem.with_suffix(".md")
    path.write_text(report.markdown(runs, header(args, tasks, runs, load, started), skipped))
    return path


def rebuild(args) -> None:
    """One table from the records of one or more earlier sweeps (e.g. one per GPU call)."""
    runs, tasks, skipped, commands = [], {}, [], []
    for name in args.from_json:
        raw = json.loads(Path(name).read_text())
        runs += raw["runs"]
        skipped += raw.get("skipped", [])
        started = raw["started"]
        for key, value in raw["args"].items():
            if key not in ("out_dir", "name") or getattr(args, key, None) is None:
                setattr(args, key, value)
        commands += raw["args"].get("commands") or []
        for task, info in raw["tasks"].items():
            tasks[task] = Selection("", info["classes"], [("", 0)] * info["train"],
                                    [("", 0)] * info["valid"])
    args.name = args.name or machine_name(args.device)
    args.commands = commands or None
    print(f"wrote {write(args, tasks, runs, None, started, skipped)}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.from_json:
        return rebuild(args)
    args.name = args.name or machine_name(args.device)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    args.timm_name, weights = resolve_weights(args.arch)
    tasks: dict[str, Selection] = {}
    work = Path(tempfile.mkdtemp(prefix="threeline-bench-"))
    for task in args.tasks.split(","):
        root = Path(args.data_root) / task
        if not root.is_dir():
            print(f"skipping task {task}: {root} does not exist")
            continue
        selection = select_files(root, args.max_train, args.max_valid)
        selection.save(work / f"{task}.selection.json")
        tic = time.perf_counter()
        size = read_all(selection.files())
        print(f"{task}: {len(selection.train)} train / {len(selection.valid)} valid images, "
              f"{size / 2**20:.0f} MiB read once in {time.perf_counter() - tic:.1f} s")
        tasks[task] = selection
    if not tasks:
        raise SystemExit("no task found: check --data-root and --tasks")

    todo = plan(args, list(tasks))
    runs: list[dict] = []
    skipped: list[str] = []
    last: dict[tuple, float] = {}
    begin = time.perf_counter()
    load_start = os.getloadavg()[0]
    for index, (task, mode, framework, seed, warm) in enumerate(todo):
        elapsed = time.perf_counter() - begin
        key = (task, mode, framework, warm)
        what = f"{framework}{' (cache warm)' if warm else ''} {task} {mode} seed {seed}"
        if args.budget_s and seed > 0 and elapsed + last.get(key, 0.0) > args.budget_s:
            skipped.append(what)
            continue
        cache = work / f"cache-{task}-{mode}-s{seed}"  # a warm run reuses its own mode's
        spec = Spec(framework=framework, task=task, mode=mode, seed=seed, arch=args.arch,
                    timm_name=args.timm_name, weights=weights,
                    selection=str(work / f"{task}.selection.json"), size=args.size,
                    epochs=args.epochs if mode == "frozen" else args.finetune_epochs,
                    lr=args.lr, finetune_lr=args.finetune_lr, torch_lr=args.torch_lr,
                    batch_size=args.batch_size, device=args.device, cache_dir=str(cache),
                    warm_cache=warm, tta=args.tta)
        print(f"[{index + 1}/{len(todo)} {elapsed:6.0f}s] {what}", flush=True)
        tic = time.perf_counter()
        timeout = max(30.0, args.budget_s * 1.1 - elapsed) if args.budget_s else None
        result = run_child(spec, work, index, timeout)
        last[key] = time.perf_counter() - tic
        if result["status"] == "ok":
            print(f"    acc {100 * result['accuracy']:.1f}%  total {result['total_s']:.1f}s  "
                  f"{result['images_per_s']:.0f} img/s  peak {result['peak_mib']:.0f} MiB",
                  flush=True)
        if warm:
            shutil.rmtree(cache, ignore_errors=True)
        runs.append(result)
        write(args, tasks, runs, (load_start, os.getloadavg()[0]), started, skipped)
    path = write(args, tasks, runs, (load_start, os.getloadavg()[0]), started, skipped)
    if args.keep_logs:
        shutil.copytree(work / "logs", Path(args.out_dir) / "logs" / path.stem, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nwrote {path} ({time.perf_counter() - begin:.0f} s)\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
