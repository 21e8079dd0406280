"""Bad tables give one line saying what was found, what was expected and how to fix it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import shared_dataset
from threeline import demo_path
from threeline.tabular import TabularData


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    return pd.read_csv(shared_dataset("adult") / "adult.csv", na_values=["?"]).iloc[:2000]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_empty_table(adult, tmp_path):
    with pytest.raises(ValueError, match="The table is empty") as e:
        TabularData.from_df(adult.iloc[:0], y="target")
    assert "expected rows" in one_line(e)
    path = tmp_path / "header_only.csv"
    adult.iloc[:0].to_csv(path, index=False)
    with pytest.raises(ValueError, match="empty"):
        TabularData.from_csv(path, y="target")


def test_target_missing_or_all_missing(adult):
    with pytest.raises(ValueError, match=r"Target column 'income' is not in the table") as e:
        TabularData.from_df(adult, y="income")
    assert "'target'" in one_line(e)  # names the columns there are
    with pytest.raises(ValueError, match="missing in all 2000 rows") as e:
        TabularData.from_df(adult.assign(target=np.nan), y="target")
    one_line(e)


def test_single_class(adult):
    rich = adult[adult["target"] == ">50K"]
    with pytest.raises(ValueError, match=r"single class \('>50K'\)") as e:
        TabularData.from_df(rich, y="target")
    assert "at least two classes" in one_line(e)


def test_mixed_types(adult, tmp_path):
    mixed = adult.assign(work_class=adult["work_class"].astype(object))
    mixed.loc[mixed.index[:5], "work_class"] = 7
    with pytest.raises(ValueError, match="Column 'work_class' mixes types") as e:
        TabularData.from_df(mixed, y="target")
    assert "cat=" in one_line(e)
    # a numeric column with a stray word, as read from a CSV
    path = tmp_path / "stray.csv"
    text = adult.assign(age=adult["age"].astype(str))
    text.loc[text.index[3], "age"] = "forty"
    text.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"Column 'age' is numbers except for values such as "
                                         r"\['forty'\]") as e:
        TabularData.from_csv(path, y="target")
    one_line(e)
    data = TabularData.from_csv(path, y="target", cat=["age"])  # the suggested fix works
    assert "age" in data.cat_names


def test_infinities(adult):
    bad = adult.assign(capital_gain=adult["capital_gain"].astype(float))
    bad.loc[bad.index[[4, 9]], "capital_gain"] = np.inf
    with pytest.raises(ValueError, match=r"'capital_gain' has 2 infinite values \(rows \[4, 9\]") \
            as e:
        TabularData.from_df(bad, y="target")
    assert "replace" in one_line(e)


def test_files_that_are_not_csv(tmp_path):
    photo = next(demo_path("dogscats").rglob("*.jpg"))
    renamed = tmp_path / "photo.csv"
    renamed.write_bytes(photo.read_bytes())
    with pytest.raises(ValueError, match="is not a CSV file: it holds binary data") as e:
        TabularData.from_csv(renamed, y="target")
    one_line(e)
    ragged = tmp_path / "notes.csv"
    ragged.write_text("name,age\nann,3\nbob,4,extra,fields\n")
    with pytest.raises(ValueError, match="is not a readable CSV file") as e:
        TabularData.from_csv(ragged, y="age")
    one_line(e)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TabularData.from_csv(tmp_path / "nope.csv", y="target")
    fake = tmp_path / "fake.parquet"
    fake.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="is not a readable Parquet file"):
        TabularData.from_parquet(fake, y="b")


def test_bad_arguments(adult):
    with pytest.raises(ValueError, match="valid_pct must be"):
        TabularData.from_df(adult, y="target", valid_pct=1.5)
    with pytest.raises(ValueError, match="valid_idx holds positions outside"):
        TabularData.from_df(adult, y="target", valid_idx=[0, 5000])
    with pytest.raises(ValueError, match="Date column 'when' is not among"):
        TabularData.from_df(adult, y="target", dates=["when"])
    with pytest.raises(ValueError, match="not dates"):
        TabularData.from_df(adult, y="target", dates=["occupation"])
    with pytest.raises(TypeError, match="pandas DataFrame"):
        TabularData.from_df(adult.to_numpy(), y="target")
