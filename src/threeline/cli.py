"""The ``threeline`` command: train, predict, find a learning rate and export, from a shell.

    threeline train photos/ --epochs 3 --out runs/pets
    threeline predict runs/pets new_photos/ --top-k 2
    threeline lr-find photos/
    threeline export runs/pets --onnx

Exit codes: 0 done; 1 the command failed (bad data, missing file...: one line says why);
2 wrong command-line usage; 70 an internal error (a bug: rerun with --debug for the traceback);
130 interrupted with Ctrl-C (a training run still writes what it finished).

Arguments are parsed and checked before torch is imported, so ``--help`` and usage errors are
instant; each command imports what it needs.

Here: the parser and ``main``. The checks of arguments are in ``threeline.cli_checks``; the
commands in ``threeline.commands`` and ``threeline.predict_command``; the writing of a run folder
in ``threeline.run_folder``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from threeline.cli_checks import (
    DEFAULT_ARCH,
    FINE_TUNE_LR,
    HEAD_LR,
    MAX_LR,
    MAX_PIXELS,
    OFFLINE_ARCHS,
    check_arch,
    check_cache,
    check_device,
    device_arg,
    model_path,
    number_arg,
)
from threeline.commands import (
    FAILED,
    INTERNAL,
    INTERRUPTED,
    OK,
    USAGE,
    cli_words,
    cmd_export,
    cmd_lr_find,
    cmd_serve,
    cmd_train,
    silence_stdout,
)
from threeline.predict_command import cmd_predict
from threeline.run_folder import RUN_FILES, RUN_MARKER, run_folder

__all__ = [  # what threeline.cli offers, wherever it is defined
    "DEFAULT_ARCH", "FAILED", "FINE_TUNE_LR", "HEAD_LR", "INTERNAL", "INTERRUPTED", "MAX_LR",
    "MAX_PIXELS", "OFFLINE_ARCHS", "OK", "RUN_FILES", "RUN_MARKER", "USAGE", "build_parser",
    "check_arch", "check_cache", "check_device", "cli_words", "cmd_export", "cmd_lr_find",
    "cmd_predict", "cmd_serve", "cmd_train", "main", "model_path", "run_folder",
]

EXAMPLES = {
    "main": """examples:
  threeline train photos/ --epochs 3 --out runs/pets
  threeline predict runs/pets new_photos/ --top-k 2
  threeline lr-find photos/
  threeline export runs/pets --onnx
  threeline ratings ml-100k/u.data --titles ml-100k/u.item --out runs/ml
  threeline recommend runs/ml --user 196

