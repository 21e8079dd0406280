"""The commands of ``threeline`` train, lr-find, export and serve (predict: in
``threeline.predict_command``), each called by ``threeline.cli.main`` with the parsed arguments
and returning its exit code; and what the commands share with ``main``: the exit codes, the
command line's words for the library's messages.

Each command imports what it needs (torch included) only when it runs. (The examples call
``threeline.cli.main``.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from threeline.cli_checks import (
    FINE_TUNE_LR,
    HEAD_LR,
    check_arch,
    check_cache,
    check_device,
    model_path,
)
from threeline.run_folder import default_out, run_folder, write_json, write_run

OK, FAILED, USAGE, INTERNAL, INTERRUPTED = 0, 1, 2, 70, 130

# Words of the library's messages, and what they are called on the command line.
CLI_WORDS = [
    (re.compile(r"ImageData\.from_folder\(\.\.\., max_pixels=1_000_000_000\) "
                r"\(max_pixels=None for no limit\), or --max-pixels on the command line"),
     "--max-pixels 1000000000"),
    (re.compile(r"\(written by learn\.save\)"), "(written by threeline train)"),
    (re.compile(r"save the model with learn\.save"), "train it with threeline train"),
    (re.compile(r"\bdata\.skipped\b"), "the skipped files"),
    (re.compile(r"\bvalid_pct\b"), "--valid-pct"),
    (re.compile(r"\bmax_pixels\b"), "--max-pixels"),
    (re.compile(r"save the model again"), "train it again"),
    (re.compile(r" \(see \.skipped\)"), ""),
]


def cli_words(text: str) -> str:
    """A library message in the command line's words.

    Example:
        >>> cli_words("Use more images so valid_pct can hold some out.")
        'Use more images so --valid-pct can hold some out.'
    """
    for pattern, words in CLI_WORDS:
        text = pattern.sub(words, text)
    return text


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _learner(args: argparse.Namespace, out: Path | None = None):
    from threeline import ImageData, Learner
    from threeline.vision.scan import skipped_summary

    options = dict(size=args.size, valid_pct=args.valid_pct, seed=args.seed,
                   batch_size=args.batch_size, num_workers=args.workers,
                   max_pixels=args.max_pixels)
    if getattr(args, "csv", None) is not None:
        from threeline.vision.labels import cli_data

        data = cli_data(args.dir, args.csv, label_delim=args.label_delim or "auto", **options)
    else:
        data = ImageData.from_folder(args.dir, verbose=False, **options)
    learn = Learner.pretrained(args.arch, data, precompute=True, device=args.device,
                               seed=args.seed, weights=args.weights)
    print(cli_words(data.summary(learn.preprocess.size)), flush=True)  # notes included
    if data.skipped:
        where = None if out is None else str(out / "skipped.csv")
        print(cli_words(skipped_summary(data.skipped, data.root, where=where,
                                        limit="--max-pixels")), file=sys.stderr, flush=True)
    return learn


def cmd_train(args: argparse.Namespace) -> int:
    """``threeline train``: fit, then write the run folder. Returns the exit code.

    Example:
        >>> main(["train", "photos/", "--epochs", "1"])  # doctest: +SKIP
        0
    """
    check_device(args.device)
    check_cache()
    check_arch(args.arch, args.weights)
    out = args.out if args.out is not None else default_out(args.dir)
    rank = int(os.environ.get("RANK", "0")) if "WORLD_SIZE" in os.environ else None
    if args.gpus > 1 and rank is None:  # start the processes; each runs this command
        return _torchrun(args, out)
    if rank:  # not the first process: train alongside it, write and print nothing
        silence_stdout()
        with tempfile.TemporaryDirectory(prefix="threeline-rank") as private:
            return _train(args, Path(private))
    with run_folder(out):
        return _train(args, out)


def _torchrun(args: argparse.Namespace, out: Path) -> int:
    """Run this ``train`` command in ``--gpus`` processes under torchrun (one run folder)."""
    if args.device != "cpu":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < args.gpus:
            raise ValueError(f"--gpus {args.gpus}: this machine has {count} CUDA GPU(s). Pass "
                             f"--gpus {max(count, 1)}, or --device cpu for CPU processes.")
    argv = list(args.argv)
    for i, word in enumerate(argv):  # drop --gpus N / --gpus=N; name the run folder once
        if word == "--gpus":
            del argv[i:i + 2]
            break
        if word.startswith("--gpus="):
            del argv[i]
            break
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={args.gpus}", "-m", "threeline.cli", *argv, "--out", str(out)]
    print(f"Starting {args.gpus} processes: {shlex.join(command)}", flush=True)
    return subprocess.run(command).returncode


def _train(args: argparse.Namespace, out: Path) -> int:
    from threeline.checkpoints import shielded

    learn = _learner(args, out)
    learn.checkpoint_dir = out / "checkpoints"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("run", "debug", "argv")}
    command = ["threeline", *args.argv]
    write_json(out / "args.json", {**settings, "lr_used": args.lr, "command": command})
    lr, head_lr = _learning_rates(args, learn, out, settings)
    write_json(out / "args.json", {**settings, "command": command})
    interrupted = _fit(args, learn, lr, head_lr)
    if not learn.history:
        print(f"threeline: no epoch finished; nothing saved but {out / 'args.json'}.",
              file=sys.stderr)
        return INTERRUPTED if interrupted else FAILED
    with shielded():  # the run's files are written as one set, Ctrl-C or not
        written = write_run(learn, out, args, settings, command)
    print(f"Saved to {out}/: {', '.join(written)}")
    print(f"Predict with: threeline predict {shlex.quote(str(out))} IMAGES...")
    return INTERRUPTED if interrupted else OK


def _learning_rates(args: argparse.Namespace, learn, out: Path,
                    settings: dict) -> tuple[float, float | None]:
    """The peak rate and the head's (fine-tuning only), after the finder when asked; both are
    recorded in ``settings``."""
    head_lr = None
    if args.lr_find:  # the finder trains the head on cached activations: a head rate
        result = learn.lr_find()
        _save_plot(result.plot, out / "lr_find.png")
        print(f"lr finder: suggested learning rate {result.suggestion:.2e} "
              f"(plot: {out / 'lr_find.png'})", flush=True)
        head_lr = float(result.suggestion)
    if args.fine_tune:
        lr, head_lr = args.lr or FINE_TUNE_LR, head_lr or HEAD_LR
        settings["head_lr_used"] = head_lr
        print(f"Fine-tuning: {args.freeze_epochs} epoch(s) of the head on cached activations "
              f"at {head_lr:.2e}, then {args.epochs} of the whole network at up to {lr:.2e}.",
              flush=True)
    else:
        lr = args.lr or head_lr or HEAD_LR
    settings["lr_used"] = lr
    return lr, head_lr


def _fit(args: argparse.Namespace, learn, lr: float, head_lr: float | None) -> bool:
    """Train (multi-label: then tune the thresholds); return whether Ctrl-C stopped it."""
    from threeline.checkpoints import shielded

    try:
        if args.fine_tune:
            learn.fine_tune(args.epochs, base_lr=lr, freeze_epochs=args.freeze_epochs,
                            head_lr=head_lr)
        else:
            learn.fit(lr, args.epochs)
        interrupted = learn.interrupted
        if learn.multi_label and learn.history and not interrupted:
            thresholds = learn.tune_thresholds()  # per label, on the validation set
            print("Thresholds tuned on the validation set: " + ", ".join(
                f"{c} {t:.2f}" for c, t in zip(learn.classes, thresholds, strict=True)),
                flush=True)
    except KeyboardInterrupt:  # outside the loop's own handling (e.g. between two stages)
        interrupted = True
        if learn.history:
            with shielded():
                print(cli_words(learn._checkpoints.restore_last(learn)), flush=True)
    return interrupted


def cmd_lr_find(args: argparse.Namespace) -> int:
    """``threeline lr-find``: run the learning-rate finder, write its plot, print the rate.

    Example:
        >>> main(["lr-find", "photos/", "--out", "lr.png"])  # doctest: +SKIP
        0
    """
    check_device(args.device)
    check_cache()
    check_arch(args.arch, args.weights)
    target = _png_path(args.out, "lr_find.png")
    learn = _learner(args)
    result = learn.lr_find()
    _save_plot(result.plot, target)
    print(f"suggested learning rate: {result.suggestion:.2e}")
    print(f"plot: {target}")
    same = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("arch", "size", "seed")
            if getattr(args, k) is not None]
    print("use it: " + shlex.join(["threeline", "train", args.dir, *same,
                                   "--lr", f"{result.suggestion:.2e}"]))
    return OK


def _png_path(path: Path, default_name: str) -> Path:
    """A folder (or a path ending in /) gets ``default_name``; other names end in .png."""
    if path.is_dir() or str(path).endswith(os.sep):
        return path / default_name
    return path if path.suffix.lower() == ".png" else path.with_name(path.name + ".png")


def cmd_serve(args: argparse.Namespace) -> int:
    """``threeline serve RUN``: serve the page and the API until Ctrl-C."""
    from threeline.serve import serve_from_args

    serve_from_args(args)
    return OK


def cmd_export(args: argparse.Namespace) -> int:
    """``threeline export MODEL --onnx [PATH]``: write the model as ONNX.

    Example:
        >>> main(["export", "runs/pets", "--onnx"])  # doctest: +SKIP
        0
    """
    from threeline import Learner
    from threeline.saving import model_paths

    model = model_path(args.model)
    default = model_paths(model)[0].with_suffix(".onnx")
    target = Path(args.onnx) if args.onnx else default
    if args.onnx and (target.is_dir() or args.onnx.endswith(("/", os.sep))):
        target = target / default.name
    learn = Learner.load(model, device="cpu", progress=False)
    path = learn.export_onnx(target)
    print(f"Wrote {path} (input: float32 RGB pixels in [0, 1], shape (batch, 3, "
          f"{learn.preprocess.size}, {learn.preprocess.size}); output: probabilities of "
          f"{len(learn.classes)} classes)")
    return OK


def _save_plot(plot, path: Path) -> None:
    plot(save=path)
