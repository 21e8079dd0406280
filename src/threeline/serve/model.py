"""The served model: what the run folder says about it, and the learner, loaded once.

The description (``model.json``, ``args.json``, ``history.csv``) is read at once, without torch,
so the page and ``GET /model`` answer while the weights load in the model's own thread; that
thread then runs every forward pass, one batch after another: images, texts, table rows
(``learn.predict(DataFrame)``) and recommendations (``learn.recommend``).

Example:
    >>> host = ModelHost("runs/pets", device="cpu")  # doctest: +SKIP
    >>> host.info["classes"]  # doctest: +SKIP
    ['cats', 'dogs']
"""

from __future__ import annotations

import csv
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from threeline.serve.records import (
    Refused,
    application_info,
    collab_description,
    recommendation_list,
    unknown_user,
)

# the input widget of the page, from the model description's "application"
INPUTS = {"threeline.vision": "image", "threeline.text": "text",
          "threeline.tabular": "rows", "threeline.collab": "user"}


def model_files(run_folder: str | os.PathLike) -> tuple[Path, Path]:
    """The run folder (or ``learn.save`` base name) and its ``.json`` description.

    Raises:
        FileNotFoundError: when no model description is there.
    """
    path = Path(run_folder).expanduser()
    if path.is_dir():
        meta = path / "model.json"
    elif path.suffix in (".json", ".safetensors"):
        meta = path.with_suffix(".json")
    else:
        meta = path.with_name(path.name + ".json")
    if not meta.is_file():
        raise FileNotFoundError(f"No model in {path}: expected {meta}. Give a run folder made by "
                                f"`threeline train ... --out FOLDER` (or learn.save files).")
    return (path if path.is_dir() else meta.parent), meta


def read_info(run_folder: str | os.PathLike) -> dict[str, Any]:
    """What the page shows about a model: name, input widget, classes, size, accuracy.

    Example:
        >>> read_info("runs/pets")["valid_accuracy"]  # doctest: +SKIP
        0.9875
    """
    folder, meta = model_files(run_folder)
    try:
        description = json.loads(meta.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta} is not a readable model description ({err}); save the model "
                         f"again.") from err
    if not isinstance(description, dict):
        raise ValueError(f"{meta} is not a model description (a JSON object); save the model "
                         f"again.")
    application = str(description.get("application") or "threeline.vision")
    extra = application_info(application, description)
    if extra is None and not isinstance(description.get("classes"), list):
        raise ValueError(f"{meta} does not describe a classifier (no 'classes' list); serve a "
                         f"run folder of a trained classifier, table or ratings model.")
    if application == "threeline.collab":
        description = collab_description(description)
    history = description.get("history") or _read_history(folder / "history.csv")
    args = _read_json(folder / "args.json")
    name = folder.name if meta.name == "model.json" else meta.stem
    info = {
        "name": name or "model",
        "application": application,
        "input": INPUTS.get(application, "unknown"),
        "kind": description.get("kind"),
        "arch": description.get("arch") or description.get("model"),
        "classes": [str(c) for c in description.get("classes") or []],
        "input_size": description.get("input_size"),
        "valid_accuracy": _last_metric(history, "accuracy"),
        "valid_rmse": _last_metric(history, "rmse"),
        "epochs": len(history) if isinstance(history, list) else None,
        "args": args,
        "description": description,
    }
    return info | (extra or {})


