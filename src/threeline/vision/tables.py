"""Labels from a table: a CSV file (or a DataFrame) naming image files and their labels.

Three shapes of table are understood (the image-name column may omit the file's extension):

    image_name,tags                 tags split by label_delim -> multi-label
    s0000,farmland water
    image_name,tags                 no label_delim: one class per row -> single-label
    s0000,farmland
    image_name,builtup,water        one 0/1 column per label -> multi-label
    s0000,0,1

:func:`image_data` matches the table's rows with the images of a folder. Rows that name no image,
and images that no row names, are both counted, listed in ``data.skipped`` and reported in one
line; the matched images are used. Multi-label targets are stored as multi-hot rows
(``data.train.labels[i]`` is a tuple of 0/1 per label), which every batch carries as an int64
(B, L) tensor for :class:`threeline.losses.BinaryCrossEntropy`.

    data = ImageData.from_csv("landcover", "labels.csv", folder="images", label_delim=" ")
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from threeline.vision.checks import check_args
from threeline.vision.images import (
    MAX_PIXELS,
    BadImageError,
    pixel_limit,
    quick_header,
    read_header,
)
from threeline.vision.matching import SHOW, Matched, match_files, mismatch_report
from threeline.vision.scan import Split, _split, skipped_summary

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionData

Column = int | str
Data = TypeVar("Data", bound="VisionData")  # ImageData: what image_data makes
TRUE_WORDS = frozenset({"1", "1.0", "true", "yes", "y", "t"})
FALSE_WORDS = frozenset({"0", "0.0", "false", "no", "n", "f", ""})


# ----------------------------------------------------------------- reading tables


def read_csv(path: str | os.PathLike, sep: str = ",") -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a CSV file, as strings (a UTF-8 byte-order mark is dropped).

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "labels.csv"
        >>> _ = f.write_text("image_name,tags\\na,x y\\n")
        >>> read_csv(f)
        (['image_name', 'tags'], [['a', 'x y']])
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"The labels file {path} does not exist. Expected a CSV with an "
                                f"image-name column and a labels column; check the path.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f, delimiter=sep) if any(v.strip() for v in row)]
    if len(rows) < 2:
        raise ValueError(f"{path} has {len(rows)} non-empty lines; expected a header line and "
                         f"one line per image (e.g. 'image_name,tags' then 's0000,water').")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    bad = [i + 2 for i, row in enumerate(body) if len(row) != len(header)]
    if bad:
        raise ValueError(f"{path}: line(s) {bad[:SHOW]} have a different number of fields than "
                         f"the header ({len(header)}: {header}). Quote fields holding '{sep}'.")
    return header, body


def frame_rows(frame: Any) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a pandas DataFrame (or anything with ``columns`` and
    ``itertuples``), as strings: missing values become "", whole floats lose their ".0".

    Example:
        >>> import pandas as pd
        >>> frame_rows(pd.DataFrame({"name": ["a"], "x": [1.0], "y": [None]}))
        (['name', 'x', 'y'], [['a', '1', '']])
    """
    if not (hasattr(frame, "columns") and hasattr(frame, "itertuples")):
        raise TypeError(f"Expected a pandas DataFrame, got {type(frame).__name__}. For a CSV "
                        f"file use ImageData.from_csv.")
    header = [str(c) for c in frame.columns]
    return header, [[_text(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


# ----------------------------------------------------------------- columns and labels


def column_index(header: Sequence[str], column: Column, what: str) -> int:
    """The position of ``column`` (a name or an index) in ``header``.

    Example:
        >>> column_index(["image_name", "tags"], "tags", "label_col")
        1
    """
    if isinstance(column, bool) or not isinstance(column, (int, str)):
        raise TypeError(f"{what} must be a column name or index, got {column!r}.")
    if isinstance(column, int):
        if not -len(header) <= column < len(header):
            raise ValueError(f"{what}={column} is outside the {len(header)} columns {header}.")
        return column % len(header)
    if column not in header:
        raise ValueError(f"{what}={column!r} is not a column; the columns are {header}.")
    return header.index(column)


def label_columns(header: Sequence[str], rows: Sequence[Sequence[str]], name_at: int,
                  label_col: Column | Sequence[Column] | None, valid_at: int | None) -> list[int]:
    """The label column(s): given, or the only other column, or every other 0/1 column."""
    if label_col is not None:
        cols = [label_col] if isinstance(label_col, (int, str)) else list(label_col)
        if not cols:
            raise ValueError("label_col is empty; name the labels column(s).")
        return [column_index(header, c, "label_col") for c in cols]
    others = [i for i in range(len(header)) if i not in (name_at, valid_at)]
    if len(others) == 1:
        return others
    if len(others) > 1 and all(_is_flag(row[i]) for row in rows for i in others):
        return others  # one 0/1 column per label
    raise ValueError(
        f"Cannot tell which column holds the labels among {[header[i] for i in others]}: pass "
        f"label_col='tags' (one column, with label_delim=' ' for several tags a row) or a list "
        f"of 0/1 columns, one per label.")


def _is_flag(value: str) -> bool:
    return value.strip().lower() in TRUE_WORDS | FALSE_WORDS


def _flag(value: str, where: str) -> int:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return 1
    if word in FALSE_WORDS:
        return 0
    raise ValueError(f"{where} holds {value!r}; a label column needs 0 or 1 (or true/false).")


@dataclass
class Targets:
    """The classes and one target per row: a class index, or a multi-hot tuple."""

    classes: list[str]
    labels: list  # int per row (single-label) or tuple of 0/1 per row (multi-label)
    multi_label: bool


def parse_targets(header: Sequence[str], rows: Sequence[Sequence[str]], cols: list[int],
                  label_delim: str | None, source: str) -> Targets:
    """Targets from the label column(s): 0/1 columns, delimited tags, or one class a row.

    Example:
        >>> parse_targets(["f", "tags"], [["a", "x y"], ["b", "y"]], [1], " ", "t.csv")
        Targets(classes=['x', 'y'], labels=[(1, 1), (0, 1)], multi_label=True)
    """
    if len(cols) > 1:  # one 0/1 column per label
        labels = [tuple(_flag(row[c], f"{source} row {r + 2}, column {header[c]!r}")
                        for c in cols) for r, row in enumerate(rows)]
        return Targets([header[c] for c in cols], labels, True)
    col = cols[0]
    if label_delim is not None:
        if not isinstance(label_delim, str) or not label_delim:
            raise ValueError(f"label_delim must be a non-empty string such as ' ', got "
                             f"{label_delim!r}.")
        tags = [[t.strip() for t in row[col].split(label_delim) if t.strip()] for row in rows]
        classes = sorted({t for row in tags for t in row})
        index = {c: i for i, c in enumerate(classes)}
        labels = []
        for row in tags:
            hot = [0] * len(classes)
            for t in row:
                hot[index[t]] = 1
            labels.append(tuple(hot))
        return Targets(classes, labels, True)
    names = [row[col].strip() for row in rows]
    empty = [r + 2 for r, name in enumerate(names) if not name]
    if empty:
        raise ValueError(f"{source}: row(s) {empty[:SHOW]} have no label in column "
                         f"{header[col]!r}; give every image a class, or drop those rows.")
    _hint_delimiter(names, header[col])
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return Targets(classes, [index[n] for n in names], False)


def _hint_delimiter(names: Sequence[str], column: str) -> None:
    """A note when single-label values look like several tags."""
    with_space = sorted({n for n in names if len(n.split()) > 1})
    if len(with_space) > 1:
        print(f"Note: {len(with_space)} distinct values of {column!r} hold several words "
              f"(e.g. {with_space[0]!r}), each taken as one class. If a row lists several "
              f"tags, pass label_delim=' '.", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- the ImageData


def image_data(cls: Callable[..., Data], root: Path, header: list[str], rows: list[list[str]],
               source: str, folder: str | os.PathLike | None = None, fn_col: Column = 0,
               label_col: Column | Sequence[Column] | None = None,
               label_delim: str | None = None, suffix: str | None = None,
               valid_col: Column | None = None, size: int | None = None,
               valid_pct: float = 0.2, seed: int = 42, batch_size: int = 64,
               num_workers: int | None = None, max_pixels: int | None = MAX_PIXELS) -> Data:
    """An :class:`ImageData` from a table's header and rows; see :meth:`ImageData.from_csv`."""
    images = root / folder if folder is not None else root
    if not images.is_dir():
        raise FileNotFoundError(f"The image folder {images} does not exist (or is not a folder). "
                                f"Expected the images named in {source} there; check folder=.")
    check_args(images, size, valid_pct, batch_size, num_workers, max_pixels)
    name_at = column_index(header, fn_col, "fn_col")
    valid_at = None if valid_col is None else column_index(header, valid_col, "valid_col")
    cols = label_columns(header, rows, name_at, label_col, valid_at)
    matched = match_files([row[name_at] for row in rows], images, source, suffix)
    if not matched.files:
        example = rows[0][name_at]
        raise ValueError(
            f"None of the {len(rows)} images named in {source} is in {images} (e.g. "
            f"{example!r}; the folder holds {matched.images_seen} images). Check folder= and "
            f"the names; pass suffix='.jpg' if the names lack an extension that differs.")
    kept = [rows[r] for r in matched.rows]
    targets = parse_targets(header, kept, cols, label_delim, source)
    files, labels, sizes, bad = _probe(matched.files, targets.labels, max_pixels)
    in_valid = _valid_mask(kept, matched, bad, valid_at, source)
    skipped = {**matched.missing, **matched.unlabeled, **bad}
    split = Split(files, labels)
    if in_valid is not None:
        train, valid = _pick(split, ~in_valid), _pick(split, in_valid)
    elif targets.multi_label:
        train, valid = _random_split(split, valid_pct, seed)
    else:
        train, valid = _split(split, valid_pct, seed)
    data = cls(root, targets.classes, train, valid, size, batch_size, num_workers,
               skipped=skipped, max_pixels=max_pixels, image_sizes=_size_stats(sizes),
               multi_label=targets.multi_label)
    check_labels(data, source)
    report = mismatch_report(matched, len(rows), images, source)
    if report:
        print(report, file=sys.stderr, flush=True)
    if bad:
        print(skipped_summary(bad, images, len(matched.files)), file=sys.stderr, flush=True)
    return data


def _probe(files: list[Path], labels: list, max_pixels: int | None
           ) -> tuple[list[Path], list, list[tuple[int, int]], dict[Path, str]]:
    """Read each header; drop unusable images (with the reason)."""
    kept_files, kept_labels, sizes, bad = [], [], [], {}
    with pixel_limit(max_pixels):
        for path, label in zip(files, labels, strict=True):
            try:
                size = quick_header(path, max_pixels) or read_header(path, max_pixels)
            except BadImageError as err:
                bad[path] = err.reason
                continue
            kept_files.append(path)
            kept_labels.append(label)
            sizes.append(size)
    return kept_files, kept_labels, sizes, bad


def _valid_mask(kept: list[list[str]], matched: Matched, bad: dict[Path, str],
                valid_at: int | None, source: str) -> np.ndarray | None:
    if valid_at is None:
        return None
    flags = [_flag(row[valid_at], f"{source} valid column")
             for row, f in zip(kept, matched.files, strict=True) if f not in bad]
    return np.asarray(flags, dtype=bool)


def _pick(split, mask: np.ndarray):
    ids = np.flatnonzero(mask)
    return Split([split.files[i] for i in ids], [split.labels[i] for i in ids])


def _random_split(split, valid_pct: float, seed: int):
    """Hold out round(valid_pct * n) images chosen by a seeded permutation (multi-label)."""
    n = len(split)
    n_valid = min(n - 1, max(1, round(valid_pct * n))) if n > 1 else 0
    in_valid = np.zeros(n, dtype=bool)
    in_valid[np.random.default_rng(seed).permutation(n)[:n_valid]] = True
    return _pick(split, ~in_valid), _pick(split, in_valid)


def _size_stats(sizes: list[tuple[int, int]]) -> dict[str, tuple[int, int]]:
    if not sizes:
        return {}
    array = np.asarray(sizes)  # (N, 2)
    pick = {"min": np.min, "median": np.median, "max": np.max}
    return {k: tuple(int(v) for v in f(array, axis=0)) for k, f in pick.items()}


def check_labels(data: VisionData, source: str) -> None:
    """Enough images and classes to train: two classes, each seen in training, a valid set."""
    what = "labels" if data.multi_label else "classes"
    if len(data.classes) < 2:
        raise ValueError(f"{source} has {len(data.classes)} {what} ({data.classes}); a model "
                         f"needs at least two. For yes/no labels use one class a row "
                         f"(e.g. 'water' / 'no_water').")
    if len(data.train) == 0 or len(data.valid) == 0:
        raise ValueError(f"{source}: {len(data.train)} training and {len(data.valid)} "
                         f"validation images; both need some. Add images or change valid_pct.")
    counts = data.train.counts(data.classes)
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"{source}: {what} with no training image: {', '.join(empty[:10])}. "
                         f"Add images of them, or drop them from the table.")


def label_names(data_classes: Sequence[str], label: int | Sequence[int]) -> list[str]:
    """The class names of one target: a class index, or a multi-hot row.

    Example:
        >>> label_names(["a", "b", "c"], (1, 0, 1)), label_names(["a", "b"], 1)
        (['a', 'c'], ['b'])
    """
    if isinstance(label, (int, np.integer)):
        return [data_classes[int(label)]]
    return [c for c, on in zip(data_classes, label, strict=True) if on]
