"""The run folder of ``threeline train``: made and locked for one run at a time, never over a
run already there, and written as one set of files when training ends."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

RUN_MARKER = ".threeline-run"
RUN_FILES = ("model.json", "model.safetensors", "checkpoints/last.json", "args.json",
             "history.csv")


def default_out(data_dir: str) -> Path:
    """A new folder under runs/ named after the data and the time: runs/photos-20260101-120000."""
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


def write_run(learn, out: Path, args: argparse.Namespace, settings: dict,
              command: list[str]) -> list[str]:
    """Write the trained model and the run's records into ``out``; return the names written."""
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
    write_json(out / "args.json", {**settings, "epochs_done": len(learn.history),
                                   "interrupted": learn.interrupted, "command": command})
    written.append("args.json")
    _usual_permissions(out)
    return written


def write_json(path: Path, value: dict) -> None:
    """``threeline.saving.write_json``, imported only when a run writes."""
    from threeline import saving

    saving.write_json(path, value)


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
