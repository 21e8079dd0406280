"""Texts and their labels: read from folders, CSV files, data frames or one long file.

    data = TextData.from_folder("imdb", valid_pct=0.1)       # train/{pos,neg}/*.txt (+ unsup)
    data = TextData.from_csv("reviews.csv", text="review", label="sentiment")
    text = TextData.from_file("nietzsche.txt", level="char")  # one stream, the last 10 % valid

Files are decoded as UTF-8; bytes that are not are replaced (U+FFFD) and counted. Empty texts
are skipped, texts longer than ``max_chars`` are cut; each of these is one line of the report
printed when the data is made (``data.report``). The validation texts are kept in order of
length, so that batches of them need little padding; ``data.valid_texts`` is that order.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LEVELS = ("word", "bpe", "char")
MAX_CHARS = 1_000_000
UNLABELLED_NAMES = ("unsup", "unlabelled", "unlabeled")


def read_text(path: Path, counts: dict) -> str:
    """A file's text as UTF-8; undecodable bytes are replaced and counted in counts['bad_utf8']."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        counts["bad_utf8"] = counts.get("bad_utf8", 0) + 1
        return raw.decode("utf-8", errors="replace")


def read_lines(path: Path, counts: dict) -> list[str]:
    """One text per line of a .txt or .txt.gz file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        counts["bad_utf8"] = counts.get("bad_utf8", 0) + 1
        text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _check_pct(valid_pct: float) -> None:
    if isinstance(valid_pct, bool) or not isinstance(valid_pct, (int, float)) \
            or not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct={valid_pct!r} must be a fraction between 0 and 1 "
                         f"(e.g. 0.1 keeps a tenth of the texts for validation).")


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level={level!r} is not known; use one of {LEVELS}.")


class TextData:
    """Labelled texts split into train and valid, plus unlabelled texts for language models.

    Example:
        >>> data = TextData.from_texts(["good", "bad", "fine", "awful"] * 5, [1, 0, 1, 0] * 5,
        ...                            classes=["neg", "pos"], valid_pct=0.2, verbose=False)
        >>> len(data.train_texts), len(data.valid_texts), data.classes
        (16, 4, ['neg', 'pos'])
    """

    def __init__(self, train_texts: list[str], train_labels: np.ndarray | None,
                 valid_texts: list[str], valid_labels: np.ndarray | None,
                 classes: list[str] | None, unlabelled: Sequence[str] = (), level: str = "word",
                 source: str = "", report: Sequence[str] = (), stream: bool = False):
        _check_level(level)
        if not train_texts:
            raise ValueError(f"No training texts in {source or 'the input'}: nothing to train on.")
        self.train_texts, self.valid_texts = list(train_texts), list(valid_texts)
        self.train_labels, self.valid_labels = train_labels, valid_labels
        self.classes, self.unlabelled = classes, list(unlabelled)
        self.level, self.source, self.stream = level, source, stream
        self.report = list(report)

    # ---- constructors -------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: Sequence[str], labels: Sequence, classes: Sequence[str] | None
                   = None, valid_pct: float = 0.1, seed: int = 42,
                   unlabelled: Sequence[str] = (), level: str = "word",
                   max_chars: int = MAX_CHARS, source: str = "", verbose: bool = True,
                   counts: dict | None = None, is_valid: Sequence[bool] | None = None
                   ) -> TextData:
        """Texts and labels (class names or indices into ``classes``); a seeded split per class."""
        _check_level(level)
        if is_valid is None:
            _check_pct(valid_pct)
        if len(texts) != len(labels):
            raise ValueError(f"Got {len(texts)} texts but {len(labels)} labels; give one label "
                             f"per text.")
        counts = dict(counts or {})
        texts, keep = _clean(list(texts), max_chars, counts)
        labels = [labels[i] for i in keep]
        flags = None if is_valid is None else [bool(is_valid[i]) for i in keep]
        if classes is None:
            classes = sorted({str(x) for x in labels})
            index = {c: i for i, c in enumerate(classes)}
            y = np.array([index[str(x)] for x in labels], dtype=np.int64)
        else:
            classes = [str(c) for c in classes]
            y = np.array([_label_index(x, classes) for x in labels], dtype=np.int64)
        present = sorted(set(y.tolist()))
        if len(present) < 2:
            found = classes[present[0]] if present else "none"
            raise ValueError(f"Found a single class ({found!r}) in {source or 'the labels'}; a "
                             f"classifier needs texts of at least two classes.")
        unlabelled, _ = _clean(list(unlabelled), max_chars, counts, prefix="unlabelled ")
        valid = _split(y, valid_pct, seed) if flags is None else np.array(flags)
        train_idx, valid_idx = np.flatnonzero(~valid), np.flatnonzero(valid)
        valid_idx = sorted(valid_idx.tolist(), key=lambda i: len(texts[i]))
        data = cls([texts[i] for i in train_idx], y[train_idx],
                   [texts[i] for i in valid_idx], y[valid_idx], classes, unlabelled, level,
                   source, _report_lines(counts, max_chars))
        if verbose:
            for line in data.report:
                print(line)
        return data

    @classmethod
    def from_folder(cls, path: str | os.PathLike, valid_pct: float = 0.1, seed: int = 42,
                    unlabelled: Sequence[str] | str | os.PathLike | None = None,
                    level: str = "word", max_chars: int = MAX_CHARS,
                    verbose: bool = True) -> TextData:
        """One sub-folder per class holding one .txt per text (under ``train/`` if present).

        A ``valid/`` folder beside ``train/`` is the validation set; otherwise ``valid_pct``
        of each class is held out with a seeded permutation. Unlabelled texts for the language
        model come from ``unlabelled=`` (texts, a folder of .txt files or a .txt(.gz) file of
        one text per line) or else from ``unsup/`` (or ``unsup.txt.gz``) found beside the
        classes or the ``train/`` folder.

        Example:
            >>> data = TextData.from_folder("../shared/data/imdb")  # doctest: +SKIP
        """
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder; expected one sub-folder of .txt "
                                    f"files per class (e.g. {root}/train/pos/1.txt).")
        train_dir = root / "train" if (root / "train").is_dir() else root
        valid_dir = next((root / n for n in ("valid", "val") if (root / n).is_dir()), None)
        counts: dict = {}
        classes = sorted(d.name for d in train_dir.iterdir()
                         if d.is_dir() and d.name not in UNLABELLED_NAMES
                         and not d.name.startswith(".") and d != valid_dir)
        if not classes:
            raise ValueError(f"No class folders in {train_dir}; expected one sub-folder of .txt "
                             f"files per class.")
        texts, labels, flags = [], [], []
        for split_dir, flag in ((train_dir, False), (valid_dir, True)):
            if split_dir is None:
                continue
            for label, name in enumerate(classes):
                for file in sorted((split_dir / name).glob("*.txt")):
                    texts.append(read_text(file, counts))
                    labels.append(label)
                    flags.append(flag)
        if not texts:
            raise ValueError(f"No .txt files in the class folders {classes} of {train_dir}.")
        if unlabelled is None:
            unlabelled = _find_unlabelled([root, train_dir])
        unlabelled = _read_unlabelled(unlabelled, counts)
        return cls.from_texts(texts, labels, classes, valid_pct, seed, unlabelled, level,
                              max_chars, str(root), verbose, counts,
                              is_valid=flags if valid_dir is not None else None)

    @classmethod
    def from_df(cls, df, text: str = "text", label: str = "label", valid_pct: float = 0.1,
                seed: int = 42, valid_col: str | None = None, level: str = "word",
                max_chars: int = MAX_CHARS, verbose: bool = True, source: str = "the data frame"
                ) -> TextData:
        """A pandas data frame with a text column and a label column (``valid_col``: a boolean
        column that marks validation rows; otherwise a seeded split). Rows without a label
        are used as unlabelled texts.

        Example:
            >>> import pandas as pd
            >>> df = pd.DataFrame({"text": ["yes", "no"] * 10, "label": ["p", "n"] * 10})
            >>> TextData.from_df(df, verbose=False).classes
            ['n', 'p']
        """
        for col in (text, label, valid_col):
            if col is not None and col not in df.columns:
                raise ValueError(f"No column {col!r} in {source}; its columns are "
                                 f"{list(df.columns)}.")
        missing = df[label].isna()
        texts = df[text].fillna("").astype(str)
        flags = None if valid_col is None else df.loc[~missing, valid_col].astype(bool).tolist()
        return cls.from_texts(texts[~missing].tolist(), df.loc[~missing, label].tolist(), None,
                              valid_pct, seed, texts[missing].tolist(), level, max_chars,
                              source, verbose, is_valid=flags)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, text: str = "text", label: str = "label",
                 **kwargs) -> TextData:
        """A CSV file with a text column and a label column; arguments as :meth:`from_df`."""
        import pandas as pd

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; expected a CSV file with columns "
                                    f"{text!r} and {label!r}.")
        with open(path, encoding="utf-8", errors="replace") as f:
            df = pd.read_csv(f)
        return cls.from_df(df, text, label, source=str(path), **kwargs)

    @classmethod
    def from_file(cls, path: str | os.PathLike, level: str = "char", valid_pct: float = 0.1,
                  lower: bool = False, verbose: bool = True) -> TextData:
        """One long text for a language model: the first part trains, the last ``valid_pct``
        validates (no shuffling: the text's order is the point).

        Example:
            >>> text = TextData.from_file("nietzsche.txt", level="char")  # doctest: +SKIP
        """
        _check_level(level)
        _check_pct(valid_pct)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; expected a text file.")
        counts: dict = {}
        whole = read_text(path, counts)
        if lower:
            whole = whole.lower()
        if len(whole.strip()) < 100:
            raise ValueError(f"{path} holds {len(whole.strip())} characters; a language model "
                             f"needs at least a few thousand.")
        cut = int(len(whole) * (1 - valid_pct))
        report = _report_lines(counts, None)
        if verbose:
            for line in report:
                print(line)
        data = cls([whole[:cut]], None, [whole[cut:]], None, None, (), level, str(path),
                   report, stream=True)
        data.lower = lower
        return data

    # ---- views --------------------------------------------------------------------------

    @property
    def labelled(self) -> bool:
        return self.classes is not None

    def lm_texts(self, split: str) -> list[str]:
        """Texts a language model trains on (train + unlabelled) or validates on."""
        return self.train_texts + self.unlabelled if split == "train" else self.valid_texts

    def __repr__(self) -> str:
        if not self.labelled:
            return (f"TextData({self.source!r}, level={self.level!r}: "
                    f"{sum(map(len, self.train_texts)):,} train and "
                    f"{sum(map(len, self.valid_texts)):,} valid characters)")
        counts = np.bincount(self.train_labels, minlength=len(self.classes))
        per = ", ".join(f"{c}: {n:,}" for c, n in zip(self.classes, counts, strict=True))
        return (f"TextData({self.source!r}: {len(self.train_texts):,} train ({per}), "
                f"{len(self.valid_texts):,} valid, {len(self.unlabelled):,} unlabelled texts)")


def _label_index(value, classes: list[str]) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
            and 0 <= value < len(classes):
        return int(value)
    if str(value) in classes:
        return classes.index(str(value))
    raise ValueError(f"Label {value!r} is not one of the classes {classes}.")


def _clean(texts: list[str], max_chars: int, counts: dict,
           prefix: str = "") -> tuple[list[str], list[int]]:
    """Drop empty texts and cut long ones, counting both; returns the texts kept and their
    indices."""
    kept, index = [], []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"Text {i} is a {type(t).__name__}, not a str.")
        if not t.strip():
            counts[prefix + "empty"] = counts.get(prefix + "empty", 0) + 1
            continue
        if len(t) > max_chars:
            counts[prefix + "long"] = counts.get(prefix + "long", 0) + 1
            t = t[:max_chars]
        kept.append(t)
        index.append(i)
    return kept, index


def _report_lines(counts: dict, max_chars: int | None) -> list[str]:
    lines = []
    if counts.get("bad_utf8"):
        lines.append(f"{counts['bad_utf8']:,} file(s) were not valid UTF-8: undecodable bytes "
                     f"were replaced by U+FFFD.")
    for prefix in ("", "unlabelled "):
        if counts.get(prefix + "empty"):
            lines.append(f"Skipped {counts[prefix + 'empty']:,} empty {prefix}text(s).")
        if counts.get(prefix + "long"):
            lines.append(f"Cut {counts[prefix + 'long']:,} {prefix}text(s) longer than "
                         f"{max_chars:,} characters to their first {max_chars:,}.")
    return lines


def _split(y: np.ndarray, valid_pct: float, seed: int) -> np.ndarray:
    """A boolean mask: a seeded ``valid_pct`` of each class (at least one item of each)."""
    rng = np.random.default_rng(seed)
    valid = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = max(1, round(len(idx) * valid_pct)) if len(idx) > 1 else 0
        valid[rng.permutation(idx)[:n]] = True
    return valid


def _find_unlabelled(folders: list[Path]) -> list[Path]:
    found = []
    for folder in dict.fromkeys(folders):
        for name in UNLABELLED_NAMES:
            for candidate in (folder / name, folder / f"{name}.txt", folder / f"{name}.txt.gz"):
                if candidate.exists():
                    found.append(candidate)
    return found


def _read_unlabelled(source, counts: dict) -> list[str]:
    """Texts from a list of strings, a folder of .txt files, or .txt/.txt.gz files of lines."""
    if isinstance(source, (str, os.PathLike)):
        source = [Path(source)]
    texts: list[str] = []
    for item in source:
        if isinstance(item, Path):
            if item.is_dir():
                texts += [read_text(f, counts) for f in sorted(item.glob("*.txt"))]
            elif item.is_file():
                texts += read_lines(item, counts)
            else:
                raise FileNotFoundError(f"unlabelled={item} does not exist; give texts, a folder "
                                        f"of .txt files or a .txt(.gz) file of one text per line.")
        else:
            texts.append(item)
    return texts
