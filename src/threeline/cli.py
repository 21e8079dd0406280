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
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

OK, FAILED, USAGE, INTERNAL, INTERRUPTED = 0, 1, 2, 70, 130
HEAD_LR, FINE_TUNE_LR, MAX_LR = 1e-2, 1e-3, 10.0  # fit on cached activations; fine_tune base_lr
# The library's values, repeated so that parsing imports nothing heavy (a test checks them).
MAX_PIXELS = 200_000_000
DEFAULT_ARCH = "efficientnet_lite2"
OFFLINE_ARCHS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
RUN_MARKER = ".threeline-run"
RUN_FILES = ("model.json", "model.safetensors", "checkpoints/last.json", "args.json",
             "history.csv")

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
        _silence_stdout()
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


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _expected_errors() -> tuple[type[BaseException], ...]:
    torch = sys.modules.get("torch")
    oom = (torch.OutOfMemoryError,) if torch is not None else ()
    return (ValueError, OSError, ImportError, *oom)


class _Version(argparse.Action):
    """``--version``, importing the package only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from threeline import __version__

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

    train = command("train", "Train a classifier on a folder of images; write a run folder.")
    train.add_argument("dir", metavar="DIR", help="folder of images, one sub-folder per class "
                                                  "(or any layout, with --csv)")
    train.add_argument("--csv", type=Path, default=None,
                       help="labels from a CSV (image name, then its label or its tags; or one "
                            "0/1 column per label): several tags make a multi-label model whose "
                            "thresholds are tuned on the validation set")
    train.add_argument("--label-delim", default=None,
                       help="with --csv: what separates tags (default: guessed, e.g. a space)")
    _data_options(train)
    train.add_argument("--epochs", type=_number(int, 1), default=3,
                       help="epochs (default 3; with --fine-tune, of the whole network)")
    train.add_argument("--lr", type=_number(float, 0, MAX_LR, low_open=True), default=None,
                       help=f"peak learning rate, at most {MAX_LR:g} (default: the lr finder's "
                            f"suggestion with --lr-find, else {HEAD_LR}; with --fine-tune, the "
                            f"whole network's, default {FINE_TUNE_LR}, while the finder's "
                            f"suggestion trains the head)")
    train.add_argument("--lr-find", action="store_true",
                       help="run the learning-rate finder first; write lr_find.png")
    train.add_argument("--fine-tune", action="store_true",
                       help="train the head, then the whole network (slower, more accurate)")
    train.add_argument("--freeze-epochs", type=_number(int, 0), default=3,
                       help="with --fine-tune: epochs of the head alone first (default 3)")
    train.add_argument("--out", type=Path, default=None,
                       help="run folder to write (default runs/<DIR name>-<date-time>)")
    train.add_argument("--gpus", type=_number(int, 1), default=1,
                       help="processes, one per GPU, started with torchrun (default 1; with "
                            "--device cpu, CPU processes); the batch size is per process")
    train.set_defaults(run=cmd_train)

    predict = command("predict", "Predict the classes of images with a trained model.")
    predict.add_argument("model", metavar="MODEL",
                         help="a run folder, or the model's .json / .safetensors file")
    predict.add_argument("paths", metavar="FILES_OR_DIRS", nargs="+",
                         help="image files and folders (searched recursively)")
    predict.add_argument("--top-k", type=_number(int, 1), default=1,
                         help="rows per image: the k most likely classes (default 1)")
    predict.add_argument("--csv", action="store_true", help="write CSV instead of a table")
    predict.add_argument("--output", "-o", type=Path, default=None,
                         help="write CSV to this file instead of printing")
    predict.add_argument("--device", type=_device, default=None,
                         help="cpu, cuda, cuda:N or mps (default: CUDA when present)")
    predict.add_argument("--batch-size", type=_number(int, 1), default=64, help="default 64")
    _max_pixels_option(predict)
    predict.set_defaults(run=cmd_predict)

    finder = command("lr-find", "Find a good learning rate; write the plot and suggest one.")
    finder.add_argument("dir", metavar="DIR", help="folder of images, one sub-folder per class")
    _data_options(finder)
    finder.add_argument("--out", type=Path, default=Path("lr_find.png"),
                        help="the plot's PNG file, or a folder for lr_find.png "
                             "(default lr_find.png)")
    finder.set_defaults(run=cmd_lr_find)

    export = command("export", "Export a trained model to ONNX.")
    export.add_argument("model", metavar="MODEL",
                        help="a run folder, or the model's .json / .safetensors file")
    export.add_argument("--onnx", metavar="PATH", nargs="?", const="", required=True,
                        help="write ONNX: a file, or a folder for model.onnx (default: next to "
                             "the model)")
    export.set_defaults(run=cmd_export)

    from threeline.collab.commands import add_commands as ratings_commands  # argparse only
    from threeline.serve.cli import add_arguments as serve_arguments  # argparse only

    ratings_commands(command, _number, _device)

    serve = command("serve", "A web page and an HTTP API to try a trained model.")
    serve_arguments(serve)
    serve.set_defaults(run=cmd_serve)
    return parser


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default=DEFAULT_ARCH,
                        help=f"backbone: {', '.join(OFFLINE_ARCHS)} work offline, or any timm "
                             f"model name (downloads its weights; default {DEFAULT_ARCH})")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a local weights file (.safetensors or .pth) for --arch")
    parser.add_argument("--size", type=_number(int, 32), default=None,
                        help="image size in pixels, at least 32 (default: the backbone's own)")
    parser.add_argument("--batch-size", type=_number(int, 2), default=64,
                        help="images per batch, at least 2 (BatchNorm needs two; default 64)")
    parser.add_argument("--valid-pct", type=_number(float, 0, 1, low_open=True, high_open=True),
                        default=0.2,
                        help="share held out for validation when there is no valid/ folder "
                             "(default 0.2)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--device", type=_device, default=None,
                        help="cpu, cuda, cuda:N or mps (default: CUDA when present)")
    parser.add_argument("--workers", type=_number(int, 0), default=None,
                        help="image decoding processes (default: from the CPU count)")
    _max_pixels_option(parser)


def _max_pixels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=_number(int, 1), default=MAX_PIXELS,
                        help=f"skip images with more pixels, a guard against decompression "
                             f"bombs (default {MAX_PIXELS:,})")


def _number(kind: type, low: float, high: float | None = None, low_open: bool = False,
            high_open: bool = False):
    """An argparse type: a finite ``kind`` within [low, high] (open ends when asked)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if (isinstance(value, float) and not math.isfinite(value)) or below or above:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            span = (f"in {lo}{low:g}, {high:g}{hi}" if high is not None
                    else f"{'>' if low_open else '>='} {low:g}")
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun} {span}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


