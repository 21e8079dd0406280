"""``threeline serve``: a web page and an HTTP API to try a trained model.

    from threeline.serve import serve
    serve("runs/pets")                      # http://127.0.0.1:8000

``POST /predict`` takes images (multipart), or JSON: ``{"texts": [...]}``, table rows
``{"rows": [{column: value}]}`` or ``{"user": id, "k": 10}`` for ratings (:mod:`.records`); it
answers labels and probabilities (a value for a regression, items for a user); requests arriving
together share one forward pass (:mod:`.batching`).
Needs the ``serve`` extra: ``pip install 'threeline[serve]'``.
"""

from __future__ import annotations

from threeline.serve.cli import add_arguments, serve, serve_from_args
from threeline.serve.limits import Limits

__all__ = ["Limits", "add_arguments", "create_app", "serve", "serve_from_args"]


def __getattr__(name: str):
    if name == "create_app":  # needs starlette: imported when first used
        from threeline.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'threeline.serve' has no attribute {name!r}")
