"""The data protocol of the core, and two ready implementations.

A learner's data is anything with

* ``batches(split, device, shuffle, seed)`` -> an iterable of ``(x, y)`` already on ``device``
  (``x`` a tensor or a tuple of tensors, passed to the model as ``model(x)`` / ``model(*x)``);
* ``steps(split)`` -> how many batches that iterable yields.

:class:`TensorData` keeps whole splits as tensors on the device and slices batches out of them
with a shuffled index made on the device: no Python per row, no copies per batch beyond the
gather. :class:`LoaderData` wraps a pair of ``torch.utils.data.DataLoader``.

    data = TensorData((x_train,), y_train, (x_valid,), y_valid, batch_size=256)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch

Batch = tuple[torch.Tensor | tuple[torch.Tensor, ...], torch.Tensor]
SPLITS = ("train", "valid")


@runtime_checkable
class Batches(Protocol):
    """What ``Learner(model, data)`` needs of ``data``."""

    def batches(self, split: str, device: torch.device, shuffle: bool,
                seed: int) -> Iterable[Batch]: ...

    def steps(self, split: str) -> int: ...


def to_device(value, device: torch.device):
    """A tensor, or a tuple/list of them, on ``device`` (non-blocking from pinned memory)."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=value.is_pinned())
    if isinstance(value, (tuple, list)):
        return tuple(to_device(v, device) for v in value)
    return value


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}.")


class TensorData:
    """Splits held as tensors; batches sliced on the device in a seeded random order.

    Args:
        x_train, x_valid: tuples of tensors, each (N, ...) with the same N per split.
        y_train, y_valid: targets, (N, ...).
        batch_size: items per batch.
        drop_last: drop a last, smaller training batch (keeps shapes fixed, which lets a CUDA
            graph replay every step); validation always keeps every item.

    Example:
        >>> data = TensorData((torch.arange(10.0)[:, None],), torch.arange(10),
        ...                   (torch.zeros(4, 1),), torch.zeros(4, dtype=torch.long),
        ...                   batch_size=4)
        >>> data.steps("train"), data.steps("valid")
        (2, 1)
        >>> [tuple(y.shape) for _, y in data.batches("valid", torch.device("cpu"), False, 0)]
        [(4,)]
    """

    def __init__(self, x_train: Sequence[torch.Tensor], y_train: torch.Tensor,
                 x_valid: Sequence[torch.Tensor], y_valid: torch.Tensor, batch_size: int = 64,
                 drop_last: bool = True):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        self.x = {"train": tuple(x_train), "valid": tuple(x_valid)}
        self.y = {"train": y_train, "valid": y_valid}
        for split in SPLITS:
            sizes = {len(t) for t in (*self.x[split], self.y[split])}
            if len(sizes) != 1:
                raise ValueError(f"The {split} tensors have different lengths {sorted(sizes)}; "
                                 f"every tensor of a split needs one row per item.")
        if len(self.y["train"]) == 0:
            raise ValueError("The training split is empty: nothing to train on.")
        self.batch_size, self.drop_last = batch_size, drop_last
        self._on: dict[torch.device, dict] = {}

    def __len__(self) -> int:
        return len(self.y["train"])

    def steps(self, split: str) -> int:
        check_split(split)
        n, bs = len(self.y[split]), self.batch_size
        if split == "train" and self.drop_last and n >= bs:
            return n // bs
        return max(1, -(-n // bs))

    def tensors(self, split: str, device: torch.device) -> tuple[tuple[torch.Tensor, ...],
                                                                 torch.Tensor]:
        """The split's (x, y) on ``device``, moved there once and kept."""
        check_split(split)
        device = torch.device(device)
        if device not in self._on:
            self._on = {device: {s: (to_device(self.x[s], device), to_device(self.y[s], device))
                                 for s in SPLITS}}
        return self._on[device][split]

    def batches(self, split: str, device: torch.device, shuffle: bool,
                seed: int) -> Iterator[Batch]:
        x, y = self.tensors(split, device)
        n, bs = len(y), self.batch_size
        if shuffle:
            generator = torch.Generator(device=y.device).manual_seed(seed)
            order = torch.randperm(n, device=y.device, generator=generator)  # (N,)
        for i in range(self.steps(split)):
            if shuffle:
                index = order[i * bs:(i + 1) * bs]
                xb = tuple(t[index] for t in x)
                yb = y[index]
            else:
                xb = tuple(t[i * bs:(i + 1) * bs] for t in x)
                yb = y[i * bs:(i + 1) * bs]
            yield (xb[0] if len(xb) == 1 else xb), yb


class LoaderData:
    """Two ``DataLoader``s (train, valid) as learner data; batches moved to the device.

    The training loader's own sampler decides the order; ``shuffle`` and ``seed`` are passed
    on only through ``torch.manual_seed`` before each pass, which seeds a default sampler.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> ds = TensorDataset(torch.zeros(6, 2), torch.zeros(6, dtype=torch.long))
        >>> data = LoaderData(DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4))
        >>> data.steps("train")
        2
    """

    def __init__(self, train, valid):
        self.loaders = {"train": train, "valid": valid}

    def steps(self, split: str) -> int:
        check_split(split)
        return len(self.loaders[split])

    def batches(self, split: str, device: torch.device, shuffle: bool,
                seed: int) -> Iterator[Batch]:
        check_split(split)
        if shuffle:
            torch.manual_seed(seed)
        for batch in self.loaders[split]:
            *x, y = batch
            x = to_device(tuple(x), device)
            yield (x[0] if len(x) == 1 else x), to_device(y, device)
