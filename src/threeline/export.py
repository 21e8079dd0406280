"""Save, load and export trained models, without pickle.

A saved model is two files side by side:

* ``NAME.safetensors`` — every weight of the body and the head (plain tensors, no code);
* ``NAME.json`` — what is needed to rebuild and use them: architecture, classes, input size,
  preprocessing and normalization, head shape, library version and training history.

Loading parses JSON and safetensors only, so opening a model file never executes code. Tensors are
stored device-free and read onto the CPU first, so a model trained on a GPU loads anywhere.

:func:`export_onnx` writes one ``.onnx`` file that takes RGB pixels in [0, 1] and returns
probabilities, with the class names and preprocessing in its metadata.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from threeline.model import Body, make_head
from threeline.transforms import Preprocess
from threeline.weights import create_backbone, resolve

if TYPE_CHECKING:
    from threeline.data import ImageData
    from threeline.learner import Learner

FORMAT = "threeline-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that is missing, damaged, or not a threeline model."""


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


def describe(learn: Learner, **extra: Any) -> dict:
    """The JSON description of ``learn``'s model (everything but the weights).

    Example:
        >>> describe(learn)["classes"]  # doctest: +SKIP
        ['cats', 'dogs']
    """
    from threeline import __version__

    p = learn.preprocess
    linears = [m for m in learn.head.modules() if isinstance(m, nn.Linear)]
    dropouts = [m for m in learn.head.modules() if isinstance(m, nn.Dropout)]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "threeline_version": __version__,
        "arch": learn.arch,
        "timm_name": resolve(learn.arch).timm_name,
        "classes": list(learn.classes),
        "input_size": [3, p.size, p.size],
        "preprocess": {"size": p.size, "resize_to": p.resize_to, "crop_pct": p.crop_pct,
                       "interpolation": p.interpolation, "mean": list(p.mean),
                       "std": list(p.std), "pixels": "RGB, 0-255 scaled to 0-1, then normalized"},
        "head": {"in_features": learn.body.out_features, "hidden": linears[0].out_features,
                 "dropout": dropouts[0].p if dropouts else 0.0, "n_classes": len(learn.classes)},
        "pool": "catavgmax",
        "pretrained_weights": learn.weights_id,
        "trained_on": {"device": learn.device.type, "data": str(learn.data.root)},
        "history": _json_safe(learn.history),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **_json_safe(extra),
    }


def save(learn: Learner, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``path.safetensors`` and ``path.json`` atomically; returns the weights' path.

    Extra keyword values (JSON types) are stored in the description.

    Example:
        >>> save(learn, "runs/cats/model")  # doctest: +SKIP
        PosixPath('runs/cats/model.safetensors')
    """
    return write(snapshot(learn, **extra), path)


def snapshot(learn: Learner, body: dict[str, torch.Tensor] | None = None,
             **extra: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """CPU copies of the weights and the description: what :func:`write` needs, taken now.

    ``body``: the ``body.*`` tensors of an earlier snapshot, reused as they are when the caller
    knows the body has not changed since (a frozen body while the head trains).
    """
    tensors = {f"head.{k}": v for k, v in learn.head.state_dict().items()}
    if body is None:
        tensors |= {f"body.{k}": v for k, v in learn.body.state_dict().items()}
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return (body or {}) | tensors, describe(learn, **extra)


def write(snap: tuple[dict[str, torch.Tensor], dict], path: str | os.PathLike) -> Path:
    """Write a :func:`snapshot` as ``path.safetensors`` + ``path.json``, each atomically."""
    tensors, description = snap
    weights, meta = model_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    _atomic(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
    _atomic(meta, lambda tmp: tmp.write_text(json.dumps(description, indent=2), "utf-8"))
    return weights


def read_description(path: str | os.PathLike) -> dict:
    """The checked JSON description of a saved model.

    Example:
        >>> read_description("runs/cats/model")["arch"]  # doctest: +SKIP
        'efficientnet_lite2'
    """
    weights, meta = model_paths(path)
    if not meta.is_file() or not weights.is_file():
        raise ModelFileError(
            f"No saved model at {meta.with_suffix('')}: expected {weights.name} and {meta.name} "
            f"side by side (written by learn.save). Check the path."
        )
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
            f"up to {FORMAT_VERSION}. Upgrade threeline (pip install -U threeline)."
        )
    _check_fields(meta, info)
    return info


def _check_fields(meta: Path, info: dict) -> None:
    classes, pre, head = info.get("classes"), info.get("preprocess"), info.get("head")
    problems = []
    if not isinstance(info.get("arch"), str):
        problems.append("arch must be a model name")
    if not (isinstance(classes, list) and len(classes) >= 2
            and all(isinstance(c, str) for c in classes)):
        problems.append("classes must be a list of at least two names")
    if not (isinstance(pre, dict) and isinstance(pre.get("size"), int)
            and all(isinstance(pre.get(k), list) and len(pre[k]) == 3 for k in ("mean", "std"))):
        problems.append("preprocess must give size, mean and std")
    if not (isinstance(head, dict) and all(isinstance(head.get(k), int)
                                           for k in ("in_features", "hidden", "n_classes"))):
        problems.append("head must give in_features, hidden and n_classes")
    if problems:
        raise ModelFileError(f"{meta} is damaged: {'; '.join(problems)}. Save the model again.")


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a saved model, on the CPU. Refuses anything that is not safetensors.

    Example:
        >>> sorted(read_weights("runs/cats/model"))[:1]  # doctest: +SKIP
        ['body.features.bn1.bias']
    """
    weights, _ = model_paths(path)
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
            f"loads safetensors (never pickle): save the model with learn.save."
        ) from err