class ModelHost:
    """The learner of a run folder, loaded once in its own thread, which runs every forward.

    ``state`` is ``"loading"``, ``"ready"`` or ``"failed"`` (``error`` says why).
    """

    def __init__(self, run_folder: str | os.PathLike, device: str | None = None,
                 warmup: bool = True, threads: int | None = None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads must be a whole number of at least 1 (or None for "
                             f"torch's default), got {threads!r}.")
        self.folder, self.meta = model_files(run_folder)
        self.info = read_info(run_folder)
        self.device_name = device
        self.warmup, self.threads = warmup, threads
        self.state, self.error = "loading", None
        self.learn: Any = None
        self.load_seconds: float | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="threeline-model")
        preprocess = self.info["description"].get("preprocess") or {}
        self.size = int(preprocess.get("size") or 224)
        self.resize_to = int(preprocess.get("resize_to") or self.size)

    def start(self) -> Future:
        """Begin loading in the model thread; forwards submitted later run after it."""
        return self.executor.submit(self._load)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def device(self) -> str | None:
        return None if self.learn is None else str(self.learn.device)

    def _load(self) -> None:
        start = time.perf_counter()
        try:
            from threeline import Learner

            if self.threads is not None:
                import torch

                torch.set_num_threads(self.threads)
            kwargs = {"device": self.device_name} if self.device_name else {}
            learn = Learner.load(self.meta.with_suffix(""), **kwargs)
            data = getattr(learn, "data", None)
            if data is not None and hasattr(data, "num_workers"):
                data.num_workers = 0  # images arrive decoded: no worker processes per batch
            if hasattr(learn, "progress"):
                learn.progress = False
            self.learn = learn
            if self.warmup and self.info["input"] == "image":
                from PIL import Image

                self.predict_images([Image.new("RGB", (self.resize_to, self.resize_to))])
            self.state = "ready"
        except Exception as err:  # reported by /health and every /predict
            self.state, self.error = "failed", f"{type(err).__name__}: {err}"
        self.load_seconds = time.perf_counter() - start

    # ------------------------------------------------- batched work (in the model thread)

    def predict_images(self, images: list) -> list[np.ndarray]:
        """Log-probabilities (C,) per PIL image, through ``learn.predict``."""
        return list(self.learn.predict(images))

    def explain_images(self, images: list) -> list[tuple[np.ndarray, np.ndarray]]:
        """(heat map (S, S), log-probabilities (C,)) per PIL image: Grad-CAM of the top class."""
        from threeline.vision.heatmap import grad_cam

        maps, log_probs = grad_cam(self.learn, images)
        return list(zip(maps, log_probs, strict=True))

    def predict_texts(self, texts: list[str]) -> list[np.ndarray]:
        """Log-probabilities (C,) per text, through ``learn.predict``."""
        return list(self.learn.predict(texts))

    def predict_rows(self, rows: list[dict]) -> list[np.ndarray | float | Refused]:
        """Per table row (a dict of column values): probabilities (C,) for a classifier, the
        value for a regression, through ``learn.predict``. A batch that fails is retried row by
        row, so one bad row (say, a date that is no date) fails only its own request."""
        import pandas as pd

        try:
            frame = self.learn.predict(pd.DataFrame(rows))
        except (ValueError, TypeError, KeyError) as err:
            if len(rows) > 1:
                return [self.predict_rows([row])[0] for row in rows]
            return [Refused(422, f"The model cannot read this row: {err}")]
        if self.learn.target.task == "classification":
            return list(frame.iloc[:, 1:].to_numpy(dtype=np.float64))  # the p_<class> columns
        return [float(v) for v in frame.iloc[:, 0]]

    def recommend(self, asks: list[tuple[Any, int]]) -> list[list[dict] | Refused]:
        """Per (user, k): ``learn.recommend(user, k)`` as JSON-ready rows; unknown users are
        refused."""
        catalog, out = self.learn.catalog, []
        for user, k in asks:
            code = int(catalog.user_codes([user])[0])
            if code == 0:
                out.append(unknown_user(user, catalog.n_users))
                continue
            out.append(recommendation_list(self.learn.recommend(user, k=k)))
        return out


def top_k(log_probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` likeliest classes of one row of log-probabilities, likeliest first.

    Example:
        >>> top_k(np.log(np.array([0.2, 0.7, 0.1])), ["a", "b", "c"], 2)
        [{'label': 'b', 'probability': 0.7}, {'label': 'a', 'probability': 0.2}]
    """
    return ranked(np.exp(np.asarray(log_probs, dtype=np.float64)), classes, k)


def ranked(probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` likeliest classes of one row of probabilities, likeliest first.

    Example:
        >>> ranked(np.array([0.25, 0.75]), ["<=50K", ">50K"], 1)
        [{'label': '>50K', 'probability': 0.75}]
    """
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": classes[i], "probability": round(float(probs[i]), 6)} for i in order]


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _read_history(path: Path) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _last_metric(history: Any, name: str) -> float | None:
    if not isinstance(history, list):
        return None
    for row in reversed(history):
        if isinstance(row, dict) and row.get(name) not in (None, ""):
            try:
                return float(row[name])
            except (TypeError, ValueError):
                return None
    return None
