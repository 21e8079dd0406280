"""`python -m threeline.serve` as users meet it: a real uvicorn process on a free 127.0.0.1 port,
driven over HTTP with httpx and, for the page, by headless Chromium through Selenium.

The browser test needs Debian's chromium and chromium-driver (scripts/install_browser.sh installs
them); without them it is skipped, and it fails when CI=true. Its screenshot is saved under the
test's tmp_path (the path is printed; ``pytest -s`` shows it).
"""

from __future__ import annotations

import io
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serving import browser, start_server

LIMITS = ["--max-pixels", "1000000", "--max-files", "8", "--max-request-mb", "20"]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    while_loading: list  # (health, predict, health) responses seen before the model was ready
    log: Path

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def _photos(root: Path) -> dict[str, list[Path]]:
    return {c: sorted((root / "valid" / c).glob("*.jpg"))[:2] for c in ("cats", "dogs")}


@pytest.fixture(scope="module")
def run_folder(trained, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "pets"
    trained.save(folder / "model")
    return folder


@pytest.fixture(scope="module")
def server(run_folder, dogscats_demo, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    photo = _photos(dogscats_demo)["dogs"][0].read_bytes()
    early = []

    def ask_early(client: httpx.Client, health: httpx.Response) -> None:
        predict = client.post("/predict", files={"file": ("a.jpg", photo)})
        early.append((health, predict, client.get("/health")))

    process, url = start_server(run_folder, log, *LIMITS, while_loading=ask_early)
    try:
        yield Server(process, url, early, log)
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def test_requests_while_loading_get_503_with_retry_after(server):
    assert server.while_loading, "the model loaded before the server answered once"
    refused = 0
    for health, predict, after in server.while_loading:
        assert health.status_code == 503 and health.json()["status"] == "loading"
        if predict.status_code == 200:  # the model became ready between the two requests
            assert after.json()["status"] == "ok", predict.text
            continue
        assert predict.status_code == 503, predict.text
        assert "still loading" in predict.json()["error"]
        assert predict.headers["retry-after"] == "1"
        refused += 1
    assert refused > 0


def test_model_description_and_page_assets(client, trained):
    info = client.get("/model").json()
    assert info["name"] == "pets" and info["application"] == "threeline.vision"
    assert info["input"] == "image" and info["arch"] == "efficientnet_lite0"
    assert info["classes"] == trained.classes and info["input_size"] == [3, 224, 224]
    assert info["valid_accuracy"] == pytest.approx(trained.history[-1]["accuracy"])
    assert info["limits"]["max_files"] == 8
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert client.get("/health").json()["device"] == "cpu"


def test_predict_matches_the_learner_and_draws_heat_maps(client, trained, dogscats_demo):
    photos = _photos(dogscats_demo)
    files = [p for c in ("cats", "dogs") for p in photos[c]]
    upload = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in files]
    answer = client.post("/predict", files=upload, params={"top_k": 2})
    assert answer.status_code == 200, answer.text
    expected = np.exp(trained.predict(files))  # (4, 2)
    for path, item, probs in zip(files, answer.json()["predictions"], expected, strict=True):
        assert item["filename"] == path.name and item["label"] == path.parent.name
        got = {t["label"]: t["probability"] for t in item["top"]}
        assert got == pytest.approx(dict(zip(trained.classes, probs, strict=True)), abs=1e-4)
    one = client.post("/predict", files=upload[:1], params={"heatmap": 1}).json()
    item = one["predictions"][0]
    assert item["label"] == "cats" and len(item["top"]) == 2  # top_k capped by the classes
    png = Image.open(io.BytesIO(_data_url_bytes(item["heatmap"])))
    assert png.size == (224, 224) and png.mode == "RGBA"
    alpha = np.asarray(png)[..., 3]
    assert alpha.max() > 150 and alpha.min() < 50  # somewhere hot, somewhere clear
    assert item["heatmap_box"] == pytest.approx(  # 200 x 200 photo: the central 224 of 256
        {"left": 0.0625, "top": 0.0625, "width": 0.875, "height": 0.875})


def test_bad_input_gets_clear_errors_and_the_server_keeps_serving(client, server, dogscats_demo,
                                                                  tmp_path):
    photo = _photos(dogscats_demo)["dogs"][0].read_bytes()
    bomb = io.BytesIO()
    Image.new("RGB", (2000, 2000)).save(bomb, "PNG")  # 4 megapixels in a few kB, limit is 1
    rgba = io.BytesIO()
    Image.new("RGBA", (300, 200), (200, 120, 40, 128)).save(rgba, "PNG")
    cases = [
        ({"files": {"file": ("notes.txt", b"not a picture at all")}}, 415, "not an image"),
        ({"files": {"file": ("empty.jpg", b"")}}, 415, "not an image"),
        ({"files": {"file": ("cut.jpg", photo[:len(photo) // 2])}}, 422, "truncated"),
        ({"files": {"file": ("bomb.png", bomb.getvalue())}}, 413, "2000x2000 pixels"),
        ({"files": [("file", (f"{i}.jpg", photo)) for i in range(9)]}, 413, "Too many files"),
        ({"data": {"note": "no file"}, "files": {}}, 415, "multipart"),
        ({"files": [("note", (None, b"a field, no file"))]}, 400, "No image files"),
        ({"json": {"texts": ["hello"]}}, 415, "takes images"),
        ({"files": {"file": ("a.jpg", photo)}, "params": {"top_k": "many"}}, 400, "top_k"),
    ]
    for kwargs, status, words in cases:
        answer = client.post("/predict", **kwargs)
        assert answer.status_code == status, (kwargs.keys(), answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert words in answer.json()["error"]
    named = client.post("/predict", files={"file": ("../../etc/dog.jpg", photo)}).json()
    assert named["predictions"][0]["filename"] == "dog.jpg"
    assert client.post("/predict", files={"file": ("a.png", rgba.getvalue())}).status_code == 200
    wide = io.BytesIO()  # a panorama: the heat map's box is placed on the whole picture
    Image.open(io.BytesIO(photo)).resize((3000, 300)).save(wide, "JPEG")
    item = client.post("/predict", files={"file": ("wide.jpg", wide.getvalue())},
                       params={"heatmap": 1}).json()["predictions"][0]
    assert (item["width"], item["height"]) == (3000, 300)
    assert item["heatmap_box"] == pytest.approx(  # 2560 x 256 after resizing, 224 in the middle
        {"left": 1168 / 2560, "top": 16 / 256, "width": 224 / 2560, "height": 224 / 256})

    before = server.rss_mb()
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:
        f.truncate(200 * 2**20)  # 200 MB, sparse on disk; httpx streams it
    with big.open("rb") as f:
        answer = client.post("/predict", files={"file": ("big.jpg", f)})
    assert answer.status_code == 413 and "at most 20.0 MB" in answer.json()["error"]
    assert server.rss_mb() - before < 50  # the body was dropped as it came, never held
    health = client.get("/health").json()
    assert health["status"] == "ok"
    again = client.post("/predict", files={"file": ("dog.jpg", photo)})
    assert again.status_code == 200 and again.json()["predictions"][0]["label"] == "dogs"


def test_concurrent_requests_share_forward_passes(server, dogscats_demo):
    photos = _photos(dogscats_demo)
    jobs = [(c, p.read_bytes()) for c in ("cats", "dogs") for p in photos[c]] * 6  # 24

    def ask(job):
        with httpx.Client(base_url=server.url, timeout=300) as c:
            return job[0], c.post("/predict", files={"file": ("x.jpg", job[1])})

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(ask, jobs))
    for label, answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["label"] == label
    health = httpx.get(server.url + "/health").json()
    assert health["largest_batch"] > 1 and health["waiting"] == 0


def test_page_in_a_headless_browser(server, dogscats_demo, tmp_path):
    driver = browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photos = _photos(dogscats_demo)
    dog, cat = photos["dogs"][1], photos["cats"][1]
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 180)
        wait.until(lambda d: d.find_element(By.ID, "model-status").get_attribute("data-state")
                   == "ok")
        header = driver.find_element(By.TAG_NAME, "header").text
        assert "pets" in header and "224 × 224" in header and "validation accuracy" in header
        driver.find_element(By.ID, "file-input").send_keys(f"{dog}\n{cat}")
        done = '.card[data-state="done"]'
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) == 2)
        wait.until(lambda d: all(c.get_attribute("data-heatmap") == "loaded"
                                 for c in d.find_elements(By.CSS_SELECTOR, done)))
        for card in driver.find_elements(By.CSS_SELECTOR, done):
            name = card.find_element(By.CLASS_NAME, "name").text
            top = card.find_element(By.CLASS_NAME, "label-name").text
            assert top == {dog.name: "dogs", cat.name: "cats"}[name]
            overlay = card.find_element(By.CSS_SELECTOR, "img.heatmap")
            assert overlay.is_displayed()
            assert driver.execute_script("return arguments[0].naturalWidth", overlay) == 224
        shot = tmp_path / "serve-page.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        assert Image.open(shot).size[0] > 0
        driver.find_element(By.ID, "show-heatmap").click()  # the toggle hides the heat maps
        assert not driver.find_element(By.CSS_SELECTOR, "img.heatmap").is_displayed()
    finally:
        driver.quit()


def _data_url_bytes(url: str) -> bytes:
    import base64

    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix):])
