"""Matching a table's image names with the files of a folder: a name is the file's path under
the folder or its file name, with or without the extension (a name that fits several files is
refused); rows that name no file and files that no row names are both kept for the report
(:func:`mismatch_report`, one line that lists a few of each).

    matched = match_files(names, Path("landcover/images"), "labels.csv")
    matched.files, matched.missing, matched.unlabeled
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from threeline.vision.images import IMAGE_EXTENSIONS, is_system_file

SHOW = 5  # names listed in a report line


@dataclass
class Matched:
    """Table rows matched with files, and what did not match."""

    rows: list[int] = field(default_factory=list)  # indices of rows with a file
    files: list[Path] = field(default_factory=list)
    missing: dict[Path, str] = field(default_factory=dict)  # a row, no file
    unlabeled: dict[Path, str] = field(default_factory=dict)  # a file, no row
    images_seen: int = 0


def match_files(names: Sequence[str], folder: Path, source: str,
                suffix: str | None = None) -> Matched:
    """Find each named image in ``folder`` (recursively). A name is the file's path relative
    to ``folder``, or its file name, each with or without the extension.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> m = match_files(["cat.1025", "cats/cat.1138.jpg"], demo_path() / "train", "t.csv")
        >>> [f.name for f in m.files], len(m.unlabeled) > 0
        (['cat.1025.jpg', 'cat.1138.jpg'], True)
    """
    exact, loose = _index_folder(folder)
    out, used, first_row = Matched(images_seen=len(exact)), set(), {}
    for r, raw in enumerate(names):
        name = raw.strip().replace("\\", "/").removeprefix("./") + (suffix or "")
        if name in first_row:
            raise ValueError(f"{source} names {raw!r} twice (rows {first_row[name] + 2} and "
                             f"{r + 2}); keep one row per image.")
        first_row[name] = r
        path = exact.get(name)
        if path is None:
            found = loose.get(name, [])
            if len(found) > 1:
                shown = ", ".join(p.relative_to(folder).as_posix() for p in found[:SHOW])
                raise ValueError(f"{source} row {r + 2} names {raw!r}, which fits several files "
                                 f"({shown}); name it by its path with the extension.")
            path = found[0] if found else None
        if path is None:
            out.missing[folder / name] = f"no such image file (named in {source})"
            continue
        used.add(path)
        out.rows.append(r)
        out.files.append(path)
    out.unlabeled = {p: f"no row in {source}" for p in exact.values() if p not in used}
    return out


def _index_folder(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Image files under ``folder`` by relative path; and by relative path without extension,
    file name, and file name without extension (a key may fit several files)."""
    exact: dict[str, Path] = {}
    loose: dict[str, list[Path]] = {}
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(top) / name
            if is_system_file(path) or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            rel = path.relative_to(folder).as_posix()
            exact[rel] = path
            for key in {rel[: len(rel) - len(path.suffix)], name, path.stem}:
                loose.setdefault(key, []).append(path)
    return exact, loose


def mismatch_report(matched: Matched, n_rows: int, folder: Path, source: str) -> str | None:
    """One line counting and naming rows without a file and files without a row; None if none.

    Example:
        >>> m = Matched(missing={Path("i/a.jpg"): "x"}, images_seen=3)
        >>> mismatch_report(m, 4, Path("i"), "t.csv")  # doctest: +ELLIPSIS
        't.csv: 1 of 4 rows name no image in i (a.jpg); 0 of 3 images in i have no row...'
    """
    if not matched.missing and not matched.unlabeled:
        return None

    def names(paths) -> str:
        shown = sorted(p.relative_to(folder).as_posix() if p.is_relative_to(folder) else str(p)
                       for p in paths)
        more = f", and {len(shown) - SHOW} more" if len(shown) > SHOW else ""
        return ", ".join(shown[:SHOW]) + more

    parts = [f"{len(matched.missing)} of {n_rows} rows name no image in {folder}"
             + (f" ({names(matched.missing)})" if matched.missing else ""),
             f"{len(matched.unlabeled)} of {matched.images_seen} images in {folder} have no row"
             + (f" ({names(matched.unlabeled)})" if matched.unlabeled else "")]
    return (f"{source}: {'; '.join(parts)}. Both are listed in data.skipped; training uses the "
            f"{len(matched.files)} images that have a row.")
