"""Folders -> splits: which sub-folders are splits and which are classes, the files of each
class (headers checked, broken files skipped), and what the scan noticed.

Split folders are recognised whatever their case: train/training, valid/validation/val,
test/testing. Run folders that ``threeline train`` writes are never read as classes or images.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from threeline.vision.images import (
    IMAGE_EXTENSIONS,
    BadImageError,
    check_complete,
    is_system_file,
    pixel_limit,
    quick_probe,
    read_header,
)

TRAIN_NAMES = ("train", "training")
VALID_NAMES = ("valid", "val", "validation")
TEST_NAMES = ("test", "testing")
SPLIT_ROLES = {**dict.fromkeys(TRAIN_NAMES, "train"), **dict.fromkeys(VALID_NAMES, "valid"),
               **dict.fromkeys(TEST_NAMES, "test")}
RUN_MARKER = ".threeline-run"  # the file ``threeline train`` puts in every run folder

@dataclass
class Split:
    """The files of one split and their labels: indices into ``classes``, or for multi-label
    data one tuple of 0/1 per file (a multi-hot row, see :mod:`threeline.vision.tables`)."""

    files: list[Path]
    labels: list[int]  # or list[tuple[int, ...]] when multi-label

    def __len__(self) -> int:
        return len(self.files)

    def drop(self, paths: Sequence[Path]) -> None:
        """Remove ``paths`` (and their labels) in place, e.g. files that failed to decode."""
        gone = set(map(Path, paths))
        kept = [(f, y) for f, y in zip(self.files, self.labels, strict=True) if f not in gone]
        self.files[:] = [f for f, _ in kept]
        self.labels[:] = [y for _, y in kept]

    def counts(self, classes: Sequence[str]) -> dict[str, int]:
        """Images per class (multi-label: images carrying each label)."""
        if self.labels and isinstance(self.labels[0], tuple):  # multi-hot rows
            totals = np.asarray(self.labels, dtype=np.int64).sum(0)  # (L,)
            return {name: int(totals[i]) for i, name in enumerate(classes)}
        counter = Counter(self.labels)
        return {name: counter.get(i, 0) for i, name in enumerate(classes)}


def _subfolders(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and not holds_runs(p))
    except PermissionError as err:
        raise PermissionError(
            f"The folder {folder} cannot be read (permission denied). Give your user read "
            f"access (e.g. chmod -R u+rX {folder}) or copy the images somewhere readable."
        ) from err


def is_run_folder(folder: Path) -> bool:
    """True for a folder that ``threeline train`` wrote (``--out``): never read as data.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> is_run_folder(demo_path() / "train")
        False
    """
    return ((folder / RUN_MARKER).exists() or (folder / "model.json").is_file()
            or (folder / "checkpoints" / "last.json").is_file())


def holds_runs(folder: Path) -> bool:
    """A run folder, or a folder holding nothing but run folders (``runs/``)."""
    if is_run_folder(folder):
        return True
    found = False
    try:
        for child in folder.iterdir():  # stops at the first photo of a class folder
            if is_system_file(child):
                continue
            if not (child.is_dir() and is_run_folder(child)):
                return False
            found = True
    except OSError:
        return False
    return found


def _split_folders(root: Path) -> tuple[Path | None, Path | None, list[str]]:
    """(train folder, validation folder, notes) from split folders named in any case.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> _split_folders(demo_path())[:2] == (demo_path() / "train", demo_path() / "valid")
        True
    """
    roles: dict[str, list[Path]] = {}
    for name in _subfolders(root):
        role = SPLIT_ROLES.get(name.lower())
        if role is not None and _looks_like_split(root / name):
            roles.setdefault(role, []).append(root / name)
    for role, found in roles.items():
        if len(found) > 1:
            raise ValueError(
                f"{root} has {len(found)} folders for the {role} split: "
                f"{', '.join(p.name + '/' for p in found)}. Keep one: merge or move the others.")
    train, valid, test = (roles.get(r, [None])[0] for r in ("train", "valid", "test"))
    if train is None:
        if valid is not None or test is not None:
            other = valid or test
            raise ValueError(
                f"{root} has a {other.name}/ folder of classes but no train/ (or training/) "
                f"folder. Put the training images in {root / 'train'}/<class>/.")
        return None, None, []
    notes = []
    if valid is None and test is not None:
        valid = test
        notes.append(f"No validation folder: {test.name}/ is used as the validation set.")
    elif test is not None:
        notes.append(f"{test.name}/ is not used: {train.name}/ trains and {valid.name}/ "
                     f"validates (keep {test.name}/ for a final check).")
    return train, valid, notes


def _looks_like_split(folder: Path) -> bool:
    """A split folder holds class folders; a class that happens to be called "test" holds
    images of its own."""
    try:
        return not any(p.is_file() and not is_system_file(p) for p in folder.iterdir())
    except OSError:
        return True


def _class_names(folder: Path, notes: list[str] | None = None) -> list[str]:
    classes = _subfolders(folder)
    if notes is not None:
        notes += _nested_class_notes(folder, classes)
    if not classes:
        raise ValueError(
            f"No class folders found in {folder}. Expected one sub-folder per class, e.g. "
            f"{folder}/cats/*.jpg and {folder}/dogs/*.jpg."
        )
    if len(classes) == 1:
        raise ValueError(
            f"Only one class folder ({classes[0]!r}) found in {folder}; a classifier needs at "
            f"least two. Add a folder for each other class."
        )
    return classes


def _nested_class_notes(folder: Path, classes: list[str]) -> list[str]:
    """A note when class folders hold only sub-folders: perhaps the classes sit one level
    deeper (e.g. a folder of split folders that were not recognised)."""
    nested = []
    for name in classes:
        subs: list[str] | None = []
        try:
            for entry in (folder / name).iterdir():  # stops at the first file
                if is_system_file(entry):
                    continue
                if not entry.is_dir():
                    subs = None
                    break
                subs.append(entry.name)
        except OSError:
            continue
        if subs:
            nested.append((name, sorted(subs)))
    if not nested:
        return []
    shown = "; ".join(f"{name}/ holds {', '.join(s + '/' for s in subs[:4])}"
                      f"{' ...' if len(subs) > 4 else ''}" for name, subs in nested[:3])
    more = f" and {len(nested) - 3} more" if len(nested) > 3 else ""
    return [f"Class folders that hold only sub-folders, no images of their own: {shown}{more}. "
            f"Each is read as one class with all its sub-folders' images; if the sub-folders "
            f"are the classes, point at the folder that holds them instead."]


class _Scanner:
    """Finds the image files of class folders, checking each header; collects what it skips."""

    def __init__(self, max_pixels: int | None):
        self.max_pixels = max_pixels
        self.skipped: dict[Path, str] = {}
        self.sizes: list[tuple[int, int]] = []
        self.seen = 0
        self.runs: list[Path] = []  # run folders found inside class folders, not read

    def notes(self) -> list[str]:
        if not self.runs:
            return []
        shown = ", ".join(str(p) for p in self.runs[:3])
        return [f"Ignored {len(self.runs)} run folder(s) inside the data ({shown}): what "
                f"threeline train writes is never read as images."]

    def __call__(self, folder: Path, classes: list[str], known_from: Path | None = None) -> Split:
        unknown = [c for c in _subfolders(folder) if c not in classes]
        if unknown:
            raise ValueError(
                f"{folder} has class folders not in {known_from}: {', '.join(unknown)}. Every "
                f"validation class needs training images: add them, or remove those folders."
            )
        candidates: list[tuple[Path, int]] = []
        for label, name in enumerate(classes):
            if known_from is not None and not (folder / name).is_dir():
                continue  # a class without a validation folder: see _validation_gaps
            candidates += [(path, label) for path in self._files(folder / name)]
        # One file after another: threads fought over the interpreter lock at every read and
        # were slower (Dogs vs Cats, 10,000 files in the page cache, 2 cores: 0.32-0.54 s in one
        # thread, 0.62-1.26 s in 2, 4 or 8)
        with pixel_limit(self.max_pixels):
            results = [self._probe(path) for path, _ in candidates]
        files, labels = [], []
        for (path, label), size in zip(candidates, results, strict=True):
            if size is not None:
                files.append(path)
                labels.append(label)
                self.sizes.append(size)
        return Split(files, labels)

    def _files(self, class_dir: Path) -> list[Path]:
        """Candidate image files under ``class_dir``, recursively; other files are skipped."""
        found: list[Path] = []

        def unreadable(err: OSError) -> None:
            self.skipped[Path(err.filename or class_dir)] = "folder cannot be read"

        for top, dirs, names in os.walk(class_dir, onerror=unreadable):
            folder = Path(top)
            runs = [d for d in dirs if not d.startswith(".") and holds_runs(folder / d)]
            self.runs += [folder / d for d in runs]
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in runs)
            for name in names:
                path = folder / name
                if is_system_file(path):
                    continue
                self.seen += 1
                if not os.path.isfile(top + os.sep + name):
                    if path.is_symlink():
                        self.skipped[path] = "broken link"
                    continue
                suffix = path.suffix.lower()
                if suffix not in IMAGE_EXTENSIONS:
                    self.skipped[path] = f"not an image file ({suffix or 'no extension'})"
                    continue
                found.append(path)
        return sorted(found, key=lambda p: p.parts)  # Path order, computed faster

    def _probe(self, path: Path) -> tuple[int, int] | None:
        try:
            size, complete = quick_probe(path, self.max_pixels)  # one open for most photos
            size = size or read_header(path, self.max_pixels)
            if not complete:  # no end marker: decode it once to be sure
                check_complete(path, self.max_pixels)
            return size
        except BadImageError as err:
            self.skipped[path] = err.reason
            return None

    def size_stats(self) -> dict[str, tuple[int, int]]:
        """(width, height) of the smallest, the median and the largest image by pixel count:
        sizes of real images, never a width of one with the height of another."""
        if not self.sizes:
            return {}
        sizes = np.asarray(self.sizes)  # (N, 2)
        order = np.argsort(sizes[:, 0] * sizes[:, 1], kind="stable")
        picks = {"smallest": order[0], "median": order[(len(order) - 1) // 2],
                 "largest": order[-1]}
        return {k: (int(sizes[i, 0]), int(sizes[i, 1])) for k, i in picks.items()}


def skipped_summary(skipped: dict[Path, str], root: Path, total: int | None = None,
                    show: int = 3, where: str | None = "data.skipped",
                    limit: str = "max_pixels") -> str:
    """One line: how many files were skipped, and the first few with their reasons.

    Example:
        >>> bad = {Path("a/b.txt"): "not an image file (.txt)"}
        >>> skipped_summary(bad, Path("a"), 5)  # doctest: +ELLIPSIS
        'Skipped 1 of 5 files (not usable images): b.txt (not an image file (.txt)). ...'
    """
    n = len(skipped)
    out_of = f" of {total}" if total else ""
    noun = "file (not a usable image)" if n == 1 and not total else "files (not usable images)"
    items = sorted(skipped.items())[:show]
    shown = "; ".join(f"{show_path(_relative(p, root))} ({r})" for p, r in items)
    more = f"; and {n - show} more" if n > show else ""
    hint = ""
    if any(r.startswith("too large") for r in skipped.values()):
        hint = f" To keep very large images, pass a higher {limit}."
    listed = f" The full list with reasons is in {where}." if where else ""
    return f"Skipped {n}{out_of} {noun}: {shown}{more}.{listed}{hint}"


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def print_failure(path: str, reason: str) -> None:
    """One line on stderr for a file that failed to decode where no ``data.skipped`` lists it.

    Example:
        >>> import contextlib
        >>> with contextlib.redirect_stderr(sys.stdout):
        ...     print_failure("a/b.jpg", "truncated")
        Could not decode a/b.jpg: truncated. A gray image stood in for it.
    """
    print(f"Could not decode {show_path(Path(path))}: {reason}. A gray image stood in for it.",
          file=sys.stderr, flush=True)


def show_path(path: Path) -> str:
    """A path that prints on any terminal (undecodable bytes escaped).

    Example:
        >>> show_path(Path("photos/cat.jpg"))
        'photos/cat.jpg'
    """
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _split(split: Split, valid_pct: float, seed: int) -> tuple[Split, Split]:
    """Per class, hold out round(valid_pct * n) files chosen by a seeded permutation."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(split.labels)
    valid_idx: list[int] = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n_valid = min(len(idx) - 1, max(1, round(valid_pct * len(idx)))) if len(idx) > 1 else 0
        valid_idx += rng.permutation(idx)[:n_valid].tolist()
    in_valid = np.zeros(len(labels), dtype=bool)
    in_valid[valid_idx] = True

    def pick(mask: np.ndarray) -> Split:
        ids = np.flatnonzero(mask)
        return Split([split.files[i] for i in ids], [split.labels[i] for i in ids])

    return pick(~in_valid), pick(in_valid)


def _validation_gaps(classes: list[str], train: Split, valid: Split,
                     valid_dir: Path | None) -> list[str]:
    """A note naming the classes (of ``train``) without validation images, why, and what the
    accuracy then measures."""
    counts = valid.counts(classes)
    missing = [c for c, n in counts.items() if n == 0]
    if not missing:
        return []
    in_train = train.counts(classes)

    def why(name: str) -> str:
        if valid_dir is None:
            n = in_train[name]
            return f"{name} ({n} image{'s' if n != 1 else ''}, all kept for training)"
        if not (valid_dir / name).is_dir():
            return f"{name} ({valid_dir.name}/ has no {name}/ folder)"
        return f"{name} ({valid_dir.name}/{name}/ holds no usable image)"

    shown = ", ".join(why(c) for c in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    covered = len(classes) - len(missing)
    return [f"No validation images for {len(missing)} of {len(classes)} classes: "
            f"{shown}{more}. The validation loss and accuracy measure the other {covered} "
            f"class{'es' if covered != 1 else ''} only and say nothing about these; add "
            f"validation images for them."]