def load_state(learn: Learner, path: str | os.PathLike) -> None:
    """Copy saved weights into ``learn``'s existing body and head, in place (same architecture).

    Example:
        >>> load_state(learn, "checkpoints/last")  # doctest: +SKIP
    """
    tensors = read_weights(path)
    _load_into(learn.body, learn.head, tensors, model_paths(path)[0])


def _load_into(body: nn.Module, head: nn.Module, tensors: dict, source: Path) -> None:
    parts: dict[str, dict] = {"body": {}, "head": {}}
    for key, value in tensors.items():
        part, _, name = key.partition(".")
        if part not in parts:
            raise ModelFileError(f"{source} holds an unexpected tensor {key!r}; save it again.")
        parts[part][name] = value
    for name, module in (("body", body), ("head", head)):
        try:
            module.load_state_dict(parts[name], strict=True)
        except RuntimeError as err:
            raise ModelFileError(
                f"The weights in {source} do not fit the {name} described next to them "
                f"({str(err).splitlines()[0][:120]}). Save the model again."
            ) from err


def load(path: str | os.PathLike, data: ImageData | None = None,
         device: str | torch.device | None = None, progress: bool = True,
         learner_cls: type | None = None) -> Learner:
    """A :class:`~threeline.Learner` rebuilt from ``learn.save`` files, ready to predict.

    Args:
        path: the base name, either file, or a run folder holding ``model.*``.
        data: an :class:`ImageData` with the same classes, to validate or train further; None
            gives a learner that only knows the class names (enough to predict).
        device: where to put the model; None picks CUDA when present, else the CPU.
        progress: show progress bars.

    Example:
        >>> learn = load("runs/cats/model", device="cpu")  # doctest: +SKIP
    """
    from threeline.data import ImageData
    from threeline.learner import Learner, default_device

    info = read_description(path)
    tensors = read_weights(path)
    pre, head_info, classes = info["preprocess"], info["head"], info["classes"]
    if data is None:
        data = ImageData.from_classes(classes, size=pre["size"])
    elif list(data.classes) != classes:
        raise ValueError(
            f"The data's classes {data.classes} differ from the model's {classes}. Pass data "
            f"with the same class folders, or none to only predict."
        )
    network, _, _ = create_backbone(info["arch"], pretrained=False)
    body = Body(network)
    head = make_head(head_info["in_features"], len(classes), head_info["hidden"],
                     float(head_info.get("dropout", 0.25)))
    weights = model_paths(path)[0]
    _load_into(body, head, tensors, weights)
    preprocess = Preprocess(size=pre["size"], crop_pct=float(pre.get("crop_pct", 0.875)),
                            interpolation=str(pre.get("interpolation", "bicubic")),
                            mean=tuple(map(float, pre["mean"])), std=tuple(map(float, pre["std"])))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    weights_id = f"{info.get('timm_name', info['arch'])}:saved:{digest}"
    device = torch.device(device) if device is not None else default_device()
    cls = learner_cls or Learner
    learn = cls(body, head, data, preprocess, info["arch"], weights_id, device,
                progress=progress)
    learn.history = list(info.get("history") or [])
    return learn


class _Exported(nn.Module):
    """Pixels in [0, 1] (B, 3, S, S) -> probabilities (B, C)."""

    def __init__(self, body: nn.Module, head: nn.Module, mean, std):
        super().__init__()
        self.body, self.head = body, head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.body((pixels - self.mean) / self.std))
        return torch.softmax(logits, dim=1)


def export_onnx(learn: Learner, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write an ONNX model: input ``pixels`` float32 (B, 3, S, S) RGB in [0, 1], output
    ``probabilities`` (B, C). Class names and preprocessing are in its metadata.

    Prepare inputs like :class:`~threeline.transforms.Preprocess`: resize the shorter side to
    ``resize_to``, center-crop ``size`` x ``size``, divide by 255.

    Example:
        >>> export_onnx(learn, "model.onnx")  # doctest: +SKIP
        PosixPath('model.onnx')
    """
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: pip install 'threeline[onnx]'.") \
            from err
    out = Path(path).expanduser()
    if out.suffix != ".onnx":
        out = out.with_name(out.name + ".onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    p = learn.preprocess
    module = _Exported(copy.deepcopy(learn.body).cpu().float(),
                       copy.deepcopy(learn.head).cpu().float(), p.mean, p.std).eval()
    module.body.to(memory_format=torch.contiguous_format)
    example = torch.rand(1, 3, p.size, p.size)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        kwargs: dict[str, Any] = dict(
            input_names=["pixels"], output_names=["probabilities"], opset_version=opset,
            dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}})
        try:
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, **kwargs)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(module, (example,), str(tmp), **kwargs)
    model = onnx.load(str(tmp))
    meta = describe(learn)
    meta.pop("history", None)
    for key, value in {"threeline": json.dumps(meta), "classes": json.dumps(meta["classes"]),
                       "input": f"pixels: float32 (batch, 3, {p.size}, {p.size}), RGB in [0, 1]; "
                                f"resize shorter side to {p.resize_to}, center-crop {p.size}",
                       "output": "probabilities: float32 (batch, classes)"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_safe(value: Any) -> Any:
    """Plain JSON types: tensors and numpy numbers become numbers, NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
