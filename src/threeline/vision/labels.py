"""Labels as the command line reads them: ``threeline train DIR --csv FILE``, the tag separator
guessed from the table.

The table itself is read and matched with the images by :mod:`threeline.vision.tables`, as
:meth:`ImageData.from_csv` does.

    data = cli_data("landcover", "labels.csv")   # "image_name,tags" rows, tags split by " "
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from threeline.vision.data import ImageData
from threeline.vision.tables import Column, column_index, image_data, read_csv


def guess_label_delim(header: Sequence[str], rows: Sequence[Sequence[str]],
                      label_col: Column | None = None) -> str | None:
    """The tag separator of a one-column label table: ``" "``, ``";"``, ``"|"`` or ``","``
    when some value holds several tags separated by it; None for one class a row.

    Example:
        >>> guess_label_delim(["f", "tags"], [["a", "x y"], ["b", "x"]])
        ' '
    """
    if label_col is None and len(header) != 2:
        return None
    col = 1 if label_col is None else column_index(header, label_col, "label_col")
    values = [row[col].strip() for row in rows]
    for delim in (";", "|", ",", " "):
        if any(len([t for t in v.split(delim) if t.strip()]) > 1 for v in values):
            return delim
    return None


def cli_data(directory: str | os.PathLike, csv_file: str | os.PathLike,
             label_delim: str | None = "auto", **options: Any) -> ImageData:
    """The data of ``threeline train DIR --csv FILE``: FILE as given (or inside DIR), images
    anywhere under DIR, the tag separator guessed (:func:`guess_label_delim`) unless given.
    ``options``: ``size``, ``valid_pct``, ``seed``, ``batch_size``, ``num_workers``,
    ``max_pixels``.

    Example:
        >>> data = cli_data("landcover", "landcover/labels.csv", size=224)  # doctest: +SKIP
    """
    root, table = Path(directory).expanduser(), Path(csv_file).expanduser()
    if not table.is_file() and (root / table).is_file():
        table = root / table
    header, rows = read_csv(table)
    delim = guess_label_delim(header, rows) if label_delim == "auto" else label_delim
    return image_data(ImageData, root, header, rows, table.name, None, label_delim=delim,
                      **options)
