"""Cached activations for ``precompute=True``: run the frozen backbone once, keep its outputs.

The cache key covers everything that changes the activations: the backbone and its weights, the
preprocessing (size, crop, interpolation, normalization) and the files (path, size, mtime). Any
change gives a new key, so a stale cache is never read. Files are written to a temporary name and
renamed into place, so a killed run never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1


def files_fingerprint(files: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size, mtime in ns) per file: what makes a file's pixels what they are."""
    out = []
    for f in files:
        stat = os.stat(f)
        out.append((str(Path(f).resolve()), stat.st_size, stat.st_mtime_ns))
    return out


def cache_key(backbone: dict, files: Sequence[Path], labels: Sequence[int]) -> str:
    """A hex digest of the backbone description, the files' fingerprints and their labels.

    Example:
        >>> len(cache_key({"arch": "x"}, [], []))
        64
    """
    payload = {
        "format": FORMAT_VERSION,
        "backbone": backbone,
        "files": files_fingerprint(files),
        "labels": list(map(int, labels)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(folder: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The cached tensors for ``key``, or None when there are none (or they cannot be read)."""
    path = folder / f"{key}.safetensors"
    if not path.exists():
        return None
    try:
        return load_file(str(path))
    except Exception:  # a foreign or damaged file: recompute rather than fail
        return None


def save(folder: Path, key: str, tensors: dict[str, torch.Tensor]) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.safetensors"
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    return path
