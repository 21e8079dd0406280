"""Which device a learner runs on, checked up front."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_device(device: str | torch.device | None) -> torch.device:
    """A checked ``torch.device``; None picks CUDA when present."""
    if device is None:
        return _local_gpu(default_device())
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device torch knows; use 'cpu', 'cuda' or "
                         f"'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for, but this machine has no usable CUDA GPU "
                         "(or this torch was built without CUDA); use device='cpu'.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={str(device)!r} is not supported; use 'cpu' or 'cuda'.")
    return _local_gpu(device)


def _local_gpu(device: torch.device) -> torch.device:
    """Under torchrun (several processes), ``cuda`` means this process's GPU, ``LOCAL_RANK``."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ \
            and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device
