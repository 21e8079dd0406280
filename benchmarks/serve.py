"""Load benchmark of `threeline serve`: requests/s and p50/p99 latency for 1, 8 and 32
concurrent clients, beside the bare ``learn.predict`` throughput of the same model.

    python3 benchmarks/serve.py --out benchmarks/results            # efficientnet_lite0
    python3 benchmarks/serve.py --run runs/pets --seconds 30 --device cuda

Each client sends one JPEG per request (multipart, no heat map) and waits for the answer before
sending the next; the server runs in its own process (``python -m threeline.serve``), the clients
in this one (asyncio + httpx; each photo's multipart body is encoded once, before the clock
starts, so the clients spend the shared cores on sending, not on re-encoding). The bare figure is
``learn.predict`` on the same photos, as files, in batches of 32 (the server's largest batch),
measured before and after the load runs in this process with the server idle. Overhead = 1 -
(server images/s) / (bare images/s). A second bare figure runs the same ``learn.predict`` in a
fresh process with the OpenMP setting the server gives itself (``OMP_WAIT_POLICY=PASSIVE``,
see ``threeline.serve.cli.passive_waits``), so the server's gain from that setting is not
mistaken for a small overhead. The server's CPU seconds per request come from /proc (Linux).
Without ``--run``, efficientnet_lite0 is trained for one epoch on cached activations of the
built-in demo photos (the accuracy does not matter here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "dogscats" / "valid"
SERVER_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE"}  # what `threeline serve` sets for itself


def photos(n: int) -> list[Path]:
    """Real photos: Dogs vs Cats validation images when ../shared/data is there, else the demo."""
    from threeline import demo_path

    root = SHARED if SHARED.is_dir() else demo_path("dogscats") / "valid"
    files = sorted(root.rglob("*.jpg"))
    return [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).astype(int)]


def train_model(folder: Path, device: str | None) -> Path:
    from threeline import ImageData, Learner, demo_path

    data = ImageData.from_folder(demo_path("dogscats"))
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device=device,
                               progress=False)
    learn.fit(0.01, 1)
    learn.save(folder / "model")
    return folder


def bare_throughput(run: Path, files: list[Path], device: str | None,
                    rounds: int = 3) -> tuple[float, float]:
    """Images/s of ``learn.predict`` on ``files`` in batches of 32, best of ``rounds``; and the
    CPU milliseconds per image over all rounds (this process and its decoding workers)."""
    from threeline import Learner

    learn = Learner.load(run, device=device) if device else Learner.load(run)
    learn.progress = False
    learn.predict(files[:32])  # warm-up: the fused body is made on first use
    best, cpu_start = 0.0, own_cpu_seconds()
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(files), 32):
            learn.predict(files[i:i + 32])
        best = max(best, len(files) / (time.perf_counter() - start))
    return best, 1000 * (own_cpu_seconds() - cpu_start) / (rounds * len(files))


def bare_with_server_openmp(run: Path, photo_count: int,
                            device: str | None) -> tuple[float, float]:
    """:func:`bare_throughput` in a fresh process with the server's OpenMP setting (it is read
    once, when torch loads, so it cannot be changed in this process)."""
    cmd = [sys.executable, __file__, "--bare", str(run), "--photos", str(photo_count)]
    if device:
        cmd += ["--device", device]
    out = subprocess.run(cmd, env={**os.environ, **SERVER_OPENMP}, capture_output=True,
                         text=True, check=True)
    rate, cpu_ms = out.stdout.split()[-2:]
    return float(rate), float(cpu_ms)


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds the server process has used so far (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def encode(name: str, data: bytes) -> tuple[str, bytes]:
    """(content type, body) of a multipart request with one file, as httpx sends it."""
    import httpx

    request = httpx.Request("POST", "http://localhost/predict", files={"file": (name, data)})
    return request.headers["content-type"], request.read()


def start_server(run: Path, device: str | None, log: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "threeline.serve", str(run), "--port", "0"]
    if device:
        cmd += ["--device", device]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    line = proc.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not found:
        raise SystemExit(f"the server did not start: {line!r}\n{log.read_text()}")
    url = found.group(0)
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=10).json()["status"] == "ok":
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not get ready\n{log.read_text()}")


async def load(url: str, payloads: list[tuple[str, bytes]], clients: int,
               seconds: float) -> dict:
    """``clients`` loops of request -> answer for ``seconds``; latencies of the answers.
    ``payloads``: (content type, multipart body) per photo, from :func:`encode`."""
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        stop = time.perf_counter() + seconds

        async def one(index: int) -> None:
            nonlocal errors
            i = index
            while time.perf_counter() < stop:
                content_type, body = payloads[i % len(payloads)]
                i += clients
                start = time.perf_counter()
                answer = await client.post("/predict", content=body,
                                           headers={"content-type": content_type})
                if answer.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        begin = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        elapsed = time.perf_counter() - begin
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "rps": len(latencies) / elapsed, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "load": os.getloadavg()[0]}


def machine(device: str | None) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder (default: train one)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA if any)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    parser.add_argument("--photos", type=int, default=256, help="distinct photos sent")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--out", type=Path, help="write the Markdown table into this folder")
    parser.add_argument("--tag", default="", help="added to the result file's name")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)  # print bare images/s
    args = parser.parse_args()
    files = photos(args.photos)
    if args.bare:
        rate, cpu_ms = bare_throughput(args.bare, files, args.device)
        print(f"{rate:.3f} {cpu_ms:.3f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_model(Path(tmp) / "lite0", args.device)
        proc, url = start_server(run, args.device, Path(tmp) / "server.log")
        try:
            rows, bare, matched = measure(run, proc.pid, url, files, args)
        finally:
            proc.terminate()
            proc.wait(30)
    report = table(rows, bare, matched, files, args, machine(args.device))
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        tag = f"-{args.tag}" if args.tag else ""
        path = args.out / f"serve-{machine(args.device)}-{time.strftime('%Y-%m-%d')}{tag}.md"
        path.write_text(report)
        print(f"wrote {path}")


def measure(run: Path, pid: int, url: str, files: list[Path], args
            ) -> tuple[list[dict], list[tuple[float, float]], list[tuple[float, float]]]:
    """The load levels between two pairs of bare measurements (each: images/s, CPU ms per
    image); the server's CPU per request is read from its process around each level."""
    payloads = [encode(p.name, p.read_bytes()) for p in files]
    load_before = os.getloadavg()[0]
    bare = [bare_throughput(run, files, args.device)]
    matched = [bare_with_server_openmp(run, args.photos, args.device)]
    rows = []
    for clients in args.clients.split(","):
        cpu_start = server_cpu_seconds(pid)
        row = asyncio.run(load(url, payloads, int(clients), args.seconds))
        row["cpu_ms"] = 1000 * (server_cpu_seconds(pid) - cpu_start) / max(row["requests"], 1)
        rows.append(row)
    matched.append(bare_with_server_openmp(run, args.photos, args.device))
    bare.append(bare_throughput(run, files, args.device))
    args.load_average = (load_before, os.getloadavg()[0])
    return rows, bare, matched


