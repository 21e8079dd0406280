"""Image folders -> labelled file lists and batches of decoded images.

Layouts understood by :meth:`ImageData.from_folder`::

    root/train/<class>/*.jpg  +  root/valid/<class>/*.jpg
    root/train/<class>/*.jpg  +  root/test/<class>/*.jpg      (test/ validates: no valid/)
    root/train/<class>/*.jpg                                  (valid split off by valid_pct)
    root/<class>/*.jpg                                        (valid split off by valid_pct)

Split folders are recognised whatever their case: train/training, valid/validation/val,
test/testing (Kaggle's ``Training/`` + ``Testing/`` included). Images are found recursively
inside each class folder. Nothing is copied or moved. Run folders that ``threeline train``
writes (``--out`` inside the data) are never read as classes or images.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from threeline.vision.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    BadImageError,
    check_complete,
    is_system_file,
    pixel_limit,
    quick_probe,
    read_header,
    too_large_hint,
)

TRAIN_NAMES = ("train", "training")
VALID_NAMES = ("valid", "val", "validation")
TEST_NAMES = ("test", "testing")
SPLIT_ROLES = {**dict.fromkeys(TRAIN_NAMES, "train"), **dict.fromkeys(VALID_NAMES, "valid"),
               **dict.fromkeys(TEST_NAMES, "test")}
RUN_MARKER = ".threeline-run"  # the file ``threeline train`` puts in every run folder


def demo_path(name: str = "dogscats") -> Path:
    """The built-in demo data: ``"dogscats"`` or ``"hymenoptera"`` (ants and bees).

    Small samples of real photos, downsized, shipped with the package.

    Example:
        >>> sorted(p.name for p in demo_path().iterdir())
        ['train', 'valid']
    """
    path = Path(__file__).parent / "demo_data" / name
    if not path.is_dir():
        names = sorted(p.name for p in path.parent.iterdir() if p.is_dir())
        raise ValueError(f"No demo data named {name!r}; available: {', '.join(names)}.")
    return path


@dataclass
class Split:
    """The files of one split and their labels: indices into ``classes``, or for multi-label
    data one tuple of 0/1 per file (a multi-hot row, see :mod:`threeline.vision.labels`)."""

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


@dataclass
class ImageData:
    """Labelled image files split into train and valid, with the image size to train at.

    Build one with :meth:`from_folder`. ``size=None`` means "the backbone's default size" (see
    :class:`threeline.weights.BackboneSpec`).
    ``skipped`` maps each file that is not a usable image to the reason, in a few words;
    ``notes`` holds what the folder scan found worth knowing (which folder validates, classes
    without validation images, folders ignored...), one line each.
    """

    root: Path
    classes: list[str]
    train: Split
    valid: Split
    size: int | None = None
    batch_size: int = 64
    num_workers: int | None = None
    skipped: dict[Path, str] = field(default_factory=dict)
    max_pixels: int | None = MAX_PIXELS
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    multi_label: bool = False  # labels are multi-hot rows (from_csv / from_df with tags)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        size: int | None = None,
        valid_pct: float = 0.2,
        seed: int = 42,
        batch_size: int = 64,
        num_workers: int | None = None,
        max_pixels: int | None = MAX_PIXELS,
        verbose: bool = True,
    ) -> ImageData:
        """Read a folder of images, one sub-folder per class.

        Every file's header is checked (fast: nothing is decoded). Files that are not usable
        images (corrupt, empty, unreadable, too large, or not images at all) are skipped and
        listed in ``data.skipped``, with one summary line printed. A JPEG or PNG that does not
        end as a complete file does is decoded once to make sure (truncated files and headers
        alone are skipped). Hidden files and file-manager litter such as ``.DS_Store`` and
        ``Thumbs.db`` are ignored silently. What else the scan noticed (the folder used for
        validation, classes without validation images, class folders that hold only
        sub-folders, run folders ignored) is printed, one line each, and kept in ``data.notes``.

        Args:
            path: the root folder (see the module docstring for the layouts understood).
            size: the square image size to train at; None uses the backbone's default size.
            valid_pct: the fraction held out per class when there is no valid/ (or val/) folder.
            seed: makes that split deterministic.
            batch_size: images per batch.
            num_workers: decoding processes; None picks from the number of CPU cores.
            max_pixels: images with more pixels are skipped, a guard against decompression
                bombs (default 200 megapixels); None for no limit.
            verbose: print the summary of skipped files and the notes (on stderr).

        Example:
            >>> data = ImageData.from_folder(demo_path(), size=224)
            >>> data.classes
            ['cats', 'dogs']
        """
        root = Path(path).expanduser()
        _check_args(root, size, valid_pct, batch_size, num_workers, max_pixels)
        train_dir, valid_dir, notes = _split_folders(root)
        scan = _Scanner(max_pixels)
        if train_dir is not None and valid_dir is not None:
            classes = _class_names(train_dir, notes)
            train = scan(train_dir, classes)
            valid = scan(valid_dir, classes, known_from=train_dir)
        else:
            source = train_dir or root
            classes = _class_names(source, notes)
            train, valid = _split(scan(source, classes), valid_pct, seed)
        data = cls(root, classes, train, valid, size, batch_size, num_workers,
                   skipped=scan.skipped, max_pixels=max_pixels, image_sizes=scan.size_stats(),
                   notes=notes)
        _check_nonempty(data)
        notes += scan.notes() + _validation_gaps(data, valid_dir)
        if verbose:
            if data.skipped:
                print(skipped_summary(data.skipped, root, scan.seen), file=sys.stderr)
            for note in notes:
                print(note, file=sys.stderr)
            sys.stderr.flush()
        return data

    @classmethod
    def from_classes(cls, classes: Sequence[str], size: int | None = None,
                     batch_size: int = 64, num_workers: int | None = None) -> ImageData:
        """Class names and an image size without any files: enough to predict with a saved model.

        Example:
            >>> ImageData.from_classes(["cats", "dogs"], size=224).classes
            ['cats', 'dogs']
        """
        classes = [str(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be at least two distinct names, got {classes!r}.")
        return cls(Path(), classes, Split([], []), Split([], []), size, batch_size, num_workers)

    def __repr__(self) -> str:
        return self.summary()

    def summary(self, size: int | None = None) -> str:
        """The table of classes and images per split, image sizes, skipped files and notes;
        ``size``: the size a learner resolved (when ``data.size`` is None).

        Example:
            >>> print(ImageData.from_folder(demo_path(), verbose=False).summary(224))
            ... # doctest: +ELLIPSIS
            ImageData(...): 2 classes, size 224
            ...
        """
        size = size or self.size
        shown_size = f"size {size}" if size else "size: the backbone's default"
        lines = [f"ImageData({self.root}): {len(self.classes)} classes, {shown_size}"]
        width = max(len("class"), len("total"), *(len(c) for c in self.classes))
        train, valid = self.train.counts(self.classes), self.valid.counts(self.classes)
        lines.append(f"  {'class':<{width}}  {'train':>7}  {'valid':>7}")
        shown = self.classes if len(self.classes) <= 20 else self.classes[:20]
        lines += [f"  {c:<{width}}  {train[c]:>7}  {valid[c]:>7}" for c in shown]
        if len(self.classes) > 20:
            lines.append(f"  ... {len(self.classes) - 20} more classes")
        lines.append(f"  {'total':<{width}}  {len(self.train):>7}  {len(self.valid):>7}")
        if self.image_sizes:
            lines.append("  image sizes (width x height): " + ", ".join(
                f"{k} {w}x{h}" for k, (w, h) in self.image_sizes.items()))
        if self.skipped:
            reasons = Counter(r.split(" (")[0] for r in self.skipped.values())
            detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
            lines.append(f"  skipped {len(self.skipped)} files: {detail} (see .skipped)")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def split(self, name: str) -> Split:
        """``"train"`` or ``"valid"``."""
        if name not in ("train", "valid"):
            raise ValueError(f"split must be 'train' or 'valid', got {name!r}.")
        return self.train if name == "train" else self.valid

    def show_batch(self, k: int = 9, augment=None, seed: int = 0,
                   save: str | os.PathLike | None = None):
        """A matplotlib Figure of ``k`` training images with labels; see
        :func:`threeline.interpret.show_batch`.

        Example:
            >>> fig = demo_data.show_batch(9, augment="side_on", save="batch.png")  # doctest: +SKIP
        """
        from threeline.vision.interpret import show_batch

        return show_batch(self, k, augment, seed, save)

    def loader(
        self,
        files: Sequence,
        labels: Sequence[int] | None,
        transform: Callable,
        shuffle: bool = False,
        pin_memory: bool = False,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> DataLoader:
        """Batches of ``(uint8 images (B, 3, S, S), int64 labels (B,))`` decoded in workers.

        A file that fails to decode never ends an epoch: a plain gray image stands in for it, one
        line names it, and it is added to ``skipped``.
        """
        workers = self.num_workers if self.num_workers is not None else default_workers()
        dataset = ReportingFiles(list(files), labels, transform, self.max_pixels)
        return ImageLoader(
            dataset,
            on_failure=self.report_failure,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            num_workers=min(workers, max(1, len(dataset) // 16)) if workers else 0,
            pin_memory=pin_memory,
            generator=generator,
            persistent_workers=False,
            worker_init_fn=_worker_init,
            prefetch_factor=4 if workers else None,
            collate_fn=_collate,
        )

    def report_failure(self, path: str, reason: str) -> None:
        """Note a file that failed to decode (once): add it to ``skipped``, print one line."""
        if Path(path) not in self.skipped:
            self.skipped[Path(path)] = reason
            print(f"Could not decode {show_path(Path(path))}: {reason}. Remove or replace "
                  f"the file.", file=sys.stderr, flush=True)

    # ------------------------------------------------ labels from a table (vision/labels.py)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, csv_file: str | os.PathLike = "labels.csv",
                 folder: str | os.PathLike | None = None, label_delim: str | None = None,
                 fn_col: int | str = 0, label_col: int | str | Sequence[int | str] | None = None,
                 suffix: str | None = None, valid_col: int | str | None = None,
                 size: int | None = None, valid_pct: float = 0.2, seed: int = 42,
                 batch_size: int = 64, num_workers: int | None = None,
                 max_pixels: int | None = MAX_PIXELS, sep: str = ",") -> ImageData:
        """Images in a folder, labelled by a CSV file: single- or multi-label.

        The CSV names each image (with or without its extension) and gives its labels in one
        of three shapes: one class a row; several tags a row split by ``label_delim``
        (multi-label); or one 0/1 column per label (multi-label). Rows naming no image and
        images with no row are counted, listed in ``data.skipped`` and reported in one line.

        Args:
            path: the data folder; ``csv_file`` and ``folder`` are relative to it.
            csv_file: the labels file.
            folder: the images' folder inside ``path`` (searched recursively); None: ``path``.
            label_delim: the separator of several tags in one cell, e.g. ``" "``; None for one
                class a row.
            fn_col, label_col: the image-name column and the label column(s), by name or index;
                ``label_col=None`` takes the only other column, or every other 0/1 column.
            suffix: appended to every name (e.g. ``".jpg"``), when the names need it.
            valid_col: a 0/1 (or true/false) column marking validation images; None splits off
                ``valid_pct`` with ``seed`` (per class for single-label data).
            size, valid_pct, seed, batch_size, num_workers, max_pixels: as
                :meth:`from_folder`.
            sep: the CSV's field separator.

        Example:
            >>> data = ImageData.from_csv("landcover", "labels.csv", folder="images",
            ...                           label_delim=" ")  # doctest: +SKIP
            >>> data.multi_label, data.classes  # doctest: +SKIP
            (True, ['builtup', 'farmland', 'forest', 'meadow', 'water'])
        """
        from threeline.vision import labels

        root = Path(path).expanduser()
        table = root / csv_file
        header, rows = labels.read_csv(table, sep)
        return labels.image_data(cls, root, header, rows, table.name, folder, fn_col,
                                 label_col, label_delim, suffix, valid_col, size, valid_pct,
                                 seed, batch_size, num_workers, max_pixels)

    @classmethod
    def from_df(cls, frame, path: str | os.PathLike = ".", folder: str | os.PathLike | None = None,
                label_delim: str | None = None, fn_col: int | str = 0,
                label_col: int | str | Sequence[int | str] | None = None,
                suffix: str | None = None, valid_col: int | str | None = None,
                size: int | None = None, valid_pct: float = 0.2, seed: int = 42,
                batch_size: int = 64, num_workers: int | None = None,
                max_pixels: int | None = MAX_PIXELS) -> ImageData:
        """:meth:`from_csv` with a pandas DataFrame instead of a file (same arguments).

        Example:
            >>> frame = pd.read_csv("landcover/labels.csv")  # doctest: +SKIP
            >>> data = ImageData.from_df(frame, "landcover", "images", " ")  # doctest: +SKIP
        """
        from threeline.vision import labels

        header, rows = labels.frame_rows(frame)
        return labels.image_data(cls, Path(path).expanduser(), header, rows, "the DataFrame",
                                 folder, fn_col, label_col, label_delim, suffix, valid_col, size,
                                 valid_pct, seed, batch_size, num_workers, max_pixels)


class ImageLoader(DataLoader):
    """A DataLoader of ``(images, labels)`` that reports files that failed to decode.

    Stops with an error when most images fail (a broken transform, not a few bad files).

    Example:
        >>> from threeline.vision.transforms import Preprocess
        >>> data = ImageData.from_folder(demo_path(), num_workers=0)
        >>> images, labels = next(iter(data.loader(data.valid.files, data.valid.labels,
        ...                                        Preprocess(size=64), batch_size=4)))
        >>> images.shape, labels.tolist()
        (torch.Size([4, 3, 64, 64]), [0, 0, 0, 0])
    """

    def __init__(self, *args, on_failure: Callable[[str, str], None], **kwargs):
        super().__init__(*args, **kwargs)
        self.on_failure = on_failure

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seen, failed = 0, 0
        for images, labels, failures in super().__iter__():
            seen, failed = seen + len(labels), failed + len(failures)
            for path, reason in failures:
                self.on_failure(path, reason)
            if failed > 8 and failed > seen / 2:
                path, reason = failures[0] if failures else ("?", "?")
                raise ValueError(
                    f"{failed} of {seen} images failed to decode (e.g. {path}: {reason}). "
                    f"Expected a few bad files at most; check the files and the transform."
                )
            yield images, labels


def default_workers() -> int:
    """Decoding processes: one per core beyond the one running the model, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min((cores or 1) - 1, 16))


