"""Tables and ratings through ``python -m threeline.serve``: a tabular model trained one epoch on
3,000 rows of adult.csv and a ratings model trained one epoch on MovieLens 100k (split u1), each
saved as a run folder and served by a real uvicorn process, driven over HTTP with httpx and, for
the page, by headless Chromium (screenshots under the tests' tmp_path; ``pytest -s`` prints them).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from serving import browser, start_server

from conftest import shared_dataset
from threeline.serve.model import ModelHost
from threeline.serve.records import Refused

N_ROWS = 3000
MAX_ROWS, MAX_K = 8, 50
ARGS = ["--device", "cpu", "--threads", "1", "--max-rows", str(MAX_ROWS), "--max-k", str(MAX_K)]


def _save_run(learn, folder: Path) -> Path:
    """A run folder as ``threeline train --out`` writes it: model.*, history.csv, args.json."""
    learn.save(folder / "model")
    pd.DataFrame(learn.history).to_csv(folder / "history.csv", index=False)
    (folder / "args.json").write_text(json.dumps({"epochs": len(learn.history)}))
    return folder


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    return pd.read_csv(shared_dataset("adult") / "adult.csv", na_values=["?"])


@pytest.fixture(scope="module")
def table_learn(adult):
    from threeline.tabular import TabularData, tabular_learner

    data = TabularData.from_df(adult.iloc[:N_ROWS], y="target", seed=0)
    learn = tabular_learner(data, device="cpu", progress=False, seed=0)
    learn.checkpoint_dir = False
    learn.fit(1e-2, 1)
    return learn


@pytest.fixture(scope="module")
def ratings_learn():
    from threeline.collab import collab_learner
    from threeline.collab.movielens import movielens_split

    data = movielens_split(shared_dataset("ml-100k"), 1, batch_size=4096)
    learn = collab_learner(data, n_factors=8, device="cpu", progress=False, seed=0)
    learn.checkpoint_dir = False
    learn.fit(2e-2, 1)
    return learn


def _serve(learn, name: str, tmp_path_factory):
    folder = _save_run(learn, tmp_path_factory.mktemp("runs") / name)
    log = tmp_path_factory.mktemp("serve") / "server.log"
    process, url = start_server(folder, log, *ARGS)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def table_url(table_learn, tmp_path_factory):
    yield from _serve(table_learn, "adult", tmp_path_factory)


@pytest.fixture(scope="module")
def ratings_url(ratings_learn, tmp_path_factory):
    yield from _serve(ratings_learn, "movies", tmp_path_factory)


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON objects (NaN -> null), as a client sends them."""
    return json.loads(frame.to_json(orient="records"))


def _expect(learn, rows: list[dict]) -> pd.DataFrame:
    return learn.predict(pd.DataFrame(rows))


def _assert_matches(answer: dict, expected: pd.DataFrame, classes: list[str]) -> None:
    assert len(answer["predictions"]) == len(expected)
    for item, (_, row) in zip(answer["predictions"], expected.iterrows(), strict=True):
        got = {t["label"]: t["probability"] for t in item["top"]}
        assert got == pytest.approx({c: row[f"p_{c}"] for c in classes}, abs=1e-5)
        assert item["label"] == row["target_pred"] == item["top"][0]["label"]


# ------------------------------------------------------------------------------ tables

def test_table_description_names_the_columns(table_url, table_learn):
    info = httpx.get(table_url + "/model").json()
    assert info["name"] == "adult" and info["input"] == "rows" and info["epochs"] == 1
    assert info["classes"] == ["<=50K", ">50K"] and info["target"]["task"] == "classification"
    assert info["limits"]["max_rows"] == MAX_ROWS
    prep = table_learn.prep
    assert [c["name"] for c in info["columns"]] == prep.sources
    cats = {c.source: c for c in prep.cats if c.kind != "flag"}
    conts = {c.source: c for c in prep.conts}
    for column in info["columns"]:
        name = column["name"]
        if column["kind"] == "categorical":
            assert column["categories"] == cats[name].classes  # 13 == 13.0
        else:
            assert column["kind"] == "continuous" and column["typical"] == conts[name].median
    kinds = {c["name"]: c["kind"] for c in info["columns"]}
    assert kinds["age"] == "continuous" and kinds["work_class"] == "categorical"
    assert "Private" in next(c for c in info["columns"] if c["name"] == "work_class")["categories"]


def test_table_predictions_match_the_learner(table_url, table_learn, adult):
    rows = _records(adult.iloc[N_ROWS:N_ROWS + 6].drop(columns=["target"]))
    rows[1] |= {"sex": "Alien", "native_country": "Atlantis"}  # unknown categories: fine
    rows[2] |= {"age": None, "work_class": None}  # missing values: fine
    classes = ["<=50K", ">50K"]
    with httpx.Client(base_url=table_url, timeout=120) as client:
        answer = client.post("/predict", json={"rows": rows})
        assert answer.status_code == 200, answer.text
        _assert_matches(answer.json(), _expect(table_learn, rows), classes)
        extra = client.post("/predict", json={"rows": _records(adult.iloc[:1])},  # + target
                            params={"top_k": 1}).json()["predictions"][0]
        assert len(extra["top"]) == 1
        assert extra["label"] == _expect(table_learn, _records(adult.iloc[:1]))["target_pred"][0]


