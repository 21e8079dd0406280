"""CIFAR-10 from random weights: a threeline.models network, the library's own loop, on a GPU.

    python3 benchmarks/cifar.py --prepare /tmp/cifar10.npz     # here: pack the 50,000 JPEGs
    python3 benchmarks/cifar.py --device cuda --data cifar10.npz --out DIR

The training images are decoded once into a uint8 tensor that stays on the device; every epoch
each image gets a random crop of the reflect-padded image (`--pad`, default 4 pixels) and a
random horizontal flip, both as one batched gather on the device (no Python per image): the
library's `threeline.vision.resident.ResidentImages`, which `Learner(model, ImageData)` uses too.
Validation is a seeded 5,000-image split (500 per class) of the 50,000 training images;
accuracy with no test-time augmentation, with the mirror, and with 6 views (the image and its
mirror, each also moved by one pixel both ways). Each configuration also runs as a plain
PyTorch loop (same model instance, same data on the device, same optimizer, schedule and bf16
autocast) in the same process, to measure what the library costs over a bare loop.
`--opt sgd` trains both with SGD, Nesterov momentum 0.9 and L2 weight decay (the classic recipe)
instead of AdamW. `--arch fast_convnet` trains `threeline.models.fast_convnet` (patch
whitening computed from the first batch); `--lookahead` adds `threeline.lookahead.Lookahead`.

`--prepare OUT.npz` stores the JPEG files' bytes (about 46 MB for all 50,000, small enough to copy
to a GPU machine; decoded pixels compressed were 135 MiB), labels and class names; the run
decodes them with Pillow in worker processes (the same pixels as here).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifar_data import load, prepare, split
from threeline.learner import Learner
from threeline.lookahead import Lookahead
from threeline.losses import CrossEntropy
from threeline.models.convnet import fast_convnet
from threeline.models.resnet import fast_resnet, resnet
from threeline.vision.resident import ResidentImages

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD (Nesterov momentum 0.9, L2 weight decay)"}


# ---------------------------------------------------------------- the runs

@dataclass(frozen=True)
class Config:
    """One training run. `mode`: "library" (Learner.fit) or "plain" (the bare loop)."""

    arch: str = "fast_resnet"  # or "fast_convnet", "resnet18", ... (small-input stem)
    width: int = 64  # fast_convnet: blocks of width, 4 width, 4 width channels
    convs: int = 2  # fast_convnet: convolutions per block
    batch: int = 512
    pad: int = 4  # random crops of the reflect-padded image (pixels of padding)
    lookahead: bool = False  # threeline.lookahead.Lookahead (the bare loop does the same)
    whiten: bool = True  # fast_convnet: False keeps its random first layer (an ablation)
    epochs: int = 12
    lr: float = 4e-3
    wd: float = 0.1
    opt: str = "adamw"  # or "sgd": learn.optimizer, and the bare loop's optimizer
    smoothing: float = 0.2
    compile: bool = True
    channels_last: bool = True
    graphs: bool = False  # the learner's CUDA-graph step (data.graphable)
    checkpoints: bool = True
    seed: int = 0
    mode: str = "library"

    def name(self) -> str:
        layout = ("compiled" if self.compile else "eager") + (
            ", channels_last" if self.channels_last else ", NCHW") + (
            ", CUDA graph" if self.graphs else "")
        convs = (f", {self.convs} convs{'' if self.whiten else ', not whitened'}"
                 if self.arch == "fast_convnet" else "")
        return f"{self.arch}(w={self.width}{convs}) {layout}"


def build(cfg: Config, n_classes: int) -> nn.Module:
    if cfg.arch == "fast_resnet":
        return fast_resnet(n_classes, width=cfg.width)
    if cfg.arch == "fast_convnet":
        w = cfg.width
        return fast_convnet(n_classes, widths=(w, 4 * w, 4 * w), n_convs=cfg.convs)
    return resnet(int(cfg.arch.removeprefix("resnet")), n_classes, small_input=True,
                  width=cfg.width)


class Bench:
    """The data on the device and one model instance per architecture and layout, compiled
    once and re-initialised (in place) for every run, so later runs pay no compilation."""

    def __init__(self, data: ResidentImages, n_classes: int, device: torch.device):
        self.data, self.n_classes, self.device = data, n_classes, device
        self.models: dict[tuple, nn.Module] = {}
        self.warmup_s: dict[str, float] = {}

    def model(self, cfg: Config) -> nn.Module:
        """The model for `cfg`, freshly initialised from `cfg.seed`."""
        key = (cfg.arch, cfg.width, cfg.convs, cfg.compile, cfg.channels_last)
        if key not in self.models:
            model = build(cfg, self.n_classes).to(self.device)
            if cfg.channels_last:
                model = model.to(memory_format=torch.channels_last)
            if cfg.compile:
                model.compile(dynamic=False)
            self.models[key] = model
            start = time.perf_counter()  # compile (or cuDNN's choices) before the clock runs
            short = replace(cfg, epochs=1, checkpoints=False)
            self._init(model, short)
            run_library(self, short, model=model, quiet=True)
            run_plain(self, short, model=model)
            self.warmup_s[cfg.name()] = time.perf_counter() - start
        model = self.models[key]
        self._init(model, cfg)
        if cfg.arch == "fast_convnet" and not cfg.whiten:
            model.whiten.fitted.fill_(True)  # counts as initialised: the random filters stay
        return model

    def _init(self, model: nn.Module, cfg: Config) -> None:
        torch.manual_seed(cfg.seed)
        fresh = build(cfg, self.n_classes)
        with torch.no_grad():
            model.load_state_dict(fresh.state_dict())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# test-time views: (flip, (rows, columns) shift, weight) - the image and its mirror, then both
# moved by one pixel down-right and up-left
VIEWS = [(False, (0, 0), 0.25), (True, (0, 0), 0.25), (False, (1, 1), 0.125),
         (True, (1, 1), 0.125), (False, (-1, -1), 0.125), (True, (-1, -1), 0.125)]


def tta_accuracy(learn: Learner, data: ResidentImages, views: list) -> tuple[float, float]:
    """Validation accuracy of the weighted mean of the softmax over `views`, and its seconds."""
    sync(learn.device)
    start = time.perf_counter()
    probs, y = 0, None
    for flip, shift, weight in views:
        view = data.options(flip_valid=flip, shift_valid=shift)
        out, y = learn.get_preds(view.batches("valid", learn.device, False, 0))
        probs = probs + weight * learn.loss.activation(out)  # (N, C)
    accuracy = float((probs.argmax(1) == y).float().mean())
    sync(learn.device)
    return accuracy, time.perf_counter() - start


def run_library(bench: Bench, cfg: Config, model: nn.Module | None = None,
                quiet: bool = False) -> dict:
    """`Learner(model, data).fit(lr, epochs)`; returns times and accuracies."""
    model = model if model is not None else bench.model(cfg)
    data = bench.data.options(batch_size=cfg.batch, pad=cfg.pad)
    data.graphable = cfg.graphs
    learn = Learner(model, data, loss=CrossEntropy(label_smoothing=cfg.smoothing),
                    device=bench.device, seed=cfg.seed, progress=False)
    learn.optimizer = cfg.opt
    if not cfg.checkpoints:
        learn.checkpoint_dir = False
    callbacks = [Lookahead()] if cfg.lookahead else []
    sync(bench.device)
    start = time.perf_counter()
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            rows = learn.fit(cfg.lr, cfg.epochs, wd=cfg.wd, callbacks=callbacks)
    else:
        rows = learn.fit(cfg.lr, cfg.epochs, wd=cfg.wd, callbacks=callbacks)
    sync(bench.device)
    seconds = time.perf_counter() - start
    flip, _ = tta_accuracy(learn, data, VIEWS[:2])
    six, tta_seconds = tta_accuracy(learn, data, VIEWS)
    return {"seconds": seconds, "accuracy": rows[-1]["accuracy"], "tta_accuracy": flip,
            "tta6_accuracy": six, "tta6_seconds": tta_seconds,
            "accuracy_by_epoch": [r["accuracy"] for r in rows]}


@torch.no_grad()
def lookahead_pull(slow: list[torch.Tensor], fast: list[torch.Tensor], d: float) -> None:
    """`Lookahead.pull` written out: the bare loop uses no library code."""
    for s, f in zip(slow, fast, strict=True):
        s.lerp_(f, 1.0 - d)
        f.copy_(s)


def run_plain(bench: Bench, cfg: Config, model: nn.Module | None = None) -> dict:
    """The same training as a bare PyTorch loop: same model, batches, optimizer groups (AdamW,
    or SGD with Nesterov momentum; no decay on norms and biases), one-cycle shape, bf16
    autocast, per-epoch validation (one host wait per epoch), no checkpoints; the whitening
    filters of fast_convnet from the first batch, and the same lookahead when the run has it."""
    model = model if model is not None else bench.model(cfg)
    data, device = bench.data.options(batch_size=cfg.batch, pad=cfg.pad), bench.device
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.wd}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    opt = (torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True, fused=fused)
           if cfg.opt == "sgd" else
           torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=fused))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    total, step, accuracies = data.steps("train") * cfg.epochs, 0, []
    sync(device)
    start = time.perf_counter()
    if hasattr(model, "initialize_from") and not model.initialized:
        model.initialize_from(next(iter(data.batches("train", device, True, cfg.seed)))[0])
    fast = [t.data for t in model.state_dict(keep_vars=True).values() if t.is_floating_point()]
    slow = [t.detach().clone() for t in fast] if cfg.lookahead else []
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for x, y in data.batches("train", device, True, cfg.seed * 1_000_003 + epoch):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * one_cycle(step / total)
            with autocast:
                out = model(x)
            loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            step += 1
            if slow and (step % 5 == 0 or step == total):
                lookahead_pull(slow, fast, 0.95 ** 5 * (step / total) ** 3)
        model.eval()
        sums, count = torch.zeros(2, device=device), len(data.index["valid"])  # loss, correct
        with torch.inference_mode():
            for x, y in data.batches("valid", device, False, 0):
                with autocast:
                    out = model(x)
                sums += torch.stack([F.cross_entropy(out.float(), y, reduction="sum"),
                                     (out.argmax(1) == y).sum().float()])
        train_loss, (valid_loss, correct) = float(torch.stack(losses).mean()), sums.tolist()
        accuracies.append(correct / count)
        print(f"plain {epoch:<3d} {train_loss:.4f} {valid_loss / count:.4f} {correct / count:.4f}")
    sync(device)
    return {"seconds": time.perf_counter() - start, "accuracy": accuracies[-1],
            "accuracy_by_epoch": accuracies}


def one_cycle(progress: float, pct_start: float = 0.25, div: float = 25.0,
              div_final: float = 1e5) -> float:
    """The library's one-cycle shape (cosine warm-up, cosine annealing), written out."""
    def cos(a: float, b: float, t: float) -> float:
        return b + (a - b) * (1 + math.cos(math.pi * t)) / 2
    if progress < pct_start:
        return cos(1 / div, 1.0, progress / pct_start)
    return cos(1.0, 1 / div_final, (progress - pct_start) / (1 - pct_start))


