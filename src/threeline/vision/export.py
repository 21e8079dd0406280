"""An image model described as JSON, its saved weights loaded back, and exported to ONNX.

The files themselves are written and checked by :mod:`threeline.saving` (safetensors + JSON with
a checksum, no pickle); this module says what an image model's JSON holds (architecture,
classes, input size, preprocessing and normalization, head shape) and loads saved weights into
a body and a head; :func:`threeline.vision.factory.rebuild` makes the learner from them.

:func:`export_onnx` writes one ``.onnx`` file that takes RGB pixels in [0, 1] and returns
probabilities, with the class names and preprocessing in its metadata.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from threeline.losses import BinaryCrossEntropy
from threeline.saving import ModelFileError, json_safe
from threeline.vision.weights import resolve

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionLearner


def describe(learn: VisionLearner, **extra: Any) -> dict:
    """The JSON description of ``learn``'s model (everything but the weights).

    Example:
        >>> describe(learn)["classes"]  # doctest: +SKIP
        ['cats', 'dogs']
    """
    p = learn.preprocess
    augment = learn.augment or learn.tta_augment  # what predict's TTA softens
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
        "tta": {"views": learn.tta_views, "augment": None if augment is None
                else json_safe(dataclasses.asdict(augment))},
        **json_safe(extra),
    }


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


def export_onnx(learn: VisionLearner, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write an ONNX model: input ``pixels`` float32 (B, 3, S, S) RGB in [0, 1], output
    ``probabilities`` (B, C): a softmax over the classes, or for multi-label models an
    independent sigmoid per label (the thresholds are in the metadata's ``output`` note).
    Class names and preprocessing are in its metadata.

    Prepare inputs like :class:`~threeline.transforms.Preprocess`: resize the shorter side to
    ``resize_to``, center-crop ``size`` x ``size``, divide by 255. The graph scores one view:
    where ``learn.predict`` averages TTA copies (``learn.tta_views``), average the ONNX
    model's outputs over flipped inputs to come close to it.

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


def _output_note(learn: VisionLearner) -> str:
    """What the ONNX output means, for its metadata."""
    if not isinstance(learn.loss, BinaryCrossEntropy):
        return "probabilities: float32 (batch, classes), softmax"
    thresholds = [round(float(t), 4) for t in learn.loss.thresholds.reshape(-1)]
    return (f"probabilities: float32 (batch, labels), an independent sigmoid per label; a "
            f"label is present above its threshold: {json.dumps(thresholds)}")
