"""The ``threeline`` command: train, predict, find a learning rate and export, from a shell.

    threeline train photos/ --epochs 3 --out runs/pets
    threeline predict runs/pets new_photos/ --top-k 2
    threeline lr-find photos/
    threeline export runs/pets --onnx

Exit codes: 0 done; 1 the command failed (bad data, missing file...: one line says why);
2 wrong command-line usage; 70 an internal error (a bug: rerun with --debug for the traceback);
130 interrupted with Ctrl-C (a training run still writes what it finished).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

OK, FAILED, USAGE, INTERNAL, INTERRUPTED = 0, 1, 2, 70, 130
HEAD_LR, FINE_TUNE_LR = 1e-2, 1e-3  # fit on cached activations; fine_tune base_lr

EXAMPLES = {
    "main": """examples:
  threeline train photos/ --epochs 3 --out runs/pets
  threeline predict runs/pets new_photos/ --top-k 2
  threeline lr-find photos/
  threeline export runs/pets --onnx

Each command has its own --help.""",
    "train": """photos/ holds one folder per class (photos/cats/*.jpg, photos/dogs/*.jpg), or
train/ and valid/ folders that each hold them. Files that are not usable images are skipped.

examples:
  threeline train photos/
  threeline train photos/ --arch efficientnet_lite0 --size 224 --epochs 5 --lr 0.01
  threeline train photos/ --lr-find --fine-tune --out runs/pets

The run folder gets model.safetensors + model.json (load with Learner.load or threeline
predict), checkpoints/ (last and best weights), history.csv, confusion_matrix.png,
lr_find.png (with --lr-find) and args.json (the arguments used).""",
    "predict": """examples:
  threeline predict runs/pets photo.jpg
  threeline predict runs/pets/model.json new_photos/ more/*.png --top-k 3
  threeline predict runs/pets new_photos/ --csv > predictions.csv""",
    "lr-find": """examples:
  threeline lr-find photos/
  threeline lr-find photos/ --arch efficientnet_lite0 --size 224 --out lr.png""",
    "export": """examples:
  threeline export runs/pets --onnx                # writes runs/pets/model.onnx
  threeline export runs/pets/model --onnx pets.onnx

The ONNX model takes float32 RGB pixels in [0, 1], shape (batch, 3, size, size), resized
so the shorter side is size / crop_pct then center-cropped, and returns probabilities.""",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``threeline`` command with ``argv`` (default: the process's arguments).

    Returns the exit code (see the module docstring).

    Example:
        >>> main(["--version"])  # doctest: +ELLIPSIS
        threeline ...
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version or a usage error
        return int(exit_.code or 0)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if not getattr(args, "command", None):
        parser.print_help()
        return USAGE
    try:
        _check_device(getattr(args, "device", None))
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("threeline: interrupted.", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if args.debug:
            raise
        expected = _expected_errors()
        code = FAILED if isinstance(err, expected) else INTERNAL
        message = " ".join(str(err).split()) or type(err).__name__
        hint = "" if code == FAILED else f" ({type(err).__name__}; rerun with --debug for details)"
        print(f"threeline: error: {message}{hint}", file=sys.stderr)
        return code


def _check_device(device: str | None) -> None:
    import torch

    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available here. Leave --device out "
                         f"or pass --device cpu.")


def _expected_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (ValueError, OSError, ImportError, torch.OutOfMemoryError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all commands.

    Example:
        >>> build_parser().parse_args(["predict", "runs/pets", "a.jpg"]).top_k
        1
    """
    from threeline import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks instead of one-line errors")
    parser = argparse.ArgumentParser(
        prog="threeline", description="Train image classifiers on folders of images.",
        epilog=EXAMPLES["main"], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"threeline {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_, description=help_, parents=[common],
                                   epilog=EXAMPLES[name],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    train = command("train", "Train a classifier on a folder of images; write a run folder.")
    train.add_argument("dir", metavar="DIR", help="folder of images, one sub-folder per class")
    _data_options(train)
    train.add_argument("--epochs", type=_positive(int), default=3, help="epochs (default 3)")
    train.add_argument("--lr", type=_positive(float), default=None,
                       help=f"peak learning rate (default: the lr finder's suggestion with "
                            f"--lr-find, else {HEAD_LR}, or {FINE_TUNE_LR} with --fine-tune)")
    train.add_argument("--lr-find", action="store_true",
                       help="run the learning-rate finder first; write lr_find.png")
    train.add_argument("--fine-tune", action="store_true",
                       help="train the head, then the whole network (slower, more accurate)")
    train.add_argument("--out", type=Path, default=None,
                       help="run folder to write (default runs/<DIR name>-<date-time>)")
    train.set_defaults(run=cmd_train)

    predict = command("predict", "Predict the classes of images with a trained model.")
    predict.add_argument("model", metavar="MODEL",
                         help="a run folder, or the model's .json / .safetensors file")
    predict.add_argument("paths", metavar="FILES_OR_DIRS", nargs="+",
                         help="image files and folders (searched recursively)")
    predict.add_argument("--top-k", type=_positive(int), default=1,
                         help="rows per image: the k most likely classes (default 1)")
    predict.add_argument("--csv", action="store_true", help="write CSV instead of a table")
    predict.add_argument("--output", "-o", type=Path, default=None,
                         help="write CSV to this file instead of printing")
    predict.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    predict.add_argument("--batch-size", type=_positive(int), default=64, help="default 64")
    predict.set_defaults(run=cmd_predict)

    finder = command("lr-find", "Find a good learning rate; write the plot and suggest one.")
    finder.add_argument("dir", metavar="DIR", help="folder of images, one sub-folder per class")
    _data_options(finder)
    finder.add_argument("--out", type=Path, default=Path("lr_find.png"),
                        help="the plot's PNG file (default lr_find.png)")
    finder.set_defaults(run=cmd_lr_find)

    export = command("export", "Export a trained model to ONNX.")
    export.add_argument("model", metavar="MODEL",
                        help="a run folder, or the model's .json / .safetensors file")
    export.add_argument("--onnx", metavar="PATH", nargs="?", const="", required=True,
                        help="write ONNX (default PATH: next to the model, .onnx)")
    export.set_defaults(run=cmd_export)
    return parser


def _data_options(parser: argparse.ArgumentParser) -> None:
    from threeline.vision.images import MAX_PIXELS
    from threeline.vision.weights import DEFAULT_ARCH

    parser.add_argument("--arch", default=DEFAULT_ARCH,
                        help=f"backbone: efficientnet_lite0/1/2 work offline, or any timm "
                             f"model name (default {DEFAULT_ARCH})")
    parser.add_argument("--size", type=_positive(int), default=None,
                        help="image size in pixels (default: the backbone's own)")
    parser.add_argument("--batch-size", type=_positive(int), default=64, help="default 64")
    parser.add_argument("--valid-pct", type=float, default=0.2,
                        help="share held out for validation when there is no valid/ folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default: from the CPU count)")
    parser.add_argument("--max-pixels", type=_positive(int), default=MAX_PIXELS,
                        help=f"skip images with more pixels, a guard against decompression "
                             f"bombs (default {MAX_PIXELS:,})")


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


# --------------------------------------------------------------------------- commands


def _learner(args: argparse.Namespace):
    from threeline import ImageData, Learner

    data = ImageData.from_folder(args.dir, size=args.size, valid_pct=args.valid_pct,
                                 seed=args.seed, batch_size=args.batch_size,
                                 num_workers=args.workers, max_pixels=args.max_pixels)
    print(data, flush=True)
    return Learner.pretrained(args.arch, data, precompute=True, device=args.device,
                              seed=args.seed)


def cmd_train(args: argparse.Namespace) -> int:
    """``threeline train``: fit, then write the run folder. Returns the exit code.

    Example:
        >>> main(["train", "photos/", "--epochs", "1"])  # doctest: +SKIP
        0
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{Path(args.dir).resolve().name}-{stamp}"
    if (out / "model.json").exists():
        raise FileExistsError(f"{out} already holds a trained model. Pass another --out, or "
                              f"delete that folder first.")
    learn = _learner(args)
    out.mkdir(parents=True, exist_ok=True)
    learn.checkpoint_dir = out / "checkpoints"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("run", "debug", "argv")}
    lr = args.lr
    if args.lr_find:
        result = learn.lr_find()
        _save_plot(result.plot, out / "lr_find.png")
        print(f"lr finder: suggested learning rate {result.suggestion:.2e} "
              f"(plot: {out / 'lr_find.png'})", flush=True)
        lr = lr or float(result.suggestion)
    lr = lr or (FINE_TUNE_LR if args.fine_tune else HEAD_LR)
    _write_json(out / "args.json", {**settings, "lr_used": lr,
                                    "command": ["threeline", *args.argv]})
    interrupted = False
    learn.interrupted = False
    try:
        if args.fine_tune:
            learn.fine_tune(args.epochs, base_lr=lr)
        else:
            learn.fit(lr, args.epochs)
    except KeyboardInterrupt:
        interrupted = True
        learn._interrupted()
    interrupted = interrupted or bool(getattr(learn, "interrupted", False))
    if not learn.history:
        print(f"threeline: no epoch finished; nothing saved but {out / 'args.json'}.",
              file=sys.stderr)
        return INTERRUPTED if interrupted else FAILED
    learn.save(out / "model")
    _write_history(out / "history.csv", learn.history)
    written = ["model.safetensors", "model.json", "checkpoints/", "history.csv"]
    try:
        learn.interpret().plot_confusion_matrix(save=out / "confusion_matrix.png")
        written.append("confusion_matrix.png")
    except Exception as err:  # the model is saved; a missing plot is not worth failing the run
        print(f"threeline: could not draw the confusion matrix: {err}", file=sys.stderr)
    written += ["lr_find.png"] if args.lr_find else []
    written.append("args.json")
    print(f"Saved to {out}/: {', '.join(written)}")
    print(f"Predict with: threeline predict {out} IMAGES...")
    return INTERRUPTED if interrupted else OK


def cmd_predict(args: argparse.Namespace) -> int:
    """``threeline predict``: print or write file, label, probability rows.

    Example:
        >>> main(["predict", "runs/pets", "photo.jpg"])  # doctest: +SKIP
        file       label  probability
        photo.jpg  cats   0.9731
        0
    """
    import numpy as np

    from threeline import Learner
    from threeline.vision.data import skipped_summary
    from threeline.vision.images import BadImageError, probe_image

    files = _image_files(args.paths)
    good, skipped = [], {}
    for path in files:
        try:
            probe_image(path)
            good.append(path)
        except BadImageError as err:
            skipped[path] = err.reason
    if skipped:
        print(skipped_summary(skipped, Path.cwd(), len(files), where=None), file=sys.stderr)
    if not good:
        raise ValueError("None of the files given is a usable image; nothing to predict.")
    learn = Learner.load(args.model, device=args.device, progress=False)
    learn.data.batch_size = args.batch_size
    probs = np.exp(learn.predict(good))  # (N, C)
    k = min(args.top_k, probs.shape[1])
    rows = []
    for path, p in zip(good, probs, strict=True):
        for c in np.argsort(-p, kind="stable")[:k]:
            rows.append((str(path), learn.classes[c], float(p[c])))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", newline="", encoding="utf-8") as f:
            _write_csv(f, rows)
        print(f"Wrote {len(rows)} rows to {args.output}", file=sys.stderr)
    elif args.csv:
        _write_csv(sys.stdout, rows)
    else:
        _print_table(rows)
    return OK


def cmd_lr_find(args: argparse.Namespace) -> int:
    """``threeline lr-find``: run the learning-rate finder, write its plot, print the rate.

    Example:
        >>> main(["lr-find", "photos/", "--out", "lr.png"])  # doctest: +SKIP
        0
    """
    learn = _learner(args)
    result = learn.lr_find()
    _save_plot(result.plot, args.out)
    print(f"suggested learning rate: {result.suggestion:.2e}")
    print(f"plot: {args.out}")
    print(f"use it: threeline train {args.dir} --lr {result.suggestion:.2e}")
    return OK


def cmd_export(args: argparse.Namespace) -> int:
    """``threeline export MODEL --onnx [PATH]``: write the model as ONNX.

    Example:
        >>> main(["export", "runs/pets", "--onnx"])  # doctest: +SKIP
        0
    """
    from threeline import Learner
    from threeline.saving import model_paths

    learn = Learner.load(args.model, device="cpu", progress=False)
    target = Path(args.onnx) if args.onnx else model_paths(args.model)[0].with_suffix(".onnx")
    path = learn.export_onnx(target)
    print(f"Wrote {path} (input: float32 RGB pixels in [0, 1], shape (batch, 3, "
          f"{learn.preprocess.size}, {learn.preprocess.size}); output: probabilities of "
          f"{len(learn.classes)} classes)")
    return OK


# --------------------------------------------------------------------------- helpers


def _image_files(paths: Sequence[str]) -> list[Path]:
    from threeline.vision.images import expand_items

    def empty(folder: Path) -> None:
        print(f"threeline: no images in {folder}", file=sys.stderr)

    return expand_items(list(paths), on_empty_folder=empty)


def _save_plot(plot, path: Path) -> None:
    plot(save=path)


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")


def _write_history(path: Path, history: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _write_csv(stream, rows: list[tuple[str, str, float]]) -> None:
    writer = csv.writer(stream)
    writer.writerow(["file", "label", "probability"])
    writer.writerows((f, label, f"{p:.6f}") for f, label, p in rows)


def _print_table(rows: list[tuple[str, str, float]]) -> None:
    width_file = max(len("file"), *(len(r[0]) for r in rows))
    width_label = max(len("label"), *(len(r[1]) for r in rows))
    print(f"{'file':<{width_file}}  {'label':<{width_label}}  probability")
    for file, label, p in rows:
        print(f"{file:<{width_file}}  {label:<{width_label}}  {p:.4f}")


if __name__ == "__main__":
    sys.exit(main())
