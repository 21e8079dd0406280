"""MovieLens 100k: its five standard splits, rebuilt as its ``mku.sh`` does, and loaded.

``mku.sh`` takes u.data's rows in file order: split ``i`` tests on rows (i-1)*20000 ..
i*20000 and trains on the rest, each file sorted by user, then item, numerically.

    files = split_files("ml-100k/u.data")         # {"u1.base": b"...", ..., "u5.test": ...}
    data = movielens_split("ml-100k", 1)          # train u1.base, validate on u1.test, titles
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from threeline.collab.data import CollabData

NAMES = ["user", "item", "rating", "ts"]
FOLDS = 5


def split_files(u_data: str | Path, folds: int = FOLDS) -> dict[str, bytes]:
    """The bytes of ``u1.base`` .. ``u5.test`` as ``mku.sh`` writes them from ``u.data``.

    Example:
        >>> files = split_files("ml-100k/u.data")   # doctest: +SKIP
        >>> files["u1.test"] == open("ml-100k/u1.test", "rb").read()   # doctest: +SKIP
        True
    """
    path = Path(u_data)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass the path of MovieLens' u.data.")
    import pandas as pd

    lines = path.read_bytes().splitlines(keepends=True)
    keys = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1]).to_numpy()  # (N, 2)
    if len(lines) % folds or len(keys) != len(lines):
        raise ValueError(f"{path} has {len(lines):,} rows, not a multiple of {folds}; "
                         "expected MovieLens 100k's u.data (100,000 rows).")
    size = len(lines) // folds
    out = {}
    rows = np.arange(len(lines))
    for i in range(1, folds + 1):
        test = (rows >= (i - 1) * size) & (rows < i * size)
        for name, pick in ((f"u{i}.test", rows[test]), (f"u{i}.base", rows[~test])):
            # sort -k 1,1n -k 2,2n: by user, then item; (user, item) pairs are unique
            order = pick[np.lexsort((keys[pick, 1], keys[pick, 0]))]
            out[name] = b"".join([lines[k] for k in order])
    return out


def write_split_files(u_data: str | Path, out_dir: str | Path) -> list[Path]:
    """Write :func:`split_files` into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, blob in split_files(u_data).items():
        (out / name).write_bytes(blob)
        written.append(out / name)
    return written


def movielens_split(folder: str | Path, fold: int, titles: bool = True,
                    **kwargs: Any) -> CollabData:
    """``CollabData`` training on ``u{fold}.base`` and validating on ``u{fold}.test``.

    ``titles=True`` reads ``u.item`` (latin-1) from the same folder; ``kwargs`` go to
    :meth:`CollabData.from_df` (e.g. ``batch_size``).
    """
    import pandas as pd

    folder = Path(folder)
    if fold not in range(1, FOLDS + 1):
        raise ValueError(f"fold must be 1..{FOLDS}, got {fold!r}.")
    parts = []
    for suffix in ("base", "test"):
        path = folder / f"u{fold}.{suffix}"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; pass MovieLens 100k's folder "
                                    "(or rebuild the splits with write_split_files).")
        parts.append(pd.read_csv(path, sep="\t", names=NAMES))
    df = pd.concat(parts, ignore_index=True)
    item_file = folder / "u.item"
    kwargs.setdefault("titles", item_file if titles and item_file.is_file() else None)
    return CollabData.from_df(df, valid_idx=np.arange(len(parts[0]), len(df)), **kwargs)
