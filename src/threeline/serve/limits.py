"""What the server accepts: sizes, counts and batching, all configurable.

Example:
    >>> Limits(max_files=4).max_files
    4
"""

from __future__ import annotations

from dataclasses import dataclass, fields

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds that keep the server's memory and latency in check.

    Attributes:
        max_request_bytes: the largest request body (all files together); larger ones get 413.
        max_files: images (or texts) in one request.
        max_pixels: width x height of one image, checked from its header before decoding
            (decompression bombs); larger ones get 413.
        max_text_chars: characters in one text.
        max_batch: images (or texts) in one forward pass of the model.
        max_wait_ms: how long the first request of a batch waits for others to join it.
        max_queue: images (or texts) waiting for the model; beyond it requests get 503.
        decode_threads: images decoded at the same time (each holds at most ``max_pixels``).
        top_k: labels returned per item unless the request asks for another number.
        max_rows: table rows in one request (a tabular model).
        max_k: recommendations in one request (a ratings model).
    """

    max_request_bytes: int = 50 * MB
    max_files: int = 16
    max_pixels: int = 50_000_000
    max_text_chars: int = 20_000
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    decode_threads: int = 2
    top_k: int = 5
    max_rows: int = 256
    max_k: int = 100

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = (int, float) if f.name == "max_wait_ms" else int
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"Limits.{f.name} must be a number, got {type(value).__name__}.")
            low = 0 if f.name == "max_wait_ms" else 1
            if value < low:
                raise ValueError(f"Limits.{f.name} must be at least {low}, got {value}; "
                                 f"raise it.")
        for name in ("max_files", "max_rows"):
            if self.max_queue < getattr(self, name):
                raise ValueError(f"Limits.max_queue ({self.max_queue}) must hold one full "
                                 f"request ({name}={getattr(self, name)}); raise max_queue.")
