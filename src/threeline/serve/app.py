"""The web page and HTTP API of ``threeline serve``.

Routes: ``GET /`` the page, ``GET /health``, ``GET /model`` (the description: for a table its
input columns, for ratings its users), ``POST /predict``: multipart images; JSON
``{"texts": [...]}`` for a text model; ``{"rows": [{column: value, ...}]}`` for a table (per row
the top-k class probabilities, or the value of a regression); ``{"user": id, "k": 10}`` for
ratings (the top-k unrated items, see :mod:`.records`); ``?top_k=3&heatmap=1``.
Every refusal is JSON ``{"error": "...", "status": N}`` with the matching status code.

Example:
    >>> app = create_app("runs/pets", device="cpu")  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from threeline.serve.batching import Busy, MicroBatcher
from threeline.serve.body import BodyLimit
from threeline.serve.errors import ApiError
from threeline.serve.inputs import check_texts, crop_box, decode_image, safe_name
from threeline.serve.limits import Limits
from threeline.serve.model import ModelHost, ranked, top_k
from threeline.serve.overlay import overlay_png
from threeline.serve.records import Refused, check_rows, check_user

STATIC = Path(__file__).parent / "static"


def create_app(run_folder: str | os.PathLike, device: str | None = None,
               limits: Limits | None = None, warmup: bool = True,
               threads: int | None = None) -> BodyLimit:
    """The ASGI app serving the model of ``run_folder``; the model loads in the background
    from startup on (``/health`` says when it is ready; ``/predict`` answers 503 until then).

    Args:
        run_folder: a folder written by ``threeline train --out`` (or ``learn.save`` files).
        device: "cpu", "cuda", ...; None picks CUDA when present.
        limits: sizes, counts and batching (:class:`Limits`); None for the defaults.
        warmup: run one image through the model before answering ``ready``.
        threads: CPU threads for the forward passes (``torch.set_num_threads`` in the model's
            thread); None keeps torch's default, one per core.
    """
    limits = limits or Limits()
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a threeline.serve.Limits, got {type(limits).__name__}.")
    host = ModelHost(run_folder, device=device, warmup=warmup, threads=threads)
    api = Api(host, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        host.start()
        yield
        await api.close()
        host.close()

    routes = [
        Route("/", api.page),
        Route("/health", api.health),
        Route("/model", api.model),
        Route("/predict", api.predict, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.api = api
    return BodyLimit(app, limits.max_request_bytes)


class Api:
    """The route handlers around one :class:`ModelHost`."""

    def __init__(self, host: ModelHost, limits: Limits):
        self.host, self.limits = host, limits
        self.decoding = anyio.CapacityLimiter(limits.decode_threads)
        self.requests = 0
        wait = limits.max_wait_ms / 1000

        def batcher(run) -> MicroBatcher:
            return MicroBatcher(run, host.executor, limits.max_batch, wait, limits.max_queue)

        self.plain = batcher(host.predict_images)
        self.explained = batcher(host.explain_images)
        self.texts = batcher(host.predict_texts)
        self.rows = batcher(host.predict_rows)  # an item is one table row
        self.users = batcher(host.recommend)  # an item is one (user, k)

    def _batchers(self) -> tuple[MicroBatcher, ...]:
        return self.plain, self.explained, self.texts, self.rows, self.users

    async def close(self) -> None:
        for b in self._batchers():
            await b.close()

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def health(self, request: Request) -> JSONResponse:
        host = self.host
        body = {"status": "ok" if host.state == "ready" else host.state,
                "model": host.info["name"], "device": host.device,
                "load_seconds": host.load_seconds, "requests": self.requests,
                "waiting": sum(b.waiting for b in self._batchers()),
                "batches": sum(b.count for b in self._batchers()),
                "largest_batch": max(b.largest for b in self._batchers())}
        if host.error:
            body["error"] = host.error
        status = 200 if host.state == "ready" else 503
        return JSONResponse(body, status_code=status,
                            headers={"Retry-After": "1"} if host.state == "loading" else None)

    async def model(self, request: Request) -> JSONResponse:
        info = dict(self.host.info)
        info["state"], info["device"] = self.host.state, self.host.device
        info["limits"] = {"max_files": self.limits.max_files,
                          "max_request_bytes": self.limits.max_request_bytes,
                          "max_pixels": self.limits.max_pixels, "top_k": self.limits.top_k,
                          "max_rows": self.limits.max_rows, "max_k": self.limits.max_k}
        return JSONResponse(info)

    async def predict(self, request: Request) -> JSONResponse:
        start = time.perf_counter()
        self.requests += 1
        k, explain = self._options(request)
        self._check_ready()
        kind = self.host.info["input"]
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "image":
            if content_type != "multipart/form-data":
                raise ApiError(415, "This model takes images: send multipart/form-data with one "
                                    "or more image files (curl -F file=@photo.jpg ...).")
            items = await self._predict_images(request, k, explain)
        elif kind in JSON_INPUTS:
            if content_type != "application/json":
                raise ApiError(415, f"This model takes {JSON_INPUTS[kind]}.")
            payload = await _json_body(request)
            items = await {"text": self._predict_texts, "rows": self._predict_rows,
                           "user": self._recommend}[kind](payload, k)
        else:
            raise ApiError(501, f"Serving {self.host.info['application']} models is not "
                                f"supported; images, texts, tables and ratings are.")
        return JSONResponse({"model": self.host.info["name"], "predictions": items,
                             "time_ms": round(1000 * (time.perf_counter() - start), 2)})

    # ----------------------------------------------------------------------- helpers

    def _options(self, request: Request) -> tuple[int, bool]:
        query = request.query_params
        try:
            k = int(query.get("top_k", self.limits.top_k))
        except ValueError:
            raise ApiError(400, f"top_k must be a whole number, got {query['top_k']!r}.") from None
        if k < 1:
            raise ApiError(400, f"top_k must be at least 1, got {k}.")
        explain = query.get("heatmap", "0").lower() in ("1", "true", "yes", "on")
        return min(k, max(1, len(self.host.info["classes"]))), explain

    def _check_ready(self) -> None:
        if self.host.state == "loading":
            raise ApiError(503, "The model is still loading; retry in a moment.",
                           {"Retry-After": "1"})
        if self.host.state == "failed":
            raise ApiError(503, f"The model failed to load ({self.host.error}); fix the run "
                                f"folder and restart the server.")

    async def _submit(self, batcher: MicroBatcher, items: list) -> list:
        try:
            results = await batcher.submit(items)
        except Busy as err:
            raise ApiError(503, f"The server is busy ({err}); retry shortly.",
                           {"Retry-After": "1"}) from err
        for i, result in enumerate(results):
            if isinstance(result, Refused):
                where = f"rows[{i}]: " if len(results) > 1 else ""
                raise ApiError(result.status, where + result.message)
        return results

    async def _predict_images(self, request: Request, k: int, explain: bool) -> list[dict]:
        limits = self.limits
        try:
            form = await request.form(max_files=limits.max_files,
                                      max_fields=limits.max_files + 16)
        except HTTPException as err:
            status = 413 if "Too many files" in str(err.detail) else 400
            raise ApiError(status, f"{err.detail} (at most {limits.max_files} images per "
                                   f"request; raise --max-files).") from err
        try:
            uploads = [v for _, v in form.multi_items() if not isinstance(v, str)]
            if not uploads:
                raise ApiError(400, "No image files in the request: send them as multipart "
                                    "file fields (curl -F file=@photo.jpg ...).")
            names = [safe_name(u.filename, i) for i, u in enumerate(uploads)]
            decoded = []
            for upload, name in zip(uploads, names, strict=True):  # one at a time: bounded memory
                decoded.append(await anyio.to_thread.run_sync(
                    decode_image, upload.file, name, limits.max_pixels, self.host.resize_to,
                    limiter=self.decoding))
        finally:
            await form.close()  # the spooled upload files
        images, sizes = [d[0] for d in decoded], [d[1] for d in decoded]
        results = await self._submit(self.explained if explain else self.plain, images)
        out = []
        for name, (width, height), result in zip(names, sizes, results, strict=True):
            log_probs = result[1] if explain else result
            item: dict[str, Any] = {"filename": name, "width": width, "height": height}
            item["top"] = top_k(log_probs, self.host.info["classes"], k)
            item["label"] = item["top"][0]["label"]
            if explain:
                item["heatmap"] = await anyio.to_thread.run_sync(overlay_png, result[0])
                item["heatmap_box"] = crop_box(width, height, self.host.resize_to,
                                               self.host.size)
            out.append(item)
        return out

    async def _predict_texts(self, payload: Any, k: int) -> list[dict]:
        texts = check_texts(payload, self.limits.max_files, self.limits.max_text_chars)
        results = await self._submit(self.texts, texts)
        classes = self.host.info["classes"]
        return [{"text": t[:80], "top": (top := top_k(r, classes, k)), "label": top[0]["label"]}
                for t, r in zip(texts, results, strict=True)]

    async def _predict_rows(self, payload: Any, k: int) -> list[dict]:
        rows = check_rows(payload, self.host.info["columns"], self.limits.max_rows)
        results = await self._submit(self.rows, rows)
        classes = self.host.info["classes"]
        if not classes:  # a regression: the value, in the target's units
            return [{"value": round(float(r), 6)} for r in results]
        return [{"top": (top := ranked(r, classes, k)), "label": top[0]["label"]}
                for r in results]

    async def _recommend(self, payload: Any, k: int) -> list[dict]:
        user, n = check_user(payload, self.limits.max_k)
        [items] = await self._submit(self.users, [(user, n)])
        return [{"user": user, "k": n, "items": items}]


JSON_INPUTS = {"text": 'texts: send JSON {"texts": ["..."]}',
               "rows": 'table rows: send JSON {"rows": [{"column": value, ...}]}',
               "user": 'a user: send JSON {"user": 196, "k": 10}'}


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"The request body is not valid JSON ({err}).") from err


async def _api_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ApiError)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, HTTPException)
    return JSONResponse({"error": str(err.detail), "status": err.status_code},
                        status_code=err.status_code, headers=getattr(err, "headers", None))


async def _server_error(request: Request, err: Exception) -> JSONResponse:
    message = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    return JSONResponse({"error": f"The server failed on this request ({message}).",
                         "status": 500}, status_code=500)
