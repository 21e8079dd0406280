"""The request-body limit of ``threeline serve``: an ASGI middleware that answers 413 JSON to a
body above the limit, reading and dropping the rest so a client still sending sees the answer.

Example:
    >>> app = BodyLimit(starlette_app, 50 * 2**20)  # doctest: +SKIP
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import JSONResponse

from threeline.serve.errors import ApiError

DRAIN_FACTOR = 16  # an oversized body is read and dropped up to this many times the limit
# (past that the connection is closed, and a client still sending may not see the answer)


class BodyLimit:
    """ASGI middleware: a request body above ``max_bytes`` gets 413 JSON. The rest of the body
    is read and dropped (up to ``DRAIN_FACTOR`` times the limit) so the client, still sending,
    receives the answer; nothing of it is kept.
    """

    def __init__(self, app: Starlette, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, declared)
            return
        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await _drain(receive, received, self.max_bytes * DRAIN_FACTOR, message)
                    raise ApiError(413, _too_big(received, self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope, receive, send, declared: int) -> None:
        more = await _drain(receive, 0, self.max_bytes * DRAIN_FACTOR)
        error = ApiError(413, _too_big(declared, self.max_bytes))
        headers = None if more else {"Connection": "close"}
        await JSONResponse(error.body(), 413, headers)(scope, receive, send)


async def _drain(receive, received: int, cap: int, message: dict | None = None) -> bool:
    """Read and drop the rest of a request body, up to ``cap`` bytes; True when all was read."""
    while message is None or message.get("more_body", False):
        if received > cap:
            return False
        message = await receive()
        if message["type"] != "http.request":
            return False
        received += len(message.get("body", b""))
    return True


def _content_length(scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_big(size: int, limit: int) -> str:
    return (f"The request body is {size / 2**20:,.1f} MB; the server takes at most "
            f"{limit / 2**20:,.1f} MB per request (send fewer or smaller images, or raise "
            f"--max-request-mb).")