def test_concurrent_rows_share_forward_passes(table_url, table_learn, adult):
    rows = _records(adult.iloc[N_ROWS:N_ROWS + 24].drop(columns=["target"]))

    def ask(row):
        with httpx.Client(base_url=table_url, timeout=120) as c:
            return c.post("/predict", json={"rows": [row]})

    with ThreadPoolExecutor(len(rows)) as pool:
        answers = list(pool.map(ask, rows))
    merged = {"predictions": [a.json()["predictions"][0] for a in answers]}
    _assert_matches(merged, _expect(table_learn, rows), ["<=50K", ">50K"])
    health = httpx.get(table_url + "/health").json()
    assert health["waiting"] == 0 and health["batches"] >= 1


def test_table_bad_input_gets_clear_errors_and_the_server_keeps_serving(table_url, adult):
    good = _records(adult.iloc[:1].drop(columns=["target"]))[0]
    partial = {k: v for k, v in good.items() if k not in ("age", "sex")}
    cases = [
        ({"json": {"rows": [good, partial]}}, 422, "rows[1] lacks the columns ['age', 'sex']"),
        ({"json": {"rows": [good] * (MAX_ROWS + 1)}}, 413, f"at most {MAX_ROWS}"),
        ({"json": {"rows": [{**good, "age": "old"}]}}, 422, "rows[0]['age'] is 'old'"),
        ({"json": {"rows": [{**good, "sex": ["a"]}]}}, 422, "expected a category"),
        ({"json": {"rows": good}}, 400, "a non-empty list of objects"),
        ({"json": {"rows": []}}, 400, "a non-empty list of objects"),
        ({"json": [good]}, 400, "a non-empty list of objects"),
        ({"json": {"texts": ["hello"]}}, 400, '{"rows"'),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
         "not valid JSON"),
        ({"files": {"file": ("a.csv", b"age\n3")}}, 415, "table rows"),
    ]
    with httpx.Client(base_url=table_url, timeout=120) as client:
        for kwargs, status, words in cases:
            answer = client.post("/predict", **kwargs)
            assert answer.status_code == status, (kwargs, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert words in answer.json()["error"], answer.json()
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/predict", json={"rows": [good]}).status_code == 200


def test_a_row_the_model_cannot_read_fails_alone(table_learn, adult, tmp_path):
    host = ModelHost(_save_run(table_learn, tmp_path / "adult"), device="cpu", threads=1)
    try:
        host.start().result(timeout=300)
        assert host.state == "ready", host.error
        good = _records(adult.iloc[:2].drop(columns=["target"]))
        results = host.predict_rows([good[0], {**good[1], "age": "old"}])  # check_rows skipped
        assert isinstance(results[1], Refused) and "'age'" in results[1].message
        expected = _expect(table_learn, good[:1])[["p_<=50K", "p_>50K"]].to_numpy()[0]
        np.testing.assert_allclose(results[0], expected, atol=1e-5)
    finally:
        host.close()


# ----------------------------------------------------------------------------- ratings

def test_ratings_description_lists_users_and_titles(ratings_url, ratings_learn):
    info = httpx.get(ratings_url + "/model").json()
    catalog = ratings_learn.catalog
    assert info["input"] == "user" and info["classes"] == []
    assert (info["n_users"], info["n_items"]) == (catalog.n_users, catalog.n_items)
    assert info["users"] == list(catalog.user_ids[1:]) and info["users_listed"] == 943
    assert info["has_titles"] and info["items"][0] == {"item": catalog.item_ids[1],
                                                       "title": catalog.title(1)}
    assert info["valid_rmse"] == pytest.approx(ratings_learn.history[-1]["rmse"])
    assert "user_ids" not in info["description"]["catalog"]  # the answer stays bounded
    assert info["limits"]["max_k"] == MAX_K


@pytest.mark.parametrize("user", [196, "1"])
def test_recommendations_match_the_learner(ratings_url, ratings_learn, user):
    answer = httpx.post(ratings_url + "/predict", json={"user": user, "k": 10}, timeout=120)
    assert answer.status_code == 200, answer.text
    got = answer.json()["predictions"][0]
    expected = ratings_learn.recommend(int(user), k=10)
    assert [r["item"] for r in got["items"]] == list(expected["item"])
    assert [r["title"] for r in got["items"]] == list(expected["title"])
    assert [r["predicted"] for r in got["items"]] == pytest.approx(
        expected["predicted"].tolist(), abs=1e-4)
    code = int(ratings_learn.catalog.user_codes([user])[0])
    rated = set(ratings_learn.catalog.item_ids[ratings_learn.catalog.rated(code)])
    assert not rated & {r["item"] for r in got["items"]}
    default = httpx.post(ratings_url + "/predict", json={"user": user}, timeout=120).json()
    assert len(default["predictions"][0]["items"]) == 10


def test_ratings_bad_input_gets_clear_errors_and_the_server_keeps_serving(ratings_url):
    cases = [
        ({"json": {"user": 424242}}, 422, "user 424242 is not among the model's 943 users"),
        ({"json": {"user": "nobody", "k": 3}}, 422, "not among"),
        ({"json": {"user": [196]}}, 400, '{"user": 196, "k": 10}'),
        ({"json": {"user": True}}, 400, '{"user": 196, "k": 10}'),
        ({"json": {"rows": [{"user": 196}]}}, 400, '{"user": 196, "k": 10}'),
        ({"json": {"user": 196, "k": 0}}, 400, "k must be a whole number"),
        ({"json": {"user": 196, "k": "ten"}}, 400, "k must be a whole number"),
        ({"json": {"user": 196, "k": MAX_K + 1}}, 413, f"at most {MAX_K} recommendations"),
        ({"data": {"user": "196"}}, 415, "a user"),
    ]
    with httpx.Client(base_url=ratings_url, timeout=120) as client:
        for kwargs, status, words in cases:
            answer = client.post("/predict", **kwargs)
            assert answer.status_code == status, (kwargs, answer.text)
            assert words in answer.json()["error"], answer.json()
        assert client.get("/health").json()["status"] == "ok"
        again = client.post("/predict", json={"user": 196, "k": 3})
        assert again.status_code == 200 and len(again.json()["predictions"][0]["items"]) == 3


# ---------------------------------------------------------------------------- the page

def _open(driver, url: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.find_element(By.ID, "model-status").get_attribute("data-state")
               == "ok")
    return wait


def _screenshot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    assert Image.open(path).size[0] > 0


def test_table_form_in_a_headless_browser(table_url, table_learn, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    info = httpx.get(table_url + "/model").json()
    row = {c["name"]: c["typical"] if c["kind"] == "continuous" else c["categories"][0]
           for c in info["columns"]}  # the form's defaults
    row |= {"age": 52.0, "education": "Masters", "sex": "Male", "hours_per_week": 60.0}
    expected = _expect(table_learn, [row]).iloc[0]
    driver = browser()
    try:
        wait = _open(driver, table_url)
        assert driver.find_element(By.ID, "rows-input").is_displayed()
        assert driver.find_element(By.ID, "unsupported-input").get_attribute("hidden")
        form = driver.find_element(By.ID, "row-form")
        fields = form.find_elements(By.CSS_SELECTOR, "select, input")
        assert [f.get_attribute("name") for f in fields] == list(row)
        for name in ("age", "hours_per_week"):
            box = form.find_element(By.NAME, name)
            assert box.get_attribute("type") == "number"
            box.clear()
            box.send_keys(str(int(row[name])))
        for name in ("education", "sex"):
            Select(form.find_element(By.NAME, name)).select_by_visible_text(row[name])
        driver.find_element(By.ID, "rows-submit").click()
        card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '.card[data-state="done"]'))
        labels = [e.text for e in card.find_elements(By.CLASS_NAME, "label-name")]
        shown = [e.text for e in card.find_elements(By.CLASS_NAME, "probability")]
        assert labels[0] == expected["target_pred"] and sorted(labels) == ["<=50K", ">50K"]
        assert shown[0] == f"{100 * expected[f'p_{labels[0]}']:.1f} %"
        assert "age 52" in card.find_element(By.CLASS_NAME, "name").text
        _screenshot(driver, tmp_path / "serve-table.png")
    finally:
        driver.quit()


