"""Image folders -> labelled file lists and batches of decoded images.

Layouts understood by :meth:`ImageData.from_folder`::

    root/train/<class>/*.jpg  +  root/valid/<class>/*.jpg   (or root/val/)
    root/train/<class>/*.jpg                                  (valid split off by valid_pct)
    root/<class>/*.jpg                                        (valid split off by valid_pct)

Images are found recursively inside each class folder. Nothing is copied or moved.
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
    is_system_file,
    pixel_limit,
    quick_header,
    read_header,
    too_large_hint,
)

VALID_NAMES = ("valid", "val", "validation")


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
    """The files of one split and their integer labels (indices into ``classes``)."""

    files: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.files)

    def counts(self, classes: Sequence[str]) -> dict[str, int]:
        counter = Counter(self.labels)
        return {name: counter.get(i, 0) for i, name in enumerate(classes)}


@dataclass
class ImageData:
    """Labelled image files split into train and valid, with the image size to train at.

    Build one with :meth:`from_folder`. ``size=None`` means "the backbone's default size" (see
    :class:`threeline.weights.BackboneSpec`).
    ``skipped`` maps each file that is not a usable image to the reason, in a few words.
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
    ) -> ImageData:
        """Read a folder of images, one sub-folder per class.

        Every file's header is checked (fast: nothing is decoded). Files that are not usable
        images (corrupt, empty, unreadable, too large, or not images at all) are skipped and
        listed in ``data.skipped``, with one summary line printed. Hidden files and file-manager
        litter such as ``.DS_Store`` and ``Thumbs.db`` are ignored silently.

        Args:
            path: the root folder (see the module docstring for the layouts understood).
            size: the square image size to train at; None uses the backbone's default size.
            valid_pct: the fraction held out per class when there is no valid/ (or val/) folder.
            seed: makes that split deterministic.
            batch_size: images per batch.
            num_workers: decoding processes; None picks from the number of CPU cores.
            max_pixels: images with more pixels are skipped, a guard against decompression
                bombs (default 200 megapixels); None for no limit.

        Example:
            >>> data = ImageData.from_folder(demo_path(), size=224)
            >>> data.classes
            ['cats', 'dogs']
        """
        root = Path(path).expanduser()
        _check_args(root, size, valid_pct, batch_size, num_workers, max_pixels)
        train_dir = root / "train"
        valid_dir = next((root / n for n in VALID_NAMES if (root / n).is_dir()), None)
        scan = _Scanner(max_pixels)
        if train_dir.is_dir() and valid_dir is not None:
            classes = _class_names(train_dir)
            train = scan(train_dir, classes)
            valid = scan(valid_dir, classes, known_from=train_dir)
        else:
            source = train_dir if train_dir.is_dir() else root
            classes = _class_names(source)
            train, valid = _split(scan(source, classes), valid_pct, seed)
        data = cls(root, classes, train, valid, size, batch_size, num_workers,
                   skipped=scan.skipped, max_pixels=max_pixels, image_sizes=scan.size_stats())
        _check_nonempty(data)
        if data.skipped:
            print(skipped_summary(data.skipped, root, scan.seen), file=sys.stderr, flush=True)
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
        lines = [f"ImageData({self.root}): {len(self.classes)} classes, size={self.size}"]
        width = max(len(c) for c in self.classes)
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
            print(f"Could not decode {show_path(Path(path))}: {reason}. A gray image stood in "
                  f"for it; remove or replace the file (listed in data.skipped).",
                  file=sys.stderr, flush=True)


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
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError as err:
        raise PermissionError(
            f"The folder {folder} cannot be read (permission denied). Give your user read "
            f"access (e.g. chmod -R u+rX {folder}) or copy the images somewhere readable."
        ) from err


def _class_names(folder: Path) -> list[str]:
    classes = _subfolders(folder)
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


class _Scanner:
    """Finds the image files of class folders, checking each header; collects what it skips."""

    def __init__(self, max_pixels: int | None):
        self.max_pixels = max_pixels
        self.skipped: dict[Path, str] = {}
        self.sizes: list[tuple[int, int]] = []
        self.seen = 0

    def __call__(self, folder: Path, classes: list[str], known_from: Path | None = None) -> Split:
        unknown = [c for c in _subfolders(folder) if c not in classes]
        if unknown:
            raise ValueError(
                f"{folder} has class folders not in {known_from}: {', '.join(unknown)}. Every "
                f"validation class needs training images: add them, or remove those folders."
            )
        candidates: list[tuple[Path, int]] = []
        for label, name in enumerate(classes):
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
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            folder = Path(top)
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
            return quick_header(path, self.max_pixels) or read_header(path, self.max_pixels)
        except BadImageError as err:
            self.skipped[path] = err.reason
            return None

    def size_stats(self) -> dict[str, tuple[int, int]]:
        """Smallest, median and largest width and height (each taken on its own)."""
        if not self.sizes:
            return {}
        sizes = np.asarray(self.sizes)  # (N, 2)
        pick = {"min": np.min, "median": np.median, "max": np.max}
        return {k: tuple(int(v) for v in f(sizes, axis=0)) for k, f in pick.items()}


def skipped_summary(skipped: dict[Path, str], root: Path, total: int | None = None,
                    show: int = 3, where: str | None = "data.skipped") -> str:
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
        hint = " To keep very large images, pass a higher max_pixels."
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
