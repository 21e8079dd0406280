"""Ratings tables: reading, ids, splits, titles, bad input, and MovieLens' standard splits."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import shared_dataset
from threeline.collab import CollabData
from threeline.collab.movielens import movielens_split, split_files, write_split_files

NAMES = ["user", "item", "rating", "ts"]


@pytest.fixture(scope="module")
def ml100k():
    return shared_dataset("ml-100k")


@pytest.fixture(scope="module")
def udata(ml100k) -> pd.DataFrame:
    return pd.read_csv(ml100k / "u.data", sep="\t", names=NAMES)


def test_from_csv_movielens_with_titles(ml100k):
    data = CollabData.from_csv(ml100k / "u.data", sep="\t", names=NAMES,
                               titles=ml100k / "u.item")
    assert len(data.train_idx) + len(data.valid_idx) == 100_000
    assert len(data.valid_idx) == 20_000
    assert set(data.train_idx).isdisjoint(data.valid_idx)
    assert data.n_users == 943 and data.n_items <= 1682
    assert data.title(1) == "Toy Story (1995)"
    assert data.title(242) == "Kolya (1996)"
    # u.item is latin-1: a title with an accented character survives
    assert any("é" in t for t in data.titles.values())
    # ids given either way reach the same code
    assert data.user_codes([196])[0] == data.user_codes(["196"])[0] > 0
    assert data.user_codes(["nobody"])[0] == 0


def test_string_ids_and_first_three_columns_by_default():
    df = pd.DataFrame({"who": ["ann", "bob", "ann", "cy", "bob", "cy"],
                       "what": ["x", "y", "y", "x", "z", "z"],
                       "stars": [5, 3, 4, 2, 1, 4], "extra": range(6)})
    data = CollabData.from_df(df, valid_idx=[5])
    assert data.columns.user == "who" and data.columns.rating == "stars"
    assert list(data.user_ids[1:]) == ["ann", "bob", "cy"]
    assert data.raw_ids("item", data.valid_idx).tolist() == ["z"]
    (users, _items), ratings = next(iter(data.batches("valid", "cpu")))
    assert users.dtype == torch.int64 and ratings.tolist() == [4.0]


def test_valid_after_splits_by_time(udata):
    cut = int(udata.ts.quantile(0.9))
    data = CollabData.from_df(udata, valid_after=cut)
    assert (udata.ts.to_numpy()[data.valid_idx] > cut).all()
    assert (udata.ts.to_numpy()[data.train_idx] <= cut).all()
    # users first seen after the cut are unknown (code 0), not given a random vector
    assert (data.users[data.valid_idx] == 0).any()


def test_random_split_is_seeded(udata):
    a = CollabData.from_df(udata.head(5000), seed=1)
    b = CollabData.from_df(udata.head(5000), seed=1)
    c = CollabData.from_df(udata.head(5000), seed=2)
    assert np.array_equal(a.valid_idx, b.valid_idx)
    assert not np.array_equal(a.valid_idx, c.valid_idx)


def test_batches_cover_the_split_once(udata):
    data = CollabData.from_df(udata.head(3000), batch_size=256)
    seen = torch.cat([y for _, y in data.batches("valid", "cpu")])
    assert len(seen) == len(data.valid_idx)
    train = list(data.batches("train", "cpu", shuffle=True, seed=3))
    assert len(train) == data.steps("train") == len(data.train_idx) // 256
    assert all(len(y) == 256 for _, y in train)


def test_duplicates_keep_the_last_and_say_how_many():
    df = pd.DataFrame({"u": [1, 1, 2, 2, 1], "i": [1, 2, 1, 2, 1], "r": [1, 2, 3, 4, 5]})
    with pytest.warns(UserWarning, match=r"^1 duplicated \(u, i\) rows: kept the last"):
        data = CollabData.from_df(df, valid_idx=[3])
    code = data.item_codes([1])[0]
    kept = data.ratings[(data.users == data.user_codes([1])[0]) & (data.items == code)]
    assert kept.tolist() == [5.0]


@pytest.mark.parametrize(("df", "message"), [
    (pd.DataFrame({"u": [1, 2], "i": [1, 2], "r": ["4", "good"]}), r"'r' must be numeric.*'good'"),
    (pd.DataFrame({"u": [7, 7, 7], "i": [1, 2, 3], "r": [1, 2, 3]}), "only one of its users"),
    (pd.DataFrame({"u": [1, None, 2], "i": [1, 2, 3], "r": [1, 2, 3]}),
     r"'u' has 1 missing values \(first in row 1\)"),
    (pd.DataFrame({"u": [1, 2]}), "needs user, item and rating columns"),
])
def test_bad_tables_fail_in_one_clear_line(df, message):
    with pytest.raises(ValueError, match=message) as err:
        CollabData.from_df(df)
    assert "\n" not in str(err.value)


def test_bad_arguments():
    df = pd.DataFrame({"u": [1, 2, 3], "i": [1, 2, 3], "r": [1, 2, 3]})
    with pytest.raises(ValueError, match="column 'score' is not in the table"):
        CollabData.from_df(df, rating="score")
    with pytest.raises(ValueError, match="valid_pct"):
        CollabData.from_df(df, valid_pct=1.5)
    with pytest.raises(ValueError, match="valid_after needs a time column"):
        CollabData.from_df(df, valid_after=10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CollabData.from_csv("no/such/file.csv")


def test_rebuilt_splits_equal_the_shipped_files(ml100k, tmp_path):
    built = split_files(ml100k / "u.data")
    assert sorted(built) == sorted(f"u{i}.{s}" for i in range(1, 6) for s in ("base", "test"))
    for name, blob in built.items():
        assert blob == (ml100k / name).read_bytes(), name
    written = write_split_files(ml100k / "u.data", tmp_path)
    assert (tmp_path / "u3.test").read_bytes() == (ml100k / "u3.test").read_bytes()
    assert len(written) == 10


def test_movielens_split_loads_base_and_test(ml100k):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the standard splits have no duplicates
        data = movielens_split(ml100k, 2)
    assert len(data.train_idx) == 80_000 and len(data.valid_idx) == 20_000
    assert data.title(50) == "Star Wars (1977)"
