"""Saving without pickle: tensors in safetensors, everything else in JSON, every write atomic.

A saved model is two files side by side:

* ``NAME.safetensors`` — the tensors (plain numbers, no code);
* ``NAME.json`` — what rebuilds the model: the application that made it (``"application"``,
  e.g. ``"threeline.vision"``), its own fields, the training history, and the SHA-256 of the
  weights file, so a damaged weights file is refused instead of predicting nonsense.

Loading parses JSON and safetensors only, so opening a model file never executes code. Tensors
are stored device-free and read onto the CPU first, so a model trained on a GPU loads anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = "threeline-model"
FORMAT_VERSION = 2  # 2: "application" and "sha256" fields


class ModelFileError(ValueError):
    """A model file that is missing, damaged, or not a threeline model."""


def cache_dir() -> Path:
    """Where threeline keeps converted weights, cached activations and checkpoints.

    ``$THREELINE_CACHE`` if set, else ``$XDG_CACHE_HOME/threeline``, else ``~/.cache/threeline``.

    Example:
        >>> cache_dir().is_absolute()
        True
    """
    if os.environ.get("THREELINE_CACHE"):
        return Path(os.environ["THREELINE_CACHE"]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).absolute() / "threeline"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader sees the old file or the new one, never half of one; a crash leaves no debris.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.txt"
        >>> atomic_write(p, lambda tmp: tmp.write_text("hi")).read_text()
        'hi'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as a plain open() would (some writers make 0600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """``value`` as indented JSON, atomically (NaN and tensors made JSON-safe)."""
    text = json.dumps(json_safe(value), indent=2)
    return atomic_write(path, lambda tmp: tmp.write_text(text, "utf-8"))


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The (weights, description) pair for ``path``: a base name, either file, or a folder.

    A folder means ``folder/model``. Both ``.safetensors`` and ``.json`` suffixes are accepted.

    Example:
        >>> [p.name for p in model_paths("runs/cats/model.safetensors")]
        ['model.safetensors', 'model.json']
    """
    base = Path(path).expanduser()
    if base.is_dir():
        base = base / "model"
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 8 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_model(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                description: dict) -> Path:
    """Write ``path.safetensors`` then ``path.json`` (with the weights' SHA-256), atomically.

    Example:
        >>> import tempfile
        >>> base = Path(tempfile.mkdtemp()) / "m"
        >>> write_model(base, {"w": torch.ones(2)}, {"application": "none"}).name
        'm.safetensors'
    """
    weights, meta = model_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
    from threeline.version import __version__

    head = {"format": FORMAT, "format_version": FORMAT_VERSION, "threeline_version": __version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sha256": file_sha256(weights)}
    write_json(meta, head | description)
    return weights


def read_description(path: str | os.PathLike) -> dict:
    """The JSON description of a saved model, its format checked.

    Example:
        >>> read_description("runs/cats/model")["application"]  # doctest: +SKIP
        'threeline.vision'
    """
    weights, meta = model_paths(path)
    for file in (meta, weights):
        if file.exists() and not os.access(file, os.R_OK):
            raise ModelFileError(f"{file} exists but cannot be read (permission denied); "
                                 f"fix its permissions (chmod u+r).")
    if not meta.is_file() or not weights.is_file():
        raise ModelFileError(
            f"No saved model at {meta.with_suffix('')}: expected {weights.name} and {meta.name} "
            f"side by side (written by learn.save). Check the path.")
    try:
        info = json.loads(meta.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{meta} is not valid JSON ({err}); save the model again.") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ModelFileError(f"{meta} is not a threeline model description (no format field "
                             f"{FORMAT!r}); save the model with learn.save.")
    if not isinstance(info.get("format_version"), int) or info["format_version"] > FORMAT_VERSION:
        raise ModelFileError(
            f"{meta} has format version {info.get('format_version')!r}; this threeline reads "
            f"up to {FORMAT_VERSION}. Upgrade threeline (pip install -U threeline).")
    info.setdefault("application", "threeline.vision")  # format 1 held image models only
    return info


def read_tensors(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a saved model, on the CPU; refuses a file whose SHA-256 is not ``sha256``.

    Example:
        >>> sorted(read_tensors("runs/cats/model"))[:1]  # doctest: +SKIP
        ['body.features.bn1.bias']
    """
    weights, _ = model_paths(path)
    if sha256 is not None and file_sha256(weights) != sha256:
        raise ModelFileError(
            f"{weights} does not match the checksum stored in {weights.with_suffix('.json').name}"
            f": the file was changed or damaged after saving. Use a checkpoint "
            f"(checkpoints/last) or save the model again.")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            if (f.metadata() or {}).get("format") != FORMAT:
                raise ModelFileError(f"{weights} is a safetensors file but not a threeline model; "
                                     f"save the model with learn.save.")
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(
            f"{weights} is not a readable safetensors file ({str(err)[:100]}). threeline only "
            f"loads safetensors (never pickle): save the model with learn.save.") from err


def read_model(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(description, tensors) of a saved model, the weights checked against their checksum."""
    info = read_description(path)
    return info, read_tensors(path, info.get("sha256"))


def json_safe(value: Any) -> Any:
    """Plain JSON types: tensors and numpy numbers become numbers, NaN becomes None.

    Example:
        >>> json_safe({"a": float("nan"), "b": (1, 2.5)})
        {'a': None, 'b': [1, 2.5]}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    return str(value)