def test_user_picker_in_a_headless_browser(ratings_url, ratings_learn, tmp_path):
    from selenium.webdriver.common.by import By

    expected = ratings_learn.recommend(196, k=5)
    driver = browser()
    try:
        wait = _open(driver, ratings_url)
        assert driver.find_element(By.ID, "user-input").is_displayed()
        options = driver.find_elements(By.CSS_SELECTOR, "#user-list option")
        assert len(options) == 943 and options[0].get_attribute("value") == "1"
        driver.find_element(By.ID, "user-box").send_keys("196")
        k = driver.find_element(By.ID, "user-k")
        k.clear()
        k.send_keys("5")
        driver.find_element(By.ID, "user-submit").click()
        card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '.card[data-state="done"]'))
        items = card.find_elements(By.CSS_SELECTOR, ".recs li")
        assert [i.find_element(By.CLASS_NAME, "title").text for i in items] == list(
            expected["title"])
        assert items[0].find_element(By.CLASS_NAME, "rating").text == \
            f"{expected['predicted'].iloc[0]:.2f}"
        driver.find_element(By.ID, "user-box").clear()
        driver.find_element(By.ID, "user-box").send_keys("424242\n")  # Enter asks too
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.card[data-state="error"]'))
        error = driver.find_element(By.CSS_SELECTOR, '.card[data-state="error"] .error').text
        assert "not among the model's 943 users" in error
        _screenshot(driver, tmp_path / "serve-ratings.png")
    finally:
        driver.quit()
