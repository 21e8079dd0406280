"""The command line's defaults, argument types and checks: all run before a command loads
anything heavy, so that a mistake is reported at once and in the command line's words."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import threading
from pathlib import Path

HEAD_LR, FINE_TUNE_LR, MAX_LR = 1e-2, 1e-3, 10.0  # fit on cached activations; fine_tune base_lr
# The library's values, repeated so that parsing imports nothing heavy (a test checks them).
MAX_PIXELS = 200_000_000
DEFAULT_ARCH = "efficientnet_lite2"
OFFLINE_ARCHS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def number_arg(kind: type, low: float, high: float | None = None, low_open: bool = False,
               high_open: bool = False):
    """An argparse type: a finite ``kind`` within [low, high] (open ends when asked)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if (isinstance(value, float) and not math.isfinite(value)) or below or above:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            span = (f"in {lo}{low:g}, {high:g}{hi}" if high is not None
                    else f"{'>' if low_open else '>='} {low:g}")
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun} {span}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def device_arg(text: str) -> str:
    """An argparse type: a device name (cpu, cuda, cuda:N or mps)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def check_device(device: str | None) -> None:
    """Refuse a device this machine does not have, naming ``--device``."""
    if device is None or device == "cpu":
        return
    import torch

    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: Apple's GPU is not available here. Leave --device out "
                         "or pass --device cpu.")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            have = f"{count} CUDA GPU(s)" if count else "no CUDA GPU"
            raise ValueError(f"--device {device}: this machine has {have}. Leave --device out "
                             f"or pass --device cpu.")


def check_cache() -> Path:
    """The cache folder, made and checked writable, or an error naming THREELINE_CACHE."""
    from threeline.saving import cache_dir

    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(f"The cache folder {folder} cannot be written ({err.strerror or err}). "
                      f"Set THREELINE_CACHE to a writable folder, e.g. "
                      f"THREELINE_CACHE=/tmp/threeline-cache.") from None
    return folder


def check_arch(arch: str, weights: Path | None, timeout: float = 3.0) -> None:
    """Fail fast when ``arch``'s weights would need a download that cannot happen."""
    if weights is not None:
        if not weights.is_file():
            raise FileNotFoundError(f"--weights {weights}: no such file.")
        return
    if arch in OFFLINE_ARCHS:
        return
    import timm

    offline = ", ".join(OFFLINE_ARCHS)
    if not timm.is_model(arch):
        raise ValueError(f"--arch {arch}: not a known architecture. Offline: {offline}; online, "
                         f"any timm model name (e.g. resnet50).")
    if _hub_weights_cached(arch):
        return
    flag = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if flag or not _reachable("huggingface.co", 443, timeout):
        why = "HF_HUB_OFFLINE is set" if flag else "huggingface.co cannot be reached"
        raise OSError(f"--arch {arch}: its ImageNet weights are not downloaded and {why}. "
                      f"Offline, use one of {offline} (e.g. --arch efficientnet_lite0), or "
                      f"pass a weights file with --weights FILE.")


def _hub_weights_cached(arch: str) -> bool:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return False
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(hub_id, name), str)
               for name in ("model.safetensors", "pytorch_model.bin"))


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection opens within ``timeout`` s (name lookup included)."""
    import socket

    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def model_path(spec: str) -> str:
    """Check ``MODEL`` before loading it: say what is there instead when it is not a model."""
    from threeline.saving import model_paths

    weights, meta = model_paths(spec)
    folder = Path(spec).expanduser()
    folder = folder if folder.is_dir() else weights.parent
    if folder.is_dir() and not os.access(folder, os.R_OK | os.X_OK):
        raise PermissionError(f"MODEL {spec}: the folder {folder} cannot be read (permission "
                              f"denied); fix its permissions (chmod u+rx).")
    if not weights.exists() and not meta.exists():
        last = folder / "checkpoints" / "last.json"
        if last.is_file():
            epoch = json.loads(last.read_text("utf-8")).get("epoch")
            raise FileNotFoundError(
                f"{folder} holds no final model: its training did not finish. Its last "
                f"checkpoint (after epoch {epoch}) works: threeline predict "
                f"{shlex.quote(str(folder / 'checkpoints' / 'last'))} FILES...")
        return spec  # the loader says what is missing
    for file in (weights, meta):
        try:
            with open(file, "rb"):
                pass
        except PermissionError:
            raise PermissionError(f"MODEL {spec}: {file} cannot be read (permission denied); "
                                  f"fix its permissions (chmod u+r).") from None
        except FileNotFoundError:
            pass
    return spec