# ---------------------------------------------------------------- the plan

def run(bench: Bench, cfg: Config, log: list[dict]) -> dict:
    print(f"\n== {cfg}", flush=True)
    result = (run_library if cfg.mode == "library" else run_plain)(bench, cfg)
    entry = {**asdict(cfg), **result}
    log.append(entry)
    print(f"-> {result['seconds']:.2f} s, accuracy {result['accuracy']:.4f}"
          + (f", with flip TTA {result['tta_accuracy']:.4f}, 6-view TTA "
             f"{result['tta6_accuracy']:.4f}" if "tta_accuracy" in result else ""), flush=True)
    return entry


def best_of(entries: list[dict]) -> dict:
    return max(entries, key=lambda e: (e["tta6_accuracy"], -e["seconds"]))


def plan(bench: Bench, base: Config, args: argparse.Namespace, log: list[dict]) -> dict:
    """Layouts, then rates, then the shortest schedule to 94 %, seeds, the bare loop."""
    cuda = bench.device.type == "cuda"
    # 1. which layout pays: eager / channels_last / compiled / CUDA graph
    if args.layouts:
        short = replace(base, epochs=args.layout_epochs)
        layouts = [replace(short, compile=False, channels_last=False),
                   replace(short, compile=False, channels_last=True),
                   replace(short, compile=cuda, channels_last=True)]
        if cuda:
            layouts.append(replace(short, compile=True, channels_last=True, graphs=True))
        fastest = min((run(bench, c, log) for c in layouts), key=lambda e: e["seconds"])
        base = replace(base, compile=fastest["compile"], channels_last=fastest["channels_last"],
                       graphs=fastest["graphs"])
    # 2. peak rate and weight decay at the base schedule
    if len(args.lrs) * len(args.wds) > 1:
        sweep = [run(bench, replace(base, lr=lr, wd=wd), log)
                 for lr in args.lrs for wd in args.wds]
        chosen = best_of(sweep)
        base = replace(base, lr=chosen["lr"], wd=chosen["wd"])
    # 3. schedule lengths, shortest first, until one reaches the target
    reached = None
    for epochs in args.epochs:
        entry = run(bench, replace(base, epochs=epochs), log)
        if entry["tta6_accuracy"] >= args.target:
            reached = entry
            break
    if reached is not None:
        base = replace(base, epochs=reached["epochs"])
        for seed in range(1, args.seeds):  # 4. more seeds of the shortest schedule
            run(bench, replace(base, seed=seed), log)
    # 5. the bare loop against the library, alternating, same seed
    for _ in range(args.repeats):
        run(bench, replace(base, mode="plain", graphs=False), log)
        run(bench, replace(base, graphs=False), log)
        run(bench, replace(base, graphs=False, checkpoints=False), log)
        if base.graphs:
            run(bench, base, log)
    return asdict(base)