def table(rows: list[dict], bare: list[tuple[float, float]], matched: list[tuple[float, float]],
          files: list[Path], args, name: str) -> str:
    import torch

    reference, same_openmp = (float(np.mean([b[0] for b in pair])) for pair in (bare, matched))
    setting = " ".join(f"{k}={v}" for k, v in SERVER_OPENMP.items())
    lines = [
        f"# threeline serve, efficientnet_lite0 ({name})",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}; {platform.platform()}, python "
        f"{platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs; "
        f"{len(files)} distinct JPEGs ({files[0].parent.parent}), one per request, no heat "
        f"map; {args.seconds:g} s per level; `{' '.join(['python3', *sys.argv])}`. "
        f"One-minute load average "
        f"{args.load_average[0]:.2f} at the start, {args.load_average[1]:.2f} at the end "
        f"(other work on the machine slows both sides).",
        "",
        f"Bare `learn.predict` (files, batches of 32, best of 3): {bare[0][0]:.1f} images/s "
        f"before the load runs, {bare[1][0]:.1f} after (mean {reference:.1f}); "
        f"{bare[0][1]:.1f} and {bare[1][1]:.1f} ms of CPU per image. The same in a fresh "
        f"process with the server's OpenMP setting ({setting}): {matched[0][0]:.1f} before, "
        f"{matched[1][0]:.1f} after (mean {same_openmp:.1f}); {matched[0][1]:.1f} and "
        f"{matched[1][1]:.1f} ms of CPU per image.",
        "",
        "| clients | requests | errors | requests/s | p50 latency (ms) | p99 latency (ms) | "
        "server CPU per request (ms) | load average after | overhead vs bare | "
        "overhead vs bare, server's OpenMP setting |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        overhead, matched_overhead = 1 - r["rps"] / reference, 1 - r["rps"] / same_openmp
        lines.append(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | "
                     f"{r['p50']:.1f} | {r['p99']:.1f} | {r['cpu_ms']:.1f} | {r['load']:.2f} | "
                     f"{100 * overhead:.1f} % | {100 * matched_overhead:.1f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