def _worker_init(worker_id: int) -> None:
    """Decoding workers must not compete with the model for cores: one thread each, and a lower
    scheduling priority, so the model's threads keep the cores and decoding fills the gaps."""
    torch.set_num_threads(1)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)


# What decoding a bad file can raise (Pillow wraps most, not all, of its decoders' errors).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                 MemoryError, Image.DecompressionBombError)


class ImageFiles(Dataset):
    """Files (or PIL images) and labels; ``transform`` turns one into a uint8 tensor.

    A file that cannot be decoded gives a plain gray image instead of an exception, with a line
    on stderr, so one bad file never ends an epoch.

    Example:
        >>> from threeline.vision.transforms import Preprocess
        >>> files = sorted((demo_path() / "train" / "cats").iterdir())[:2]
        >>> image, label = ImageFiles(files, [0, 0], Preprocess(size=64))[0]
        >>> image.shape, label
        (torch.Size([3, 64, 64]), 0)
    """

    def __init__(self, files: list, labels: Sequence[int] | None, transform: Callable,
                 max_pixels: int | None = MAX_PIXELS):
        self.files, self.transform, self.max_pixels = files, transform, max_pixels
        self.labels = list(labels) if labels is not None else [-1] * len(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, failure = self.decode(index)
        if failure is not None:
            print_failure(str(self.files[index]), failure)
        return image, self.labels[index]

    def decode(self, index: int) -> tuple[torch.Tensor, str | None]:
        """The transformed image and None, or a gray stand-in and why the file failed."""
        try:
            with pixel_limit(self.max_pixels):
                return self.transform(self.files[index]), None
        except Image.DecompressionBombError:
            reason = f"too large. {too_large_hint(self.max_pixels)}"
        except DECODE_ERRORS as err:
            text = str(err).strip() or type(err).__name__
            reason = f"corrupt or truncated ({text[:80]})"
        return self.transform(Image.new("RGB", (256, 256), (128, 128, 128))), reason


class ReportingFiles(ImageFiles):
    """ImageFiles whose items also carry the failure, ``(path, reason)`` or None, back from
    worker processes: ``(image, label, failure)``.

    Example:
        >>> from threeline.vision.transforms import Preprocess
        >>> files = sorted((demo_path() / "train" / "cats").iterdir())[:1]
        >>> image, label, failure = ReportingFiles(files, [0], Preprocess(size=64))[0]
        >>> image.shape, label, failure
        (torch.Size([3, 64, 64]), 0, None)
    """

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, tuple[str, str] | None]:
        image, failure = self.decode(index)
        report = None if failure is None else (str(self.files[index]), failure)
        return image, self.labels[index], report


