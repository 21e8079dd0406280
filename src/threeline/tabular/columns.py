"""Reading tables, checking them, and deciding what each column is.

    cols = read_table("adult.csv", na_values=("?",))     # CSV or Parquet, one clear error if not
    column_kind(cols.get("age"), "age")                  # strings, few-valued integers -> "cat"
    parts = date_parts(parse_dates(s, "saledate"), "saledate")  # saledate_year, _month, ...

Every error is one line: what was found, what was expected, how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

MAX_CARD = 20  # whole-number columns with at most this many distinct values are categories
MIXED_SAMPLE = 100_000  # rows sampled when checking a text column for stray non-numbers

# Parts of a date column: (suffix, categorical?). Categorical parts get embeddings.
DATE_PARTS: tuple[tuple[str, bool], ...] = (
    ("year", False), ("month", True), ("week", True), ("day", True), ("dayofweek", True),
    ("dayofyear", False), ("is_month_end", True), ("is_month_start", True),
    ("is_quarter_end", True), ("is_quarter_start", True), ("is_year_end", True),
    ("is_year_start", True), ("elapsed", False),
)


class Columns:
    """A table handed out one column at a time as pandas Series.

    Built from a DataFrame (the caller's: nothing is copied or released) or from an Arrow table
    read from a file (owned: :meth:`release` frees a column once it is encoded, so a large table
    is never held twice).

    Example:
        >>> cols = Columns(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
        >>> cols.names, cols.n_rows, cols.get("b").tolist()
        (['a', 'b'], 2, ['x', 'y'])
    """

    def __init__(self, table):
        if isinstance(table, pd.DataFrame):
            if table.columns.duplicated().any():
                dups = sorted({str(c) for c in table.columns[table.columns.duplicated()]})
                raise ValueError(f"Columns {dups} appear more than once; expected unique "
                                 "column names; rename them.")
            self.frame, self.arrow = table, None
            self.names = [str(c) for c in table.columns]
            self.n_rows = len(table)
        else:
            self.frame, self.arrow = None, table
            self.names = list(table.column_names)
            self.n_rows = table.num_rows

    def get(self, name: str) -> pd.Series:
        if self.frame is not None:
            return self.frame[_key(self.frame, name)]
        return self.arrow.column(name).to_pandas()

    def release(self, name: str) -> None:
        """Free an owned column's memory (no-op for a caller's DataFrame)."""
        if self.arrow is not None and name in self.arrow.column_names:
            self.arrow = self.arrow.drop_columns([name])


def _key(frame: pd.DataFrame, name: str):
    """The DataFrame's own column label for ``name`` (labels may be ints)."""
    for label in frame.columns:
        if str(label) == name:
            return label
    raise KeyError(name)


def read_table(path: str | Path, na_values: Sequence[str] = ()) -> Columns:
    """A CSV (``.csv``, ``.csv.gz``, ``.tsv``, ``.txt``) or Parquet (``.parquet``, ``.pq``) file.

    Example:
        >>> read_table("missing.csv")
        Traceback (most recent call last):
        ...
        FileNotFoundError: missing.csv does not exist: expected a CSV or Parquet file; ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected a CSV or Parquet file; "
                                "check the path.")
    if path.suffix.lower() in (".parquet", ".pq"):
        return Columns(_read_parquet(path))
    with open(path, "rb") as f:
        head = f.read(4096)
    if not path.name.lower().endswith(".gz") and b"\x00" in head:
        raise ValueError(f"{path} is not a CSV file: it holds binary data; expected text with "
                         "a header row and comma-separated values (or a .parquet file).")
    return Columns(_read_csv(path, na_values))


def _read_csv(path: Path, na_values: Sequence[str]):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    nulls = pcsv.ConvertOptions().null_values + list(na_values)
    options = pcsv.ConvertOptions(null_values=nulls, strings_can_be_null=True)
    try:
        table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter),
                              convert_options=options)
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0][:120]
        raise ValueError(f"{path} is not a readable CSV file ({reason}); expected UTF-8 text "
                         "with a header row and the same number of comma-separated values "
                         "on every line.") from None
    if table.num_columns < 2:
        first = str(table.column_names[0])[:40] if table.num_columns else ""
        raise ValueError(f"{path} has {table.num_columns} column: expected a header row and "
                         f"comma-separated values, at least a feature and a target; is it a "
                         f"CSV (first column name: {first!r})?")
    return table


def _read_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        reason = str(error).splitlines()[0][:120]
        raise ValueError(f"{path} is not a readable Parquet file ({reason}); expected a file "
                         "written by pandas.DataFrame.to_parquet or pyarrow.") from None


def check_table(cols: Columns, y: str | None) -> None:
    """Refuse an empty table and a missing or all-missing target column (one clear line).

    Example:
        >>> check_table(Columns(pd.DataFrame({"a": [1, 2]})), "b")
        Traceback (most recent call last):
        ...
        ValueError: Target column 'b' is not in the table; expected one of ['a']; pass y= ...
    """
    if cols.n_rows == 0 or not cols.names:
        raise ValueError(f"The table is empty ({cols.n_rows} rows, {len(cols.names)} columns); "
                         "expected rows of data under a header; check the file or the filter "
                         "that made it.")
    if y is None:
        return
    if y not in cols.names:
        raise ValueError(f"Target column {y!r} is not in the table; expected one of "
                         f"{cols.names[:30]}; pass y= with one of those names.")


def column_kind(s: pd.Series, name: str, cat: Sequence[str] = (), cont: Sequence[str] = (),
                max_card: int = MAX_CARD) -> str:
    """``"cat"`` or ``"cont"`` for one feature column.

    Text, booleans and whole numbers with at most ``max_card`` distinct values are categorical;
    other numbers are continuous. ``cat=``/``cont=`` force a column either way.

    Example:
        >>> column_kind(pd.Series([1, 2, 1]), "a"), column_kind(pd.Series([0.5, 1.5]), "b")
        ('cat', 'cont')
    """
    if name in cat:
        return "cat"
    if name in cont:
        _numeric_column(s, name)
        return "cont"
    return "cat" if _is_categorical(s, name, max_card) else "cont"


def _is_categorical(s: pd.Series, name: str, max_card: int) -> bool:
    if pd.api.types.is_bool_dtype(s):
        return True
    if pd.api.types.is_datetime64_any_dtype(s):
        raise ValueError(f"Column {name!r} holds dates; expected numbers or text; pass "
                         f"dates=[{name!r}] to expand it into year, month, day ... columns.")
    if pd.api.types.is_numeric_dtype(s):
        values = s.dropna()
        if len(values) > 1_000_000:
            values = values.sample(1_000_000, random_state=0)
        with np.errstate(invalid="ignore"):  # inf: not whole, then refused as continuous
            whole = bool(np.all(np.mod(values.to_numpy(dtype=np.float64), 1) == 0))
        return whole and s.nunique() <= max_card
    check_not_mixed(s, name)
    return True


def _numeric_column(s: pd.Series, name: str) -> str:
    if not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
        raise ValueError(f"Column {name!r} in cont= holds {s.dtype} values, not numbers; "
                         f"expected numbers; pass it in cat= instead or convert it.")
    return name


def check_not_mixed(s: pd.Series, name: str) -> None:
    """Refuse a column mixing numbers and text: Python objects of several types, or text that is
    almost all numbers (a typo or a stray marker in a numeric column).

    Example:
        >>> check_not_mixed(pd.Series([1, "a", 2.5], dtype=object), "x")
        Traceback (most recent call last):
        ...
        ValueError: Column 'x' mixes types (mixed-integer); expected one type per column; ...
    """
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind.startswith("mixed"):
        raise ValueError(f"Column {name!r} mixes types ({kind}); expected one type per column; "
                         f"convert it (df[{name!r}].astype(str) for categories) or pass it in "
                         "cat=.")
    if kind != "string":
        return
    distinct = pd.Series(s.dropna().unique())
    if len(distinct) > MIXED_SAMPLE:
        distinct = distinct.sample(MIXED_SAMPLE, random_state=0)
    if len(distinct) == 0 or pd.isna(pd.to_numeric(distinct.iloc[:20], errors="coerce")).all():
        return  # ordinary text: no need to try every value as a number
    numbers = pd.to_numeric(distinct, errors="coerce")
    bad = distinct[numbers.isna()]
    if 0 < len(bad) <= 0.1 * len(distinct):
        examples = list(bad.astype(str))[:3]
        raise ValueError(f"Column {name!r} is numbers except for values such as {examples}; "
                         f"expected one type per column; mark those missing with na_values=, "
                         f"fix them, or pass cat=[{name!r}] to treat the column as categories.")


def check_finite(s: pd.Series, name: str) -> None:
    """Refuse infinities in a numeric column, naming the first rows that hold them.

    Example:
        >>> check_finite(pd.Series([1.0, float("inf")]), "x")
        Traceback (most recent call last):
        ...
        ValueError: Column 'x' has 1 infinite value (rows [1]); expected finite numbers ...
    """
    values = s.to_numpy()
    if not np.issubdtype(values.dtype, np.floating):
        return
    bad = np.flatnonzero(np.isinf(values))
    if len(bad):
        plural = "s" if len(bad) > 1 else ""
        raise ValueError(f"Column {name!r} has {len(bad)} infinite value{plural} (rows "
                         f"{bad[:5].tolist()}); expected finite numbers or missing values; "
                         f"replace them, e.g. df[{name!r}] = df[{name!r}].replace([np.inf, "
                         "-np.inf], np.nan).")


def parse_dates(s: pd.Series, name: str) -> pd.Series:
    """A column as naive UTC datetimes; a clear error when values are not dates."""
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s
    else:
        try:
            out = pd.to_datetime(s, errors="raise", utc=True, format="mixed")
        except (ValueError, TypeError, OverflowError) as error:
            reason = str(error).splitlines()[0][:80]
            raise ValueError(f"Column {name!r} in dates= is not dates ({reason}); expected "
                             "values like 2015-06-01 or 2015-06-01 12:00; fix or drop "
                             "them.") from None
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def date_part(when: pd.Series, part: str) -> np.ndarray:
    """One part (see :data:`DATE_PARTS`) of a datetime column, float32, NaN where the date is
    missing; ``elapsed`` is days since 1970-01-01.

    Example:
        >>> when = parse_dates(pd.Series(["2015-06-30", None]), "d")
        >>> date_part(when, "month").tolist(), date_part(when, "is_month_end").tolist()[0]
        ([6.0, nan], 1.0)
    """
    missing = when.isna().to_numpy()
    if part == "elapsed":
        ns = when.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        values = ns / 86_400e9
    elif part == "week":
        values = when.dt.isocalendar().week.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        attribute = {"dayofweek": "day_of_week", "dayofyear": "day_of_year"}.get(part, part)
        values = getattr(when.dt, attribute).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(missing, np.nan, values).astype(np.float32)
