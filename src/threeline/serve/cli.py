"""``serve(run_folder, host, port, ...)`` and the arguments of ``threeline serve``.

Example:
    >>> serve("runs/pets", port=8000)  # doctest: +SKIP
    threeline serve: pets at http://127.0.0.1:8000/ (Ctrl-C stops)
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from threeline.serve.limits import MB, Limits


def serve(run_folder: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          device: str | None = None, limits: Limits | None = None, warmup: bool = True,
          log_level: str = "warning", access_log: bool = False,
          threads: int | None = None) -> None:
    """Serve the page and the API for the model of ``run_folder`` until Ctrl-C.

    Args:
        run_folder: a folder written by ``threeline train --out`` (or ``learn.save`` files).
        host: the address to listen on; 127.0.0.1 keeps it to this machine ("0.0.0.0" opens it
            to the network: anyone who reaches it can use the model).
        port: the TCP port; 0 picks a free one (the printed address says which).
        device: "cpu", "cuda", ...; None picks CUDA when present.
        limits: upload sizes, counts and batching (:class:`~threeline.serve.Limits`).
        warmup: run one image through an image model before reporting ready.
        log_level: uvicorn's log level ("warning", "info", ...).
        access_log: log every request.
        threads: CPU threads for the model's forward passes; None keeps torch's default (one
            per core).
    """
    passive_waits()
    try:
        import uvicorn

        from threeline.serve.app import create_app
    except ImportError as err:
        raise ImportError(f"threeline serve needs starlette, uvicorn and python-multipart "
                          f"({err.name} is missing): pip install 'threeline[serve]'.") from err
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, got {port!r}.")
    app = create_app(run_folder, device=device, limits=limits, warmup=warmup, threads=threads)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"threeline serve: {app.app.state.api.host.info['name']} at http://{shown}:{bound}/ "
          f"(Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


def passive_waits() -> None:
    """Let the model's idle OpenMP threads sleep instead of spinning, in this process.

    By default an OpenMP thread that finishes its share of an operation spins, holding its
    core, until the others finish. In the server the cores are shared with the HTTP loop and the
    decoding threads, so a spinning thread takes the core that a preempted partner, or the
    request that would fill the next batch, is waiting for. On a shared 2-core machine the
    server then used two to three times the CPU per request and answered less than half as
    many requests at 32 clients (``benchmarks/results/serve-cpu-2core-2026-12-03-night.md``).
    Only possible before torch is imported (the OpenMP runtime reads ``OMP_WAIT_POLICY`` once,
    when it loads); an explicit setting wins.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or an OSError that says what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"Cannot listen on {host}:{port} ({err.strerror}); pick another --port "
                      f"(0 picks a free one) or --host.") from err
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``threeline serve`` (shared by ``python -m threeline.serve``)."""
    d = Limits()
    parser.add_argument("run_folder", help="a folder written by `threeline train --out`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if any)")
    parser.add_argument("--max-files", type=int, default=d.max_files,
                        help=f"images or texts per request (default {d.max_files})")
    parser.add_argument("--max-request-mb", type=float, default=d.max_request_bytes / MB,
                        help=f"request body size in MB (default {d.max_request_bytes // MB})")
    parser.add_argument("--max-pixels", type=int, default=d.max_pixels,
                        help=f"pixels per image (default {d.max_pixels:,})")
    parser.add_argument("--max-text-chars", type=int, default=d.max_text_chars,
                        help=f"characters per text (default {d.max_text_chars:,})")
    parser.add_argument("--max-batch", type=int, default=d.max_batch,
                        help=f"items per forward pass (default {d.max_batch})")
    parser.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                        help=f"how long a batch waits for more requests (default {d.max_wait_ms})")
    parser.add_argument("--max-queue", type=int, default=d.max_queue,
                        help=f"items waiting for the model before 503 (default {d.max_queue})")
    parser.add_argument("--top-k", type=int, default=d.top_k,
                        help=f"labels per item (default {d.top_k})")
    parser.add_argument("--max-rows", type=int, default=d.max_rows,
                        help=f"table rows per request (default {d.max_rows})")
    parser.add_argument("--max-k", type=int, default=d.max_k,
                        help=f"recommendations per request (default {d.max_k})")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the model (default: torch's, one per core)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="report ready without a first forward pass")
    parser.add_argument("--access-log", action="store_true", help="log every request")


def serve_from_args(args: argparse.Namespace) -> None:
    """Run :func:`serve` with parsed :func:`add_arguments` arguments."""
    limits = Limits(max_request_bytes=int(args.max_request_mb * MB), max_files=args.max_files,
                    max_pixels=args.max_pixels, max_text_chars=args.max_text_chars,
                    max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                    max_queue=args.max_queue, top_k=args.top_k, max_rows=args.max_rows,
                    max_k=args.max_k)
    serve(args.run_folder, host=args.host, port=args.port, device=args.device, limits=limits,
          warmup=not args.no_warmup, access_log=args.access_log, threads=args.threads,
          log_level="info" if args.access_log else "warning")
