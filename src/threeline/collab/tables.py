"""Reading and checking ratings tables and item titles (pandas), one clear line per problem.

    df = read_table("ml-100k/u.data", "\\t", ["user", "item", "rating", "ts"], "utf-8")
    cols = pick_columns(df, None, None, None, None, need_time=False)   # the first three
    df = validate(df, cols)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Columns:
    """Which columns hold the user, item, rating and (optionally) time."""

    user: str
    item: str
    rating: str
    time: str | None = None


def read_table(path: str | Path, sep: str, names: Sequence[str] | None, encoding: str) -> Any:
    """A delimited file as a DataFrame; ``names`` for files without a header row."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ratings file {path} does not exist; check the path.")
    header = None if names is not None else "infer"
    try:
        return pd.read_csv(path, sep=sep, names=list(names) if names else None, header=header,
                           encoding=encoding)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not {encoding} text ({err.reason} at byte {err.start}); "
                         "pass encoding='latin-1' (or the file's encoding).") from err
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path} is empty; expected rows of user, item, rating.") from err


def pick_columns(df: Any, user: str | None, item: str | None, rating: str | None,
                 time: str | None, need_time: bool) -> Columns:
    """Named columns, or by default the first three (and the fourth as time)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame of ratings, got {type(df).__name__}.")
    names = list(df.columns)
    if len(names) < 3:
        raise ValueError(f"a ratings table needs user, item and rating columns; this one has "
                         f"{len(names)}: {names}. Check sep= (the file may not be split).")
    picked = [user or names[0], item or names[1], rating or names[2]]
    if time is None and need_time:
        if len(names) < 4:
            raise ValueError("valid_after needs a time column; the table has only "
                             f"{names}. Pass time='column' or use valid_pct.")
        time = names[3]
    for given in [*picked, time]:
        if given is not None and given not in names:
            raise ValueError(f"column {given!r} is not in the table; its columns are {names}.")
    if len(set(picked)) < 3:
        raise ValueError(f"user, item and rating must be three different columns, got {picked}.")
    return Columns(*picked, time)


def validate(df: Any, cols: Columns) -> Any:
    """The table with numeric ratings, or a ValueError naming the first bad row."""
    import pandas as pd

    needed = [cols.user, cols.item, cols.rating] + ([cols.time] if cols.time else [])
    df = df[needed].reset_index(drop=True)
    if len(df) == 0:
        raise ValueError("the ratings table has no rows.")
    for name in needed:
        missing = df[name].isna().to_numpy()
        if missing.any():
            raise ValueError(f"column {name!r} has {int(missing.sum()):,} missing values (first "
                             f"in row {int(np.argmax(missing))}); drop or fill them first, e.g. "
                             f"df.dropna(subset={needed}).")
    ratings = pd.to_numeric(df[cols.rating], errors="coerce")
    bad = ratings.isna().to_numpy() | ~np.isfinite(ratings.to_numpy(dtype=float, na_value=0))
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"column {cols.rating!r} must be numeric; {int(bad.sum()):,} values are "
                         f"not (first: {df[cols.rating].iloc[row]!r} in row {row}). Fix or drop "
                         "them, or pass rating= the right column.")
    df[cols.rating] = ratings.astype(np.float32)
    for what, name in (("users", cols.user), ("items", cols.item)):
        if df[name].nunique() < 2:
            raise ValueError(f"the table has only one of its {what} ({df[name].iloc[0]!r} in "
                             f"column {name!r}); collaborative filtering needs at least 2 "
                             f"{what}. Check user=/item= name the right columns.")
    return df


def read_titles(titles: Any, item_ids: np.ndarray) -> dict[Any, str]:
    """Titles by item id from a mapping, a DataFrame (id, title) or a file such as ``u.item``.

    A file's separator is the most frequent of ``|``, tab and comma on its first line; it is
    read as UTF-8, else latin-1; a first row whose id is not a known item is a header.
    """
    import pandas as pd

    if isinstance(titles, Mapping):
        table = dict(titles)
    elif isinstance(titles, pd.DataFrame):
        if titles.shape[1] < 2:
            raise ValueError("a titles DataFrame needs two columns: item id, then title.")
        table = dict(zip(titles.iloc[:, 0], titles.iloc[:, 1].astype(str), strict=True))
    elif isinstance(titles, (str, Path)):
        table = _titles_file(Path(titles), item_ids)
    else:
        raise TypeError("titles must be a dict {id: title}, a DataFrame (id, title) or a file "
                        f"path; got {type(titles).__name__}.")
    return _match_kinds(table, item_ids)


def _titles_file(path: Path, item_ids: np.ndarray) -> dict[Any, str]:
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"titles file {path} does not exist; check the path.")
    raw = path.read_bytes()
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = raw.decode("latin-1"), "latin-1"
    first = text.split("\n", 1)[0]
    sep = max(["|", "\t", ","], key=first.count)
    if first.count(sep) == 0:
        raise ValueError(f"{path}: cannot find the separator of its first line {first[:60]!r}; "
                         "expected id and title separated by |, tab or comma.")
    known = {str(i) for i in item_ids}
    header = None if first.split(sep, 1)[0].strip() in known else 0
    df = pd.read_csv(path, sep=sep, header=header, encoding=encoding, usecols=[0, 1],
                     quoting=3 if sep == "|" else 0, dtype={0: str} if header is None else None)
    return dict(zip(df.iloc[:, 0], df.iloc[:, 1].astype(str), strict=True))


def _match_kinds(table: dict[Any, str], item_ids: np.ndarray) -> dict[Any, str]:
    """Keys converted to the items' kind (ints from a file read as text, and back)."""
    out: dict[Any, str] = {}
    as_int = len(item_ids) > 0 and isinstance(item_ids[0], (int, np.integer))
    for key, title in table.items():
        if as_int and isinstance(key, str) and key.strip().lstrip("-").isdigit():
            key = int(key)
        elif not as_int and not isinstance(key, str):
            key = str(key.item() if isinstance(key, np.generic) else key)
        out[key.item() if isinstance(key, np.generic) else key] = title
    return out