def _collate(samples: list) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    images, labels, reports = zip(*samples, strict=True)
    failures = [r for r in reports if r is not None]
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), failures


def _check_args(root: Path, size, valid_pct, batch_size, num_workers, max_pixels) -> None:
    if not root.exists():
        raise FileNotFoundError(
            f"The folder {root} does not exist. Expected a folder with one sub-folder per class "
            f"(or train/ and valid/ folders that each hold them). Check the path."
        )
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; expected a folder of class sub-folders.")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PermissionError(
            f"The folder {root} cannot be read (permission denied). Give your user read access "
            f"(e.g. chmod -R u+rX {root}) or copy the images somewhere readable."
        )
    if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}.")
    if size is not None and (not isinstance(size, int) or size < 32):
        raise ValueError(f"size must be an int of at least 32 pixels (or None), got {size!r}.")
    if not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct must lie between 0 and 1 (e.g. 0.2), got {valid_pct!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"num_workers must be None or an int >= 0, got {num_workers!r}.")


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


def _validation_gaps(data: ImageData, valid_dir: Path | None) -> list[str]:
    """A note naming the classes without validation images, why, and what the accuracy then
    measures."""
    counts = data.valid.counts(data.classes)
    missing = [c for c, n in counts.items() if n == 0]
    if not missing:
        return []
    train = data.train.counts(data.classes)

    def why(name: str) -> str:
        if valid_dir is None:
            return f"{name} ({train[name]} image{'s' if train[name] != 1 else ''}, all kept " \
                   f"for training)"
        if not (valid_dir / name).is_dir():
            return f"{name} ({valid_dir.name}/ has no {name}/ folder)"
        return f"{name} ({valid_dir.name}/{name}/ holds no usable image)"

    shown = ", ".join(why(c) for c in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    covered = len(data.classes) - len(missing)
    return [f"No validation images for {len(missing)} of {len(data.classes)} classes: "
            f"{shown}{more}. The validation loss and accuracy measure the other {covered} "
            f"class{'es' if covered != 1 else ''} only and say nothing about these; add "
            f"validation images for them."]


def _check_nonempty(data: ImageData) -> None:
    counts = data.train.counts(data.classes)
    empty = [c for c, n in counts.items() if n == 0]
    bad = f" ({len(data.skipped)} files were skipped as unusable: see data.skipped)"
    bad = bad if data.skipped else ""
    if len(data.train) == 0:
        raise ValueError(
            f"No images found under {data.root}{bad}. Expected files ending in "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))} inside the class folders."
        )
    if empty:
        raise ValueError(
            f"Class folder(s) with no training images: {', '.join(empty)}{bad}. Add images to "
            f"them or remove them."
        )
    if len(data.valid) == 0:
        raise ValueError(
            f"No validation images under {data.root}. Add a valid/ folder or use more images "
            f"per class so valid_pct can hold some out."
        )