# ---------------------------------------------------------------- the report

def parse_config(base: Config, text: str) -> Config:
    """'epochs=12,lr=1.5,lookahead=1' -> base with those fields."""
    fields = {f: type(v) for f, v in asdict(base).items()}
    changes = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--runs: unknown field {key!r}; fields: {sorted(fields)}")
        kind = fields[key]
        changes[key] = (value not in ("0", "false", "no") if kind is bool else kind(value))
    return replace(base, **changes)


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return "-".join(torch.cuda.get_device_name(device).lower().split()[:2])
    return f"cpu-{os.cpu_count()}core"


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def config_of(entry: dict) -> Config:
    return Config(**{k: entry.get(k, v) for k, v in asdict(Config()).items()})


def report(log: list[dict], base: dict, bench: Bench, args: argparse.Namespace,
           info: dict) -> str:
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    runs = [[e["mode"], config_of(e).name(), str(e["epochs"]), str(e.get("batch", 512)),
             str(e.get("pad", 4)),
             "yes" if e.get("lookahead") else "no", e["opt"],
             f"{e['lr']:g}", f"{e['wd']:g}", str(e["seed"]),
             "-" if e["mode"] == "plain" else "yes" if e["checkpoints"] else "no",
             f"{e['seconds']:.2f}", pct(e["accuracy"]),
             pct(e["tta_accuracy"]) if "tta_accuracy" in e else "-",
             pct(e["tta6_accuracy"]) if "tta6_accuracy" in e else "-"] for e in log]
    parts = [f"# CIFAR-10 from random weights, {info['machine']}, {date.today()}", "",
             f"`python3 benchmarks/cifar.py {' '.join(info['argv'])}`", "",
             f"torch {torch.__version__}, {info['device_name']}, {info['n_train']} training and "
             f"{info['n_valid']} validation images (seeded per-class split, seed 42), "
             f"batch {args.batch_size}, label smoothing {base['smoothing']}, "
             f"{OPTIMIZERS[base['opt']]} one-cycle. "
             "Seconds: the whole `fit` (training, per-epoch validation and, where noted, "
             "checkpoints), compilation excluded (done in a warm-up run before the clock).", ""]
    parts += ["## Time to accuracy (final accuracy of library runs; seconds of training, the "
              "test-time views' seconds apart)", ""]
    lib = [e for e in log if e["mode"] == "library"]
    rows = []
    for target in (0.94, 0.95, 0.96):
        for key, label in (("accuracy", "one view"), ("tta_accuracy", "flip TTA"),
                           ("tta6_accuracy", "6-view TTA")):
            hits = [e for e in lib if e.get(key, 0) >= target]
            fast = min(hits, key=lambda e: e["seconds"]) if hits else None
            rows.append([pct(target), label,
                         f"{fast['seconds']:.2f} s" if fast else "not reached",
                         f"{fast['epochs']} epochs, lr {fast['lr']:g}, seed {fast['seed']}, "
                         f"{config_of(fast).name()}" if fast else "-",
                         f"{fast['tta6_seconds']:.2f} s" if fast and key == "tta6_accuracy"
                         else "-"])
    parts += [table(rows, ["target", "measure", "fastest run", "run", "views' seconds"]), ""]
    same_as = ("arch", "width", "convs", "whiten", "batch", "pad", "lookahead", "opt", "lr",
               "wd", "epochs", "compile", "channels_last", "graphs")
    chosen = [e for e in lib if all(e.get(k) == base.get(k) for k in same_as)
              and e["checkpoints"]]
    if chosen:
        for key, label in (("accuracy", "one view"), ("tta_accuracy", "flip TTA"),
                           ("tta6_accuracy", "6-view TTA")):
            accs = sorted(e[key] for e in chosen)
            parts += [f"Chosen configuration over {len(accs)} run(s) (seeds), {label}: "
                      f"{', '.join(pct(a) for a in accs)}; median {pct(np.median(accs))}.", ""]
    plain = [e["seconds"] for e in log if e["mode"] == "plain"
             and all(e.get(k) == base.get(k) for k in same_as if k != "graphs")]
    for label, keep in (("library, checkpoints on", True), ("library, no checkpoints", False)):
        same = [e["seconds"] for e in lib if not e["graphs"] and e["checkpoints"] == keep
                and e["seed"] == base["seed"]
                and all(e.get(k) == base.get(k) for k in same_as if k != "graphs")]
        if plain and same:
            over = min(same) / min(plain) - 1
            parts.append(f"- Overhead over the bare loop ({label}): best {min(same):.2f} s "
                         f"against {min(plain):.2f} s = {100 * over:+.1f} % (medians "
                         f"{np.median(same):.2f} / {np.median(plain):.2f} s).")
    parts += ["", "Compile and warm-up (once per model and layout): " + ", ".join(
        f"{k}: {v:.1f} s" for k, v in bench.warmup_s.items()), "",
        "## Every run", "",
        table(runs, ["loop", "model and layout", "epochs", "batch", "pad", "lookahead",
                     "optimizer",
                     "lr", "wd", "seed", "checkpoints", "seconds", "accuracy", "flip TTA",
                     "6-view TTA"]), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prepare", type=Path, help="write the JPEGs into this .npz and stop")
    p.add_argument("--data", type=Path, default=None,
                   help="a folder of class folders or a --prepare .npz (default: ../shared)")
    p.add_argument("--n", type=int, default=None, help="images per class (default: all)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--arch", default="fast_resnet")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--pad", type=int, default=4, help="random crops' padding in pixels")
    p.add_argument("--opt", choices=["adamw", "sgd"], default="adamw",
                   help="the optimizer of the library runs and of the bare loop (sgd: Nesterov "
                        "momentum 0.9, wd is L2)")
    p.add_argument("--lrs", type=float, nargs="+", default=None,
                   help="peak rates to try (default: 2e-3 5e-3 1e-2; with --opt sgd 0.1 0.2 0.4)")
    p.add_argument("--wds", type=float, nargs="+", default=None,
                   help="weight decays to try (default: 0.05 0.2; with --opt sgd 5e-4 1e-3)")
    p.add_argument("--base-epochs", type=int, default=12)
    p.add_argument("--epochs", type=int, nargs="+", default=[8, 10, 12, 15, 18])
    p.add_argument("--target", type=float, default=0.94)
    p.add_argument("--layouts", action=argparse.BooleanOptionalAction, default=True,
                   help="time eager/channels_last/compiled/CUDA-graph first, keep the fastest "
                        "(--no-layouts: compiled + channels_last on CUDA)")
    p.add_argument("--layout-epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", choices=["plan", "one", "runs"], default="plan",
                   help="'one': a single run of the --arch/--width/--base-epochs/first lr+wd; "
                        "'runs': the --runs list")
    p.add_argument("--runs", nargs="+", default=[],
                   help="with --only runs: configurations as key=value,key=value (Config's "
                        "fields, e.g. arch=fast_convnet,epochs=12,lr=1,mode=plain); each "
                        "starts from the base configuration")
    p.add_argument("--lookahead", action="store_true", help="base configuration: Lookahead")
    p.add_argument("--graphs", action="store_true",
                   help="base configuration: the CUDA-graph step (with --no-layouts)")
    p.add_argument("--tag", default="", help="appended to the result file's name")
    args = p.parse_args(argv)
    sgd = args.opt == "sgd"
    args.lrs = args.lrs or ([0.1, 0.2, 0.4] if sgd else [2e-3, 5e-3, 1e-2])
    args.wds = args.wds or ([5e-4, 1e-3] if sgd else [0.05, 0.2])
    if args.prepare:
        prepare(args.prepare, args.data or SHARED, args.n)
        return
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    images, labels, classes = load(args.data or SHARED, args.n)
    train_idx, valid_idx = split(labels)
    data = ResidentImages(images, labels, train_idx, valid_idx, batch_size=args.batch_size,
                     valid_batch_size=500)
    print(f"{len(labels)} images decoded in {time.perf_counter() - start:.1f} s", flush=True)
    bench = Bench(data, len(classes), device)
    base = Config(arch=args.arch, width=args.width, epochs=args.base_epochs, lr=args.lrs[0],
                  wd=args.wds[0], opt=args.opt, compile=device.type == "cuda",
                  batch=args.batch_size, pad=args.pad, lookahead=args.lookahead,
                  graphs=args.graphs and device.type == "cuda")
    log: list[dict] = []
    if args.only == "one":
        run(bench, base, log)
        chosen = asdict(base)
    elif args.only == "runs":
        for text in args.runs:
            run(bench, parse_config(base, text), log)
        plain = [e for e in log if e["mode"] == "plain"]
        chosen = asdict(config_of(plain[-1]) if plain else base)
    else:
        chosen = plan(bench, base, args, log)
    info = {"machine": machine_name(device), "argv": sys.argv[1:] if argv is None else argv,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or "CPU",
            "n_train": len(train_idx), "n_valid": len(valid_idx)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cifar-{info['machine']}-{date.today()}{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps({"info": info, "chosen": chosen,
                                                     "runs": log}, indent=1))
    stem.with_suffix(".md").write_text(report(log, chosen, bench, args, info))
    print(f"\nwrote {stem}.md")


if __name__ == "__main__":
    main()