# --------------------------------------------------------------------------- checks


def check_device(device: str | None) -> None:
    """Refuse a device this machine does not have, naming ``--device``."""
    if device is None or device == "cpu":
        return
    import torch

    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: Apple's GPU is not available here. Leave --device out "
                         "or pass --device cpu.")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            have = f"{count} CUDA GPU(s)" if count else "no CUDA GPU"
            raise ValueError(f"--device {device}: this machine has {have}. Leave --device out "
                             f"or pass --device cpu.")


def check_cache() -> Path:
    """The cache folder, made and checked writable, or an error naming THREELINE_CACHE."""
    from threeline.saving import cache_dir

    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(f"The cache folder {folder} cannot be written ({err.strerror or err}). "
                      f"Set THREELINE_CACHE to a writable folder, e.g. "
                      f"THREELINE_CACHE=/tmp/threeline-cache.") from None
    return folder


def check_arch(arch: str, weights: Path | None, timeout: float = 3.0) -> None:
    """Fail fast when ``arch``'s weights would need a download that cannot happen."""
    if weights is not None:
        if not weights.is_file():
            raise FileNotFoundError(f"--weights {weights}: no such file.")
        return
    if arch in OFFLINE_ARCHS:
        return
    import timm

    offline = ", ".join(OFFLINE_ARCHS)
    if not timm.is_model(arch):
        raise ValueError(f"--arch {arch}: not a known architecture. Offline: {offline}; online, "
                         f"any timm model name (e.g. resnet50).")
    if _hub_weights_cached(arch):
        return
    flag = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if flag or not _reachable("huggingface.co", 443, timeout):
        why = "HF_HUB_OFFLINE is set" if flag else "huggingface.co cannot be reached"
        raise OSError(f"--arch {arch}: its ImageNet weights are not downloaded and {why}. "
                      f"Offline, use one of {offline} (e.g. --arch efficientnet_lite0), or "
                      f"pass a weights file with --weights FILE.")


