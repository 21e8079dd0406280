"""Small images resident on the device, augmented there: learner data for training from scratch.

The uint8 pixels, (N, H, W, C), move to the device once. Each training batch is a random crop of
the reflect-padded image and a random horizontal flip, made as one batched gather on the device
(no Python per image, no copy from the host); batches come out normalised float32 (B, C, H, W),
channels_last in memory, with the per-channel mean and std of the training images.

    data = ResidentImages(images, labels, train_idx, valid_idx, batch_size=512)
    learn = Learner(fast_resnet(), data)

:meth:`threeline.vision.ImageData.on_device` builds one from an image folder (each image decoded
once, see :mod:`threeline.vision.squares`); ``Learner(model, image_data)`` does so on first use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from threeline.batches import check_split

Batch = tuple[torch.Tensor, torch.Tensor]


class TooLargeError(ValueError):
    """The pixels to keep resident would take more memory than the budget allows."""


def check_fits(n_bytes: int, budget: int, where: str) -> None:
    """Raise :class:`TooLargeError` when ``n_bytes`` of resident pixels exceed ``budget``.

    Example:
        >>> check_fits(1 << 20, 1 << 30, "memory")  # fits: no error
    """
    if n_bytes <= budget:
        return
    raise TooLargeError(
        f"Training from scratch keeps every image decoded in {where}: these would take "
        f"{n_bytes / 2**30:.2f} GiB of uint8 pixels, more than the {budget / 2**30:.2f} GiB "
        f"allowed (max_bytes; by default a quarter of the memory). Expected small images that "
        f"fit whole (CIFAR-10's 50,000 at size 32 take 0.24 GiB). Use a smaller size "
        f"(ImageData.from_folder(..., size=64)) or fewer images; or train a pretrained body, "
        f"which decodes batches from the files as it goes: "
        f"Learner.pretrained('efficientnet_lite0', data).")


def resident_bytes(n: int, height: int, width: int, channels: int, pad: int) -> int:
    """Bytes of ``n`` uint8 images kept with a ``pad``-pixel border.

    Example:
        >>> resident_bytes(50_000, 32, 32, 3, pad=4)
        240000000
    """
    return n * channels * (height + 2 * pad) * (width + 2 * pad)


def reflect_index(size: int, pad: int) -> torch.Tensor:
    """Indices that reflect-pad an axis: size 4, pad 2 -> [2, 1, 0, 1, 2, 3, 2, 1].

    Example:
        >>> reflect_index(4, 2).tolist()
        [2, 1, 0, 1, 2, 3, 2, 1]
    """
    return _reflect(torch.arange(-pad, size + pad), size)


def shifted_index(size: int, shift: int) -> torch.Tensor:
    """Indices that move an axis by ``shift`` pixels, reflecting at the border: size 4,
    shift 1 -> [1, 2, 3, 2].

    Example:
        >>> shifted_index(4, 1).tolist(), shifted_index(4, -1).tolist()
        ([1, 2, 3, 2], [1, 0, 1, 2])
    """
    return _reflect(torch.arange(size) + shift, size)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Positions ``i`` (within one size of the axis) reflected into [0, size)."""
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0-255 scale) of uint8 images (N, H, W, C), chunk by chunk (no
    float copy of the whole set).

    Example:
        >>> channel_stats(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1))
        ([127.5], [127.5])
    """
    sums = torch.zeros(2, images.shape[-1], dtype=torch.float64)  # (2, C): sum, sum of squares
    for part in images.split(chunk):
        x = part.reshape(-1, images.shape[-1]).double()  # (n H W, C)
        sums += torch.stack([x.sum(0), (x * x).sum(0)])
    count = max(1, images[..., 0].numel())
    mean = sums[0] / count
    std = (sums[1] / count - mean**2).clamp_min(1e-6).sqrt()
    return mean.tolist(), std.clamp_min(1.0).tolist()


def random_crops(n: int, height: int, width: int, pad: int, flip: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (N, H) and columns (N, W) of a random ``height`` x ``width`` crop of each padded
    image; a flip reads the crop's columns backwards."""
    device = generator.device
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=device, generator=generator)
    rows = dy + torch.arange(height, device=device)  # (N, H)
    cols = dx + torch.arange(width, device=device)  # (N, W)
    if flip:
        flipped = torch.rand(n, 1, device=device, generator=generator) < 0.5  # (N, 1)
        cols = torch.where(flipped, cols.flip(1), cols)
    return rows, cols


