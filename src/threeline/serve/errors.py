"""One exception for every refused request: an HTTP status and one clear line."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: answered as ``{"error": message, "status": status}``.

    Example:
        >>> ApiError(415, "x.txt is not an image.").status
        415
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": self.message, "status": self.status}