def _hub_weights_cached(arch: str) -> bool:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return False
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(hub_id, name), str)
               for name in ("model.safetensors", "pytorch_model.bin"))


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection opens within ``timeout`` s (name lookup included)."""
    import socket

    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def model_path(spec: str) -> str:
    """Check ``MODEL`` before loading it: say what is there instead when it is not a model."""
    from threeline.saving import model_paths

    weights, meta = model_paths(spec)
    folder = Path(spec).expanduser()
    folder = folder if folder.is_dir() else weights.parent
    if folder.is_dir() and not os.access(folder, os.R_OK | os.X_OK):
        raise PermissionError(f"MODEL {spec}: the folder {folder} cannot be read (permission "
                              f"denied); fix its permissions (chmod u+rx).")
    if not weights.exists() and not meta.exists():
        last = folder / "checkpoints" / "last.json"
        if last.is_file():
            epoch = json.loads(last.read_text("utf-8")).get("epoch")
            raise FileNotFoundError(
                f"{folder} holds no final model: its training did not finish. Its last "
                f"checkpoint (after epoch {epoch}) works: threeline predict "
                f"{shlex.quote(str(folder / 'checkpoints' / 'last'))} FILES...")
        return spec  # the loader says what is missing
    for file in (weights, meta):
        try:
            with open(file, "rb"):
                pass
        except PermissionError:
            raise PermissionError(f"MODEL {spec}: {file} cannot be read (permission denied); "
                                  f"fix its permissions (chmod u+r).") from None
        except FileNotFoundError:
            pass
    return spec


# --------------------------------------------------------------------------- commands


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
    out = args.out if args.out is not None else _default_out(args.dir)
    rank = int(os.environ.get("RANK", "0")) if "WORLD_SIZE" in os.environ else None
    if args.gpus > 1 and rank is None:  # start the processes; each runs this command
        return _torchrun(args, out)
    if rank:  # not the first process: train alongside it, write and print nothing
        _silence_stdout()
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
    _write_json(out / "args.json", {**settings, "lr_used": args.lr, "command": command})
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
    _write_json(out / "args.json", {**settings, "command": command})
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
    if not learn.history:
        print(f"threeline: no epoch finished; nothing saved but {out / 'args.json'}.",
              file=sys.stderr)
        return INTERRUPTED if interrupted else FAILED
    with shielded():  # the run's files are written as one set, Ctrl-C or not
        written = _write_run(learn, out, args, settings, command)
    print(f"Saved to {out}/: {', '.join(written)}")
    print(f"Predict with: threeline predict {shlex.quote(str(out))} IMAGES...")
    return INTERRUPTED if interrupted else OK


def _write_run(learn, out: Path, args: argparse.Namespace, settings: dict,
               command: list[str]) -> list[str]:
    learn.save(out / "model")
    _write_history(out / "history.csv", learn.history)
    written = ["model.safetensors", "model.json", "checkpoints/", "history.csv"]
    if learn.data.skipped:
        _write_skipped(out / "skipped.csv", learn.data.skipped)
        written.append("skipped.csv")
    try:
        if learn.multi_label:  # per label: true/false positives and negatives
            learn.interpret().plot_confusion_counts(save=out / "label_confusion.png")
            written.append("label_confusion.png")
        else:
            learn.interpret().plot_confusion_matrix(save=out / "confusion_matrix.png")
            written.append("confusion_matrix.png")
    except Exception as err:  # the model is saved; a missing plot is not worth failing the run
        print(f"threeline: could not draw the confusion matrix: {err}", file=sys.stderr)
    written += ["lr_find.png"] if args.lr_find else []
    _write_json(out / "args.json", {**settings, "epochs_done": len(learn.history),
                                    "interrupted": learn.interrupted, "command": command})
    written.append("args.json")
    _usual_permissions(out)
    return written


def _default_out(data_dir: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{Path(data_dir).resolve().name}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


@contextlib.contextmanager
def run_folder(out: Path) -> Iterator[Path]:
    """Make ``out`` (checked writable), hold its lock for the whole run, refuse a folder that
    holds a run already; mark it as a run folder (never read as data)."""
    from filelock import FileLock, Timeout

    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; pass a folder for the run.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_MARKER).touch()
    except OSError as err:
        raise OSError(f"--out {out}: cannot write there ({err.strerror or err}); pass "
                      f"another --out.") from None
    lock = FileLock(str(out / ".threeline.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OSError(f"--out {out}: another threeline train is writing there now. Wait for "
                      f"it, or pass another --out.") from None
    try:
        _refuse_existing_run(out)
        yield out
    finally:
        lock.release()


def _refuse_existing_run(out: Path) -> None:
    held = [name for name in RUN_FILES if (out / name).exists()]
    if not held:
        return
    quoted = shlex.quote(str(out))
    if "model.json" in held or "model.safetensors" in held:
        raise FileExistsError(f"{out} already holds a trained model. Pass another --out, or "
                              f"delete that folder first.")
    if "checkpoints/last.json" in held:
        raise FileExistsError(
            f"{out} holds the checkpoints of a run that did not finish; training again would "
            f"overwrite them. Pass another --out, or predict with them: threeline predict "
            f"{shlex.quote(str(out / 'checkpoints' / 'last'))} FILES... (delete {quoted} to "
            f"reuse the name).")
    raise FileExistsError(f"{out} holds files of another run ({', '.join(held)}). Pass another "
                          f"--out, or delete that folder first.")


def cmd_predict(args: argparse.Namespace) -> int:
    """``threeline predict``: print or write file, label, probability rows; a file that cannot
    be read as an image gets a row with an error instead.

    Example:
        >>> main(["predict", "runs/pets", "photo.jpg"])  # doctest: +SKIP
        file       label  probability
        photo.jpg  cats   0.9731
        0
    """
    import numpy as np

    from threeline import Learner
    from threeline.vision.images import BadImageError, check_complete, pixel_limit, read_header

    check_device(args.device)
    model = model_path(args.model)
    if _application(model) == "threeline.tabular":
        return _predict_tables(model, args)
    if _application(model) == "threeline.collab":
        from threeline.collab.commands import predict_pairs

        return predict_pairs(model, args.paths, args.output, args.device)
    files = _image_files(args.paths)
    good, failed = [], {}
    with pixel_limit(args.max_pixels):
        for path in files:
            try:
                read_header(path, args.max_pixels)
                check_complete(path, args.max_pixels)
                good.append(path)
            except BadImageError as err:
                failed[path] = err.reason
    if not good:
        first = files[0]
        raise ValueError(f"None of the {len(files)} files given is a usable image (e.g. {first}: "
                         f"{_too_large_words(failed[first])}); nothing to predict.")
    learn = Learner.load(model, device=args.device, progress=False)
    learn.data.batch_size, learn.data.max_pixels = args.batch_size, args.max_pixels
    raw = learn.predict(good)  # (N, C) log-probabilities; multi-label: (N, L) probabilities
    probs = raw if learn.multi_label else np.exp(raw)
    for path in good:  # failed to decode after a good header
        if path in learn.data.skipped:
            failed[path] = learn.data.skipped[path]
    nan = [path for path, p in zip(good, probs, strict=True) if not np.isfinite(p).all()]
    if len(nan) == len(good):
        raise ValueError(f"The model gives no probabilities (NaN) for any image: its weights are "
                         f"damaged. Train it again, or use its checkpoints: threeline predict "
                         f"{shlex.quote(str(Path(model) / 'checkpoints' / 'last'))} FILES...")
    for path in nan:
        failed.setdefault(path, "the model gave no probability (NaN)")
    from threeline.vision.multilabel import prediction_rows

    by_file = dict(zip(good, raw, strict=True))
    rows = []
    for path in files:  # single-label: the top k; multi-label: every label above its threshold
        if path in failed:
            rows.append((str(path), "", None, _too_large_words(failed[path])))
            continue
        rows += [(*row, "") for row in prediction_rows(learn, [path], by_file[path][None],
                                                       args.top_k)]
    if failed:
        print(f"threeline: {len(failed)} of {len(files)} files could not be predicted (rows "
              f"with an error).", file=sys.stderr)
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


def _too_large_words(reason: str) -> str:
    return reason + " (raise --max-pixels if you trust it)" if reason == "too large" else reason


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


def _application(model: str) -> str | None:
    """The application that saved ``model`` (``"threeline.vision"``, ...); None when its
    description cannot be read (the image path then says what is wrong, in its order)."""
    from threeline.saving import ModelFileError, read_description

    try:
        return read_description(model).get("application")
    except (ModelFileError, OSError):
        return None


def _predict_tables(model: str, args: argparse.Namespace) -> int:
    """``threeline predict RUN new.csv [...]`` for a table model: one CSV of predictions each."""
    from threeline.tabular.cli import predict_csv

    if args.output is not None and len(args.paths) > 1:
        raise ValueError("--output names one file, but several tables were given; leave it out "
                         "to write <table>-predictions.csv beside each table.")
    for table in args.paths:
        print(f"predictions: {predict_csv(model, table, args.output, device=args.device)}")
    return OK


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


# --------------------------------------------------------------------------- helpers


def _image_files(paths: Sequence[str]) -> list[Path]:
    from threeline.vision.images import expand_items

    def empty(folder: Path) -> None:
        print(f"threeline: no images in {folder}", file=sys.stderr)

    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist (expected image files or folders "
                                    f"after MODEL).")
    return expand_items(list(paths), on_empty_folder=empty)


def _save_plot(plot, path: Path) -> None:
    plot(save=path)


def _write_json(path: Path, value: dict) -> None:
    from threeline.saving import write_json

    write_json(path, value)


def _write_history(path: Path, history: list[dict]) -> None:
    """One row per epoch; times in seconds, plain numbers."""
    from threeline.saving import atomic_write, json_safe

    columns = list(dict.fromkeys(k for row in history for k in row))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(json_safe(row) for row in history)

    atomic_write(path, write)


def _write_skipped(path: Path, skipped: dict) -> None:
    from threeline.saving import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "reason"])
            writer.writerows((str(p), r) for p, r in sorted(skipped.items()))

    atomic_write(path, write)


def _usual_permissions(out: Path) -> None:
    """The run's files readable as the user's other files are (temporary files start 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [*out.iterdir(), *(out / "checkpoints").glob("*")]:
        if path.is_file() and not path.name.startswith("."):
            with contextlib.suppress(OSError):
                os.chmod(path, 0o666 & ~mask)


def _write_csv(stream, rows: list[tuple[str, str, float | None, str]]) -> None:
    writer = csv.writer(stream)
    writer.writerow(["file", "label", "probability", "error"])
    writer.writerows((f, label, "" if p is None else f"{p:.6f}", error)
                     for f, label, p, error in rows)


def _print_table(rows: list[tuple[str, str, float | None, str]]) -> None:
    width_file = max(len("file"), *(len(r[0]) for r in rows))
    width_label = max(len("label"), *(len(r[1]) for r in rows))
    print(f"{'file':<{width_file}}  {'label':<{width_label}}  probability")
    for file, label, p, error in rows:
        if p is None:
            print(f"{file:<{width_file}}  {'-':<{width_label}}  -            failed: {error}")
        else:
            print(f"{file:<{width_file}}  {label:<{width_label}}  {p:.4f}")


if __name__ == "__main__":
    sys.exit(main())
