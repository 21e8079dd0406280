"""Tables: reading CSV and Parquet, column types, preprocessing fitted on training rows only,
splits, date parts and the time split, regression targets. Real UCI Adult rows throughout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import shared_dataset
from threeline.tabular import TabularData
from threeline.tabular.columns import Columns
from threeline.tabular.preprocess import FIRST, MISSING, UNKNOWN, Preprocessor

ADULT_CATS = ["work_class", "education", "education_num", "marital_status", "occupation",
              "relationship", "race", "sex", "native_country"]
ADULT_CONTS = ["age", "fnlgwt", "capital_gain", "capital_loss", "hours_per_week"]


@pytest.fixture(scope="module")
def adult_csv():
    return shared_dataset("adult") / "adult.csv"


@pytest.fixture(scope="module")
def adult(adult_csv) -> pd.DataFrame:
    return pd.read_csv(adult_csv, na_values=["?"])


@pytest.fixture(scope="module")
def full(adult_csv) -> TabularData:
    return TabularData.from_csv(adult_csv, y="target")


def dated(adult: pd.DataFrame, n: int = 6000) -> pd.DataFrame:
    """The first ``n`` Adult rows with a date column constructed deterministically: row i is
    dated 2014-01-01 plus i // 12 days (so 500 days, 2014-01-01 to 2015-05-15), and every
    97th row has no date."""
    df = adult.iloc[:n].copy()
    days = pd.to_timedelta(np.arange(n) // 12, unit="D")
    when = pd.Series(pd.Timestamp("2014-01-01") + days, index=df.index).astype(object)
    when[np.arange(n) % 97 == 5] = None
    df.insert(3, "when", when.map(lambda t: None if t is None else t.strftime("%Y-%m-%d")))
    return df


def test_adult_types_split_and_missing(full, adult):
    assert full.cat_names == ADULT_CATS  # education_num: 16 whole-number values -> categories
    assert full.cont_names == ADULT_CONTS  # no continuous column has missing values
    assert full.target.classes == ["<=50K", ">50K"]
    assert len(full.rows["valid"]) == round(0.2 * len(adult)) == 6512
    assert len(full.rows["train"]) + 6512 == len(adult) == 32561
    assert set(full.rows["train"]).isdisjoint(full.rows["valid"])
    # "?" is a missing value: its own code, 0
    j = full.cat_names.index("work_class")
    missing = adult["work_class"].isna().to_numpy()
    assert missing.sum() == 1836
    assert (full.cats[missing, j] == MISSING).all() and (full.cats[~missing, j] >= FIRST).all()
    # targets encoded as the class's index
    assert (full.target.decode(full.y) == adult["target"].to_numpy()).all()


def test_preprocessing_is_fitted_on_training_rows_only(full, adult):
    train = adult.iloc[full.rows["train"]]
    for j, col in enumerate(full.prep.conts):
        values = train[col.name].astype(float)
        assert col.median == pytest.approx(values.median())
        assert col.mean == pytest.approx(values.mean())
        assert col.std == pytest.approx(values.std(ddof=0))
        assert abs(float(full.conts[full.rows["train"], j].mean())) < 1e-4
    occupation = full.prep.cats[full.cat_names.index("occupation")]
    assert occupation.classes == sorted(train["occupation"].dropna().unique())


def test_bin_edges_span_a_column_dominated_by_one_value(full, adult):
    """capital_gain is 0 in most rows: its bins are quantiles of the distinct training values,
    so the gains themselves get many bins (row quantiles gave 3)."""
    train = adult.iloc[full.rows["train"]]["capital_gain"]
    assert (train == 0).mean() > 0.9
    col = full.prep.conts[full.cont_names.index("capital_gain")]
    edges = np.array(col.edges) * col.std + col.mean  # back to dollars
    assert len(edges) > 20 and edges.min() == pytest.approx(train.min(), abs=1e-2)
    assert edges.max() == pytest.approx(train.max(), rel=1e-6)
    assert np.all(np.diff(edges) > 0)


def test_category_only_in_validation_rows_is_unknown(adult_csv, adult):
    only = np.flatnonzero(adult["native_country"].to_numpy() == "Holand-Netherlands")
    assert len(only) == 1  # a country that appears once in Adult
    valid_idx = np.concatenate([only, np.arange(100)])
    data = TabularData.from_csv(adult_csv, y="target", valid_idx=valid_idx)
    j = data.cat_names.index("native_country")
    assert "Holand-Netherlands" not in data.prep.cats[j].classes
    assert data.cats[only[0], j] == UNKNOWN
    assert sorted(data.rows["valid"]) == sorted(set(valid_idx.tolist()))


def test_preprocessing_as_json_encodes_new_rows_the_same(full, adult):
    prep = Preprocessor.from_dict(json.loads(json.dumps(full.prep.to_dict())))
    rows = adult.iloc[:500].sample(frac=1.0, random_state=0)  # any order of rows
    shuffled = rows[list(reversed(rows.columns))].assign(extra=1)  # any order of columns
    cats, conts = prep.transform(Columns(shuffled))
    np.testing.assert_array_equal(cats, full.cats[rows.index.to_numpy()])
    np.testing.assert_allclose(conts, full.conts[rows.index.to_numpy()], rtol=1e-6)
    new = rows.iloc[:3].copy()
    new["occupation"] = ["Astronaut", None, "Sales"]
    new["age"] = [np.nan, 30, 40]
    cats, conts = prep.transform(Columns(new))
    j = prep.cat_names.index("occupation")
    assert cats[:, j].tolist()[:2] == [UNKNOWN, MISSING]
    assert np.isfinite(conts).all()
    assert conts[0, 0] == pytest.approx((prep.conts[0].median - prep.conts[0].mean)
                                        / prep.conts[0].std, rel=1e-5)
    with pytest.raises(ValueError, match=r"lacks columns \['age', 'sex'\]"):
        prep.transform(Columns(rows.drop(columns=["age", "sex"])))


def test_cat_and_cont_overrides_and_seeds(adult):
    df = adult.iloc[:3000]
    data = TabularData.from_df(df, y="target", cat=["age"], cont=["education_num"], seed=1)
    assert "age" in data.cat_names and "education_num" in data.cont_names
    again = TabularData.from_df(df, y="target", seed=1)
    other = TabularData.from_df(df, y="target", seed=2)
    np.testing.assert_array_equal(data.rows["valid"], again.rows["valid"])
    assert set(data.rows["valid"]) != set(other.rows["valid"])
    with pytest.raises(ValueError, match="both cat= and cont="):
        TabularData.from_df(df, y="target", cat=["age"], cont=["age"])


def test_parquet_reads_like_csv(tmp_path, adult, full):
    path = tmp_path / "adult.parquet"
    adult.to_parquet(path)
    data = TabularData.from_parquet(path, y="target")
    assert data.cat_names == full.cat_names and data.cont_names == full.cont_names
    np.testing.assert_array_equal(data.cats, full.cats)
    np.testing.assert_allclose(data.conts, full.conts, rtol=1e-6)


def test_date_parts_on_a_dated_adult_table(adult):
    df = dated(adult)
    data = TabularData.from_df(df, y="target", dates=["when"], seed=0)
    parts = ["when_" + p for p in ("month", "week", "day", "dayofweek", "is_month_end")]
    assert set(parts) <= set(data.cat_names)
    assert {"when_year", "when_dayofyear", "when_elapsed"} <= set(data.cont_names)
    assert "when_na" in data.cat_names  # some training rows have no date
    when = pd.to_datetime(df["when"])
    prep = data.prep
    for i in (0, 1000, 5999):  # row 5999: 2015-05-15, a Friday
        def cat(name, i=i):
            col = prep.cats[prep.cat_names.index(name)]
            return col.classes[data.cats[i, prep.cat_names.index(name)] - FIRST]

        def cont(name, i=i):
            col = prep.conts[prep.cont_names.index(name)]
            return data.conts[i, prep.cont_names.index(name)] * col.std + col.mean

        assert cat("when_month") == when[i].month
        assert cat("when_week") == when[i].isocalendar().week
        assert cat("when_dayofweek") == when[i].day_of_week
        assert cat("when_is_month_end") == float(when[i].is_month_end)
        assert cont("when_year") == pytest.approx(when[i].year, abs=1e-3)
        days = (when[i] - pd.Timestamp("1970-01-01")).days
        assert cont("when_elapsed") == pytest.approx(days, abs=0.05)
    assert cat("when_dayofweek", 5999) == 4.0
    missing = df["when"].isna().to_numpy()
    j = prep.cat_names.index("when_month")
    assert (data.cats[missing, j] == MISSING).all()


def test_time_split_on_a_dated_adult_table(adult):
    df = dated(adult)
    data = TabularData.from_df(df, y="target", dates=["when"], valid_after="2015-03-01")
    when = pd.to_datetime(df["when"])
    valid, train = when.iloc[data.rows["valid"]], when.iloc[data.rows["train"]]
    assert (valid > pd.Timestamp("2015-03-01")).all()
    assert ((train <= pd.Timestamp("2015-03-01")) | train.isna()).all()
    assert len(valid) == ((when > pd.Timestamp("2015-03-01")).sum())
    with pytest.raises(ValueError, match="time_col="):
        TabularData.from_df(df, y="target", valid_after="2015-03-01")


def test_regression_target_with_log(adult):
    df = adult.iloc[:4000].assign(income=lambda d: d["capital_gain"] + d["hours_per_week"] * 50)
    data = TabularData.from_df(df.drop(columns=["target"]), y="income", log_y=True)
    assert data.target.task == "regression" and data.target.log
    np.testing.assert_allclose(data.y, np.log1p(df["income"].to_numpy()), rtol=1e-5)
    lo, hi = data.target.y_range
    train = data.y[data.rows["train"]]
    assert lo < train.min() and hi > train.max()
    assert "regression of 'income' (log)" in repr(data)
