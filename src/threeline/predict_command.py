"""``threeline predict``: the classes of image files with a trained model (a table or ratings
model predicts through its own application's command).

Imports what it needs (torch included) only when it runs.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from threeline.cli_checks import check_device, model_path
from threeline.commands import OK


def cmd_predict(args: argparse.Namespace) -> int:
    """``threeline predict``: print or write file, label, probability rows; a file that cannot
    be read as an image gets a row with an error instead.

    Example:
        >>> main(["predict", "runs/pets", "photo.jpg"])  # doctest: +SKIP
        file       label  probability
        photo.jpg  cats   0.9731
        0
    """
    check_device(args.device)
    model = model_path(args.model)
    if _application(model) == "threeline.tabular":
        return _predict_tables(model, args)
    if _application(model) == "threeline.collab":
        from threeline.collab.commands import predict_pairs

        return predict_pairs(model, args.paths, args.output, args.device)
    files = _image_files(args.paths)
    good, failed = _readable_images(files, args.max_pixels)
    rows = _predict_images(model, files, good, failed, args)
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


def _readable_images(files: list[Path], max_pixels: int) -> tuple[list[Path], dict[Path, str]]:
    """The files whose headers and data are complete images, and why each other one is not."""
    from threeline.vision.images import BadImageError, check_complete, pixel_limit, read_header

    good, failed = [], {}
    with pixel_limit(max_pixels):
        for path in files:
            try:
                read_header(path, max_pixels)
                check_complete(path, max_pixels)
                good.append(path)
            except BadImageError as err:
                failed[path] = err.reason
    if not good:
        first = files[0]
        raise ValueError(f"None of the {len(files)} files given is a usable image (e.g. {first}: "
                         f"{_too_large_words(failed[first])}); nothing to predict.")
    return good, failed


def _predict_images(model: str, files: list[Path], good: list[Path], failed: dict[Path, str],
                    args: argparse.Namespace) -> list[tuple[str, str, float | None, str]]:
    """Rows of file, label, probability, error for ``files``: predictions for the ``good`` ones;
    ``failed`` gains the files that fail to decode or get no probability."""
    import numpy as np

    from threeline import Learner

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
    return rows


def _too_large_words(reason: str) -> str:
    return reason + " (raise --max-pixels if you trust it)" if reason == "too large" else reason


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


def _image_files(paths: Sequence[str]) -> list[Path]:
    from threeline.vision.images import expand_items

    def empty(folder: Path) -> None:
        print(f"threeline: no images in {folder}", file=sys.stderr)

    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist (expected image files or folders "
                                    f"after MODEL).")
    return expand_items(list(paths), on_empty_folder=empty)


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
