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

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from threeline.vision import tables
from threeline.vision.checks import check_args, check_nonempty
from threeline.vision.files import (
    ImageLoader,
    ReportingFiles,
    _collate,
    _worker_init,
    default_workers,
)
from threeline.vision.images import MAX_PIXELS
from threeline.vision.scan import (
    Split,
    _class_names,
    _Scanner,
    _split,
    _split_folders,
    _validation_gaps,
    show_path,
    skipped_summary,
)

if TYPE_CHECKING:
    from threeline.vision.resident import ResidentImages


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
    _resident: Any = field(default=None, init=False, repr=False, compare=False)  # squares.py

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
            size: the square image size to train at; None uses the backbone's default size
                (larger on a small folder: :mod:`threeline.vision.small_folder`).
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
        check_args(root, size, valid_pct, batch_size, num_workers, max_pixels)
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
        check_nonempty(data)
        notes += scan.notes() + _validation_gaps(data.classes, data.train, data.valid, valid_dir)
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

    # ------------------------------ Learner(model, data): from random weights (squares.py)

    def on_device(self, augment: bool = True, flip: bool = True, pad: int | None = None,
                  max_bytes: int | None = None) -> ResidentImages:
        """The images decoded once into uint8 on the device, augmented there (crop + flip):
        :func:`threeline.vision.squares.on_device`. ``Learner(model, data)`` trains on it."""
        from threeline.vision.squares import on_device

        return on_device(self, augment, flip, pad, max_bytes)

    def batches(self, split: str, device: torch.device, shuffle: bool,
                seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.on_device().batches(split, device, shuffle, seed)

    def steps(self, split: str) -> int:
        return self.on_device().steps(split)

    def interpret(self, learn) -> Any:
        """``Learner(model, data).interpret()``: the validation images' predictions as a
        :class:`threeline.vision.interpret.Interpretation` (top losses, confusion matrix)."""
        from threeline.vision.interpret import Interpretation

        logits, _ = learn.get_preds()  # (N, C), the validation images in order
        return Interpretation(logits.float().log_softmax(1).cpu().numpy(), self.valid.labels,
                              self.valid.files, self.classes)

    def input_batches(self, inputs: Sequence, device: torch.device) -> Iterator:
        """Files (or PIL images) as batches for ``Learner(model, data).predict``, decoded and
        normalised like the training images (:func:`threeline.vision.squares.input_batches`)."""
        from threeline.vision.squares import input_batches

        return input_batches(self, inputs, device)

    @property
    def channels(self) -> int:
        """1 when every image is grayscale, else 3: the model's ``in_channels`` (decodes the
        images on first use)."""
        return self.on_device().channels

    def report_failure(self, path: str, reason: str) -> None:
        """Note a file that failed to decode (once): add it to ``skipped``, print one line."""
        if Path(path) not in self.skipped:
            self.skipped[Path(path)] = reason
            print(f"Could not decode {show_path(Path(path))}: {reason}. Remove or replace "
                  f"the file.", file=sys.stderr, flush=True)

    # ------------------------------------------------ labels from a table (vision/tables.py)

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
        root = Path(path).expanduser()
        table = root / csv_file
        header, rows = tables.read_csv(table, sep)
        return tables.image_data(cls, root, header, rows, table.name, folder, fn_col,
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
        header, rows = tables.frame_rows(frame)
        return tables.image_data(cls, Path(path).expanduser(), header, rows, "the DataFrame",
                                 folder, fn_col, label_col, label_delim, suffix, valid_col, size,
                                 valid_pct, seed, batch_size, num_workers, max_pixels)
