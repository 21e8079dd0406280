"""An image model described as JSON, rebuilt from it, and exported to ONNX.

The files themselves are written and checked by :mod:`threeline.saving` (safetensors + JSON with
a checksum, no pickle); this module says what an image model's JSON holds (architecture,
classes, input size, preprocessing and normalization, head shape) and rebuilds the learner.

:func:`export_onnx` writes one ``.onnx`` file that takes RGB pixels in [0, 1] and returns
probabilities, with the class names and preprocessing in its metadata.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from threeline.losses import BinaryCrossEntropy, CrossEntropy, Loss, from_description
from threeline.saving import ModelFileError, json_safe
from threeline.vision.model import Body, make_head
from threeline.vision.transforms import Preprocess
from threeline.vision.weights import create_backbone, resolve

if TYPE_CHECKING:
    from threeline.vision.data import ImageData
    from threeline.vision.learner import ImageLearner
    from threeline.vision.learner import ImageLearner as Learner


def describe(learn: Learner, **extra: Any) -> dict:
    """The JSON description of ``learn``'s model (everything but the weights).

    Example:
        >>> describe(learn)["classes"]  # doctest: +SKIP
        ['cats', 'dogs']
    """
    p = learn.preprocess
    linears = [m for m in learn.head.modules() if isinstance(m, nn.Linear)]
    dropouts = [m for m in learn.head.modules() if isinstance(m, nn.Dropout)]
    return {
        "application": "threeline.vision",
        "loss": learn.loss.describe(),
        "arch": learn.arch,
        "timm_name": resolve(learn.arch).timm_name,
        "classes": list(learn.classes),
        "input_size": [3, p.size, p.size],
        "preprocess": {"size": p.size, "resize_to": p.resize_to, "crop_pct": p.crop_pct,
                       "interpolation": p.interpolation, "mean": list(p.mean),
                       "std": list(p.std), "pixels": "RGB, 0-255 scaled to 0-1, then normalized"},
        "head": {"in_features": learn.body.out_features,
                 "hidden": linears[0].out_features if len(linears) > 1 else 0,  # 0: linear
                 "dropout": dropouts[0].p if dropouts else 0.0, "n_classes": len(learn.classes)},
        "pool": "catavgmax",
        "pretrained_weights": learn.weights_id,
        "trained_on": {"device": learn.device.type, "data": str(learn.data.root)},
        "history": json_safe(learn.history),
        **json_safe(extra),
    }


def check_fields(meta: Path, info: dict) -> None:
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


def load_into(body: nn.Module, head: nn.Module, tensors: dict, source: Path | str) -> None:
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


def rebuild(info: dict, tensors: dict[str, torch.Tensor], data: ImageData | None = None,
            device: str | torch.device | None = None, progress: bool = True,
            source: str = "the saved model") -> ImageLearner:
    """An :class:`ImageLearner` from a saved description and its tensors, ready to predict.

    Args:
        info, tensors: what :func:`threeline.saving.read_model` returns.
        data: an :class:`ImageData` with the same classes, to validate or train further; None
            gives a learner that only knows the class names (enough to predict).
        device: None picks CUDA when present, else the CPU.
    """
    from threeline.devices import as_device
    from threeline.vision.data import ImageData
    from threeline.vision.learner import ImageLearner

    check_fields(Path(source), info)
    pre, head_info, classes = info["preprocess"], info["head"], info["classes"]
    loss = saved_loss(info, source)
    multi = isinstance(loss, BinaryCrossEntropy)
    if data is None:
        data = ImageData.from_classes(classes, size=pre["size"])
        data.multi_label = multi
    elif list(data.classes) != classes:
        raise ValueError(
            f"The data's classes {data.classes} differ from the model's {classes}. Pass data "
            f"with the same class folders, or none to only predict.")
    elif bool(getattr(data, "multi_label", False)) != multi:
        raise ValueError(
            f"The model is {'multi' if multi else 'single'}-label but the data is not; pass "
            f"data labelled the same way (ImageData.from_csv with or without label_delim).")
    network, _, _ = create_backbone(info["arch"], pretrained=False)
    body = Body(network)
    head = make_head(head_info["in_features"], len(classes), head_info["hidden"],
                     float(head_info.get("dropout", 0.25)))
    load_into(body, head, tensors, source)
    preprocess = Preprocess(size=pre["size"], crop_pct=float(pre.get("crop_pct", 0.875)),
                            interpolation=str(pre.get("interpolation", "bicubic")),
                            mean=tuple(map(float, pre["mean"])), std=tuple(map(float, pre["std"])))
    digest = info.get("sha256") or _tensor_digest(tensors)
    weights_id = f"{info.get('timm_name', info['arch'])}:saved:{digest[:16]}"
    learn = ImageLearner(body, head, data, preprocess, info["arch"], weights_id,
                         as_device(device), progress=progress, loss=loss)
    learn.history = list(info.get("history") or [])
    return learn


def saved_loss(info: dict, source: str = "the saved model") -> Loss:
    """The loss object saved with a model (its thresholds included); CrossEntropy for files
    written before losses were saved.

    Example:
        >>> loss = saved_loss({"loss": {"name": "binary_cross_entropy", "thresholds": [0.3, 0.4]}})
        >>> type(loss).__name__, [round(t, 2) for t in loss.thresholds.tolist()]
        ('BinaryCrossEntropy', [0.3, 0.4])
    """
    described = info.get("loss")
    if described is None:
        return CrossEntropy()
    try:
        return from_description(described)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{source} describes an unknown loss ({err}). Save the model "
                             f"again with this version of threeline.") from err


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A content hash of tensors (files of format 1 carried no checksum)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].float().numpy().tobytes())
    return digest.hexdigest()


class _Exported(nn.Module):
    """Pixels in [0, 1] (B, 3, S, S) -> probabilities (B, C): softmax over the classes, or
    with ``multi_label`` an independent sigmoid per label."""

    def __init__(self, body: nn.Module, head: nn.Module, mean, std, multi_label: bool = False):
        super().__init__()
        self.body, self.head, self.multi_label = body, head, multi_label
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.body((pixels - self.mean) / self.std))
        if self.multi_label:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)


def export_onnx(learn: Learner, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write an ONNX model: input ``pixels`` float32 (B, 3, S, S) RGB in [0, 1], output
    ``probabilities`` (B, C): a softmax over the classes, or for multi-label models an
    independent sigmoid per label (the thresholds are in the metadata's ``output`` note).
    Class names and preprocessing are in its metadata.

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
    multi = isinstance(learn.loss, BinaryCrossEntropy)
    module = _Exported(copy.deepcopy(learn.body).cpu().float(),
                       copy.deepcopy(learn.head).cpu().float(), p.mean, p.std, multi).eval()
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
                       "output": _output_note(learn)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def _output_note(learn: Learner) -> str:
    """What the ONNX output means, for its metadata."""
    if not isinstance(learn.loss, BinaryCrossEntropy):
        return "probabilities: float32 (batch, classes), softmax"
    thresholds = [round(float(t), 4) for t in learn.loss.thresholds.reshape(-1)]
    return (f"probabilities: float32 (batch, labels), an independent sigmoid per label; a "
            f"label is present above its threshold: {json.dumps(thresholds)}")