Exit codes: 0 done, 1 failed (one line says why), 2 wrong usage, 70 internal error (a bug),
130 Ctrl-C. Each command has its own --help.""",
    "train": """photos/ holds one folder per class (photos/cats/*.jpg, photos/dogs/*.jpg), or
train/ and valid/ folders that each hold them (any case; also training/, validation/, val/;
with test/ or testing/ and no valid/, that folder validates). Files that are not usable images
are skipped and listed in the run folder's skipped.csv.

examples:
  threeline train photos/
  threeline train photos/ --arch efficientnet_lite0 --size 224 --epochs 5 --lr 0.01
  threeline train photos/ --lr-find --fine-tune --out runs/pets

--fine-tune first trains the head for --freeze-epochs epochs (default 3) on cached activations,
then the whole network for --epochs epochs: 3 + 3 = 6 epochs by default.

The run folder gets model.safetensors + model.json (for threeline predict), checkpoints/ (last
and best weights, written after every epoch), history.csv, confusion_matrix.png, lr_find.png
(with --lr-find), skipped.csv (when files were skipped) and args.json (the arguments used).
One run at a time writes to a run folder; a folder that holds a run is never overwritten.""",
    "predict": """examples:
  threeline predict runs/pets photo.jpg
  threeline predict runs/pets/model.json new_photos/ more/*.png --top-k 3
  threeline predict runs/pets/checkpoints/last new_photos/     # a run that did not finish
  threeline predict runs/pets new_photos/ --csv > predictions.csv

Files that cannot be read as images get a row with an error instead of a label.""",
    "lr-find": """examples:
  threeline lr-find photos/
  threeline lr-find photos/ --arch efficientnet_lite0 --size 224 --out plots/lr.png""",
    "export": """examples:
  threeline export runs/pets --onnx                # writes runs/pets/model.onnx
  threeline export runs/pets --onnx exported/      # writes exported/model.onnx
  threeline export runs/pets/model --onnx pets.onnx

The ONNX model takes float32 RGB pixels in [0, 1], shape (batch, 3, size, size), resized
so the shorter side is size / crop_pct then center-cropped, and returns probabilities.""",
    "serve": """examples:
  threeline serve runs/pets                    # http://127.0.0.1:8000
  threeline serve runs/pets --port 0           # a free port, printed
  threeline serve runs/pets --host 0.0.0.0     # open to the network

POST /predict takes images (multipart) and answers labels and probabilities as JSON;
GET /model describes the model, GET /health says whether it is loaded.""",
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
        code = args.run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # `threeline predict ... | head`: the reader had enough
        silence_stdout()
        return OK
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("threeline: interrupted.", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if args.debug:
            raise
        code = FAILED if isinstance(err, _expected_errors()) else INTERNAL
        message = cli_words(" ".join(str(err).split()) or type(err).__name__)
        hint = "" if code == FAILED else f" ({type(err).__name__}; rerun with --debug for details)"
        print(f"threeline: error: {message}{hint}", file=sys.stderr)
        return code


def _expected_errors() -> tuple[type[BaseException], ...]:
    torch = sys.modules.get("torch")
    oom = (torch.OutOfMemoryError,) if torch is not None else ()
    return (ValueError, OSError, ImportError, *oom)


class _Version(argparse.Action):
    """``--version``, importing the package only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from threeline.version import __version__

        print(f"threeline {__version__}")
        parser.exit()



def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all commands (imports nothing heavy).

    Example:
        >>> build_parser().parse_args(["predict", "runs/pets", "a.jpg"]).top_k
        1
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks instead of one-line errors")
    parser = argparse.ArgumentParser(
        prog="threeline", description="Train image classifiers on folders of images.",
        epilog=EXAMPLES["main"], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_, description=help_, parents=[common],
                                   epilog=EXAMPLES.get(name),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    _train_arguments(command("train", "Train a classifier on a folder of images; write a run "
                                      "folder."))
    _predict_arguments(command("predict", "Predict the classes of images with a trained model."))
    _lr_find_arguments(command("lr-find", "Find a good learning rate; write the plot and "
                                          "suggest one."))
    _export_arguments(command("export", "Export a trained model to ONNX."))

    from threeline.collab.commands import add_commands as ratings_commands  # argparse only
    from threeline.serve.cli import add_arguments as serve_arguments  # argparse only

    ratings_commands(command, number_arg, device_arg)

    serve = command("serve", "A web page and an HTTP API to try a trained model.")
    serve_arguments(serve)
    serve.set_defaults(run=cmd_serve)
    return parser


def _train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("dir", metavar="DIR", help="folder of images, one sub-folder per class "
                                                  "(or any layout, with --csv)")
    train.add_argument("--csv", type=Path, default=None,
                       help="labels from a CSV (image name, then its label or its tags; or one "
                            "0/1 column per label): several tags make a multi-label model whose "
                            "thresholds are tuned on the validation set")
    train.add_argument("--label-delim", default=None,
                       help="with --csv: what separates tags (default: guessed, e.g. a space)")
    _data_options(train)
    train.add_argument("--epochs", type=number_arg(int, 1), default=3,
                       help="epochs (default 3; with --fine-tune, of the whole network)")
    train.add_argument("--lr", type=number_arg(float, 0, MAX_LR, low_open=True), default=None,
                       help=f"peak learning rate, at most {MAX_LR:g} (default: the lr finder's "
                            f"suggestion with --lr-find, else {HEAD_LR}; with --fine-tune, the "
                            f"whole network's, default {FINE_TUNE_LR}, while the finder's "
                            f"suggestion trains the head)")
    train.add_argument("--lr-find", action="store_true",
                       help="run the learning-rate finder first; write lr_find.png")
    train.add_argument("--fine-tune", action="store_true",
                       help="train the head, then the whole network (slower, more accurate)")
    train.add_argument("--freeze-epochs", type=number_arg(int, 0), default=3,
                       help="with --fine-tune: epochs of the head alone first (default 3)")
    train.add_argument("--out", type=Path, default=None,
                       help="run folder to write (default runs/<DIR name>-<date-time>)")
    train.add_argument("--gpus", type=number_arg(int, 1), default=1,
                       help="processes, one per GPU, started with torchrun (default 1; with "
                            "--device cpu, CPU processes); the batch size is per process")
    train.set_defaults(run=cmd_train)


def _predict_arguments(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("model", metavar="MODEL",
                         help="a run folder, or the model's .json / .safetensors file")
    predict.add_argument("paths", metavar="FILES_OR_DIRS", nargs="+",
                         help="image files and folders (searched recursively)")
    predict.add_argument("--top-k", type=number_arg(int, 1), default=1,
                         help="rows per image: the k most likely classes (default 1)")
    predict.add_argument("--csv", action="store_true", help="write CSV instead of a table")
    predict.add_argument("--output", "-o", type=Path, default=None,
                         help="write CSV to this file instead of printing")
    predict.add_argument("--device", type=device_arg, default=None,
                         help="cpu, cuda, cuda:N or mps (default: CUDA when present)")
    predict.add_argument("--batch-size", type=number_arg(int, 1), default=64, help="default 64")
    _max_pixels_option(predict)
    predict.set_defaults(run=cmd_predict)


def _lr_find_arguments(finder: argparse.ArgumentParser) -> None:
    finder.add_argument("dir", metavar="DIR", help="folder of images, one sub-folder per class")
    _data_options(finder)
    finder.add_argument("--out", type=Path, default=Path("lr_find.png"),
                        help="the plot's PNG file, or a folder for lr_find.png "
                             "(default lr_find.png)")
    finder.set_defaults(run=cmd_lr_find)


def _export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("model", metavar="MODEL",
                        help="a run folder, or the model's .json / .safetensors file")
    export.add_argument("--onnx", metavar="PATH", nargs="?", const="", required=True,
                        help="write ONNX: a file, or a folder for model.onnx (default: next to "
                             "the model)")
    export.set_defaults(run=cmd_export)


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default=DEFAULT_ARCH,
                        help=f"backbone: {', '.join(OFFLINE_ARCHS)} work offline, or any timm "
                             f"model name (downloads its weights; default {DEFAULT_ARCH})")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a local weights file (.safetensors or .pth) for --arch")
    parser.add_argument("--size", type=number_arg(int, 32), default=None,
                        help="image size in pixels, at least 32 (default: the backbone's "
                        "own; 1.3x it for up to 1,000 training images)")
    parser.add_argument("--batch-size", type=number_arg(int, 2), default=64,
                        help="images per batch, at least 2 (BatchNorm needs two; default 64)")
    parser.add_argument("--valid-pct", type=number_arg(float, 0, 1, low_open=True, high_open=True),
                        default=0.2,
                        help="share held out for validation when there is no valid/ folder "
                             "(default 0.2)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--device", type=device_arg, default=None,
                        help="cpu, cuda, cuda:N or mps (default: CUDA when present)")
    parser.add_argument("--workers", type=number_arg(int, 0), default=None,
                        help="image decoding processes (default: from the CPU count)")
    _max_pixels_option(parser)


def _max_pixels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=number_arg(int, 1), default=MAX_PIXELS,
                        help=f"skip images with more pixels, a guard against decompression "
                             f"bombs (default {MAX_PIXELS:,})")


def entry() -> None:
    """The program: ``threeline ...`` and ``python -m threeline.cli ...``. Runs :func:`main` and
    exits with its code; a Ctrl-C pressed while the interpreter then shuts down ends it at once
    with that code, instead of a traceback from some library's clean-up."""
    code = main()

    def leave(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    signal.signal(signal.SIGINT, leave)
    sys.exit(code)


if __name__ == "__main__":
    entry()
