"""Image folders -> labelled file lists and batches of decoded images.

Layouts understood by :meth:`ImageData.from_folder`::

    root/train/<class>/*.jpg  +  root/valid/<class>/*.jpg   (or root/val/)
    root/train/<class>/*.jpg                                  (valid split off by valid_pct)
    root/<class>/*.jpg                                        (valid split off by valid_pct)

Images are found recursively inside each class folder. Nothing is copied or moved.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from threeline.images import is_image_file

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

    Build one with :meth:`from_folder`. ``size=None`` means "the backbone's native size".
    """

    root: Path
    classes: list[str]
    train: Split
    valid: Split
    size: int | None = None
    batch_size: int = 64
    num_workers: int | None = None
    skipped: list[Path] = field(default_factory=list)

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        size: int | None = None,
        valid_pct: float = 0.2,
        seed: int = 42,
        batch_size: int = 64,
        num_workers: int | None = None,
    ) -> ImageData:
        """Read a folder of images, one sub-folder per class.

        Args:
            path: the root folder (see the module docstring for the layouts understood).
            size: the square image size to train at; None uses the backbone's native size.
            valid_pct: the fraction held out per class when there is no valid/ (or val/) folder.
            seed: makes that split deterministic.
            batch_size: images per batch.
            num_workers: decoding processes; None picks from the number of CPU cores.

        Example:
            >>> data = ImageData.from_folder(demo_path(), size=224)
            >>> data.classes
            ['cats', 'dogs']
        """
        root = Path(path).expanduser()
        _check_args(root, size, valid_pct, batch_size, num_workers)
        train_dir = root / "train"
        valid_dir = next((root / n for n in VALID_NAMES if (root / n).is_dir()), None)
        if train_dir.is_dir() and valid_dir is not None:
            classes = _class_names(train_dir)
            train = _scan(train_dir, classes)
            valid = _scan(valid_dir, classes, known_from=train_dir)
        else:
            source = train_dir if train_dir.is_dir() else root
            classes = _class_names(source)
            train, valid = _split(_scan(source, classes), valid_pct, seed)
        data = cls(root, classes, train, valid, size, batch_size, num_workers)
        _check_nonempty(data)
        return data

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
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable files")
        return "\n".join(lines)

    def split(self, name: str) -> Split:
        """``"train"`` or ``"valid"``."""
        if name not in ("train", "valid"):
            raise ValueError(f"split must be 'train' or 'valid', got {name!r}.")
        return self.train if name == "train" else self.valid

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
        """Batches of ``(uint8 images (B, 3, S, S), int64 labels (B,))`` decoded in workers."""
        workers = self.num_workers if self.num_workers is not None else default_workers()
        dataset = ImageFiles(list(files), labels, transform)
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            num_workers=min(workers, max(1, len(dataset) // 16)) if workers else 0,
            pin_memory=pin_memory,
            generator=generator,
            persistent_workers=False,
            worker_init_fn=_worker_init,
            prefetch_factor=4 if workers else None,
        )


def default_workers() -> int:
    """Decoding processes: one per core beyond the one running the model, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min((cores or 1) - 1, 16))


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the model for cores


class ImageFiles(Dataset):
    """Files (or PIL images) and labels; ``transform`` turns one into a uint8 tensor."""

    def __init__(self, files: list, labels: Sequence[int] | None, transform: Callable):
        self.files, self.transform = files, transform
        self.labels = list(labels) if labels is not None else [-1] * len(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.files[index]), self.labels[index]


def _check_args(root: Path, size, valid_pct, batch_size, num_workers) -> None:
    if not root.exists():
        raise FileNotFoundError(
            f"The folder {root} does not exist. Expected a folder with one sub-folder per class "
            f"(or train/ and valid/ folders that each hold them). Check the path."
        )
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; expected a folder of class sub-folders.")
    if size is not None and (not isinstance(size, int) or size < 32):
        raise ValueError(f"size must be an int of at least 32 pixels (or None), got {size!r}.")
    if not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct must lie between 0 and 1 (e.g. 0.2), got {valid_pct!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"num_workers must be None or an int >= 0, got {num_workers!r}.")


def _class_names(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
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


def _scan(folder: Path, classes: list[str], known_from: Path | None = None) -> Split:
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [c for c in present if c not in classes]
    if unknown:
        raise ValueError(
            f"{folder} has class folders not in {known_from}: {', '.join(unknown)}. Every "
            f"validation class needs training images: add them, or remove those folders."
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if p.is_file() and is_image_file(p))
        files += found
        labels += [label] * len(found)
    return Split(files, labels)


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
    if len(data.train) == 0:
        raise ValueError(
            f"No images found under {data.root}. Expected files ending in .jpg, .jpeg, .png, "
            f".bmp, .webp or .gif inside the class folders."
        )
    if empty:
        raise ValueError(
            f"Class folder(s) with no training images: {', '.join(empty)}. Add images to them "
            f"or remove them."
        )
    if len(data.valid) == 0:
        raise ValueError(
            f"No validation images under {data.root}. Add a valid/ folder or use more images "
            f"per class so valid_pct can hold some out."
        )