class ResidentImages:
    """uint8 images resident on the device, augmented there: the learner data protocol.

    Args:
        images: (N, H, W, C) uint8, every split's images.
        labels: (N,) class indices.
        train_idx, valid_idx: the rows of each split.
        batch_size: training images per batch (a last, smaller batch is dropped).
        valid_batch_size: validation images per batch (default: twice ``batch_size``).
        pad: the reflect-padded border random crops are taken from (0: no crops).
        flip: random horizontal flips of training images.
        augment: False trains on the images as they are (no crops, no flips).
        flip_valid: flip the validation images (test-time augmentation, see
            :meth:`with_flipped_valid`).
        shift_valid: (rows, columns) to move the validation images by, reflecting at the
            border (test-time augmentation: views moved by a pixel).
        max_bytes: the most pixels kept on a CUDA device (default: a quarter of its memory).

    Example:
        >>> images = torch.randint(0, 256, (20, 8, 8, 3), dtype=torch.uint8)
        >>> data = ResidentImages(images, torch.arange(20) % 2, np.arange(16),
        ...                       np.arange(16, 20), batch_size=8, pad=1)
        >>> x, y = next(iter(data.batches("train", torch.device("cpu"), True, 0)))
        >>> tuple(x.shape), x.dtype, data.steps("train"), data.steps("valid")
        ((8, 3, 8, 8), torch.float32, 2, 1)
    """

    graphable = False  # True lets the learner replay steps as a CUDA graph (fixed shapes)

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                 train_idx: Sequence[int] | np.ndarray, valid_idx: Sequence[int] | np.ndarray,
                 batch_size: int = 512, valid_batch_size: int | None = None, pad: int = 4,
                 flip: bool = True, augment: bool = True, flip_valid: bool = False,
                 shift_valid: tuple[int, int] = (0, 0), max_bytes: int | None = None):
        images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be (N, H, W, C) uint8, got {tuple(images.shape)} "
                             f"{images.dtype}.")
        self.images, self.labels = images, labels  # (N, H, W, C), (N,)
        self.index = {"train": torch.as_tensor(np.asarray(train_idx), dtype=torch.int64),
                      "valid": torch.as_tensor(np.asarray(valid_idx), dtype=torch.int64)}
        if len(self.index["train"]) == 0:
            raise ValueError("The training split is empty: nothing to train on.")
        self.batch_size, self.valid_batch_size = batch_size, valid_batch_size or 2 * batch_size
        self.pad, self.flip, self.augment, self.flip_valid = pad, flip, augment, flip_valid
        self.shift_valid = shift_valid  # checked below: two whole numbers
        self.max_bytes = max_bytes
        _check_options(self)
        self.mean, self.std = channel_stats(images[self.index["train"]])  # per channel, 0-255
        self._store: dict[tuple, torch.Tensor] = {}  # device tensors, shared with views

    @property
    def channels(self) -> int:
        """Channels of the images: 1 (grayscale) or 3 (RGB)."""
        return int(self.images.shape[-1])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the batches' images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def options(self, **changes) -> ResidentImages:
        """The same images (sharing the device tensors) with other settings: ``batch_size``,
        ``valid_batch_size``, ``pad``, ``flip``, ``augment``, ``flip_valid``, ``shift_valid``.

        Example:
            >>> images = torch.zeros(4, 8, 8, 1, dtype=torch.uint8)
            >>> ResidentImages(images, torch.zeros(4), [0, 1], [2, 3], 2).options(
            ...     augment=False).augment
            False
        """
        unknown = set(changes) - {"batch_size", "valid_batch_size", "pad", "flip", "augment",
                                  "flip_valid", "shift_valid", "max_bytes"}
        if unknown:
            raise TypeError(f"Unknown option(s) {sorted(unknown)}.")
        other = copy.copy(self)  # shallow: the pixels and the device tensors are shared
        for name, value in changes.items():
            setattr(other, name, value)
        _check_options(other)
        return other

    def with_flipped_valid(self) -> ResidentImages:
        """The same data with the validation images flipped (for flip test-time augmentation)."""
        return self.options(flip_valid=not self.flip_valid)

    def steps(self, split: str) -> int:
        check_split(split)
        n = len(self.index[split])
        if split == "train":
            return n // min(self.batch_size, n)
        return -(-n // self.valid_batch_size)

    def batches(self, split: str, device: torch.device, shuffle: bool,
                seed: int) -> Iterator[Batch]:
        """Normalised float32 batches (B, C, H, W) and labels (B,), on ``device``."""
        check_split(split)
        device = torch.device(device)
        if split == "valid":
            return self._valid_batches(device)
        return self._train_batches(device, shuffle, seed)

    # ----------------------------------------------------------------- on the device

    def _on(self, name: str, device: torch.device, make: Callable[[], torch.Tensor]
            ) -> torch.Tensor:
        """A tensor on ``device``, made once and kept (one device at a time)."""
        if any(key[1] != device for key in self._store):
            self._store.clear()
        key = (name, device)
        if key not in self._store:
            self._store[key] = make()
        return self._store[key]

    def _split_on(self, split: str, device: torch.device, pad: int = 0) -> torch.Tensor:
        """The split's images (N, H + 2 pad, W + 2 pad, C) uint8 on ``device``."""
        def make() -> torch.Tensor:
            images = self.images[self.index[split]]  # (N, H, W, C)
            if pad:
                h, w = self.size
                images = images[:, reflect_index(h, pad)][:, :, reflect_index(w, pad)]
            self._check_device(device, pad)
            return images.to(device)
        return self._on(f"{split}-{pad}", device, make)

    def _check_device(self, device: torch.device, pad: int) -> None:
        if device.type != "cuda":
            return  # host pixels were counted when they were decoded
        h, w = self.size
        n_bytes = sum(resident_bytes(len(self.index[s]), h, w, self.channels, p)
                      for s, p in (("train", pad), ("valid", 0)))
        budget = self.max_bytes or torch.cuda.mem_get_info(device)[1] // 4
        check_fits(n_bytes, budget, f"the memory of {device}")

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.channels
        mean = self._on("mean", device, lambda: torch.tensor(self.mean, device=device))
        std = self._on("std", device, lambda: torch.tensor(self.std, device=device))
        return mean.view(1, c, 1, 1), std.view(1, c, 1, 1)

    def _normalise(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float32 (B, C, H, W), channels_last, normalised."""
        mean, std = self._stats_on(device)
        return (x.permute(0, 3, 1, 2).float() - mean) / std

    def input_batches(self, images: torch.Tensor, device: torch.device,
                      ) -> Iterator[tuple[torch.Tensor, None]]:
        """New (N, H, W, C) uint8 images as normalised batches like the validation ones (no
        targets): what :meth:`threeline.learner.Learner.predict` feeds the model."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (*self.size, self.channels):
            raise ValueError(f"images must be (N, {self.size[0]}, {self.size[1]}, "
                             f"{self.channels}) uint8 like the training ones, got "
                             f"{tuple(images.shape)}.")
        bs = self.valid_batch_size
        for i in range(0, len(images), bs):
            x = images[i:i + bs].to(device, non_blocking=True)  # (B, H, W, C)
            yield self._normalise(x.flip(2) if self.flip_valid else x, device), None

    def _valid_batches(self, device: torch.device) -> Iterator[Batch]:
        images = self._split_on("valid", device)  # (M, H, W, C)
        y = self._on("y-valid", device, lambda: self.labels[self.index["valid"]].to(device))
        bs, (dy, dx) = self.valid_batch_size, self.shift_valid
        if dy or dx:  # rows and columns to read, for views moved by (dy, dx)
            rows = self._on(f"rows{dy}", device, lambda: shifted_index(self.size[0], dy).to(device))
            cols = self._on(f"cols{dx}", device, lambda: shifted_index(self.size[1], dx).to(device))
        for i in range(self.steps("valid")):
            part = slice(i * bs, (i + 1) * bs)
            x = images[part].flip(2) if self.flip_valid else images[part]  # (B, H, W, C)
            if dy or dx:
                x = x[:, rows][:, :, cols]
            yield self._normalise(x, device), y[part]

    def _train_batches(self, device: torch.device, shuffle: bool, seed: int) -> Iterator[Batch]:
        pad = self.pad if self.augment else 0
        images = self._split_on("train", device, pad)  # (N, H + 2 pad, W + 2 pad, C)
        y = self._on("y-train", device, lambda: self.labels[self.index["train"]].to(device))
        n, (h, w) = len(y), self.size
        bs = min(self.batch_size, n)
        g = torch.Generator(device=device).manual_seed(seed)
        order = (torch.randperm(n, device=device, generator=g) if shuffle
                 else torch.arange(n, device=device))  # (N,)
        crops = (random_crops(n, h, w, pad, self.flip, g)
                 if self.augment and (pad or self.flip) else None)
        for i in range(self.steps("train")):
            take = order[i * bs:(i + 1) * bs]  # (B,)
            if crops is None:
                x = images[take]  # (B, H, W, C)
            else:
                rows, cols = crops[0][take], crops[1][take]  # (B, H), (B, W)
                x = images[take[:, None, None], rows[:, :, None], cols[:, None, :]]
            yield self._normalise(x, device), y[take]


def _check_options(data: ResidentImages) -> None:
    for name in ("batch_size", "valid_batch_size"):
        value = getattr(data, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
    if isinstance(data.pad, bool) or not isinstance(data.pad, int) or data.pad < 0:
        raise ValueError(f"pad must be a whole number >= 0, got {data.pad!r}.")
    shift = data.shift_valid
    if not isinstance(shift, (tuple, list)) or len(shift) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and abs(v) < s
            for v, s in zip(shift, data.size, strict=True)):
        raise ValueError(f"shift_valid must be two whole numbers smaller than the images "
                         f"({data.size}), got {shift!r}.")
    if data.pad >= min(data.size):
        raise ValueError(f"pad={data.pad} must be smaller than the images ({data.size}).")
