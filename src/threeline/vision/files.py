"""Image files as a torch Dataset: decoded in worker processes, failures reported, not fatal."""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from threeline.vision.images import MAX_PIXELS, pixel_limit, too_large_hint
from threeline.vision.scan import print_failure


class ImageLoader(DataLoader):
    """A DataLoader of ``(images, labels)`` that reports files that failed to decode.

    Stops with an error when most images fail (a broken transform, not a few bad files).

    Example:
        >>> from threeline.vision.data import ImageData, demo_path
        >>> from threeline.vision.transforms import Preprocess
        >>> data = ImageData.from_folder(demo_path(), num_workers=0)
        >>> images, labels = next(iter(data.loader(data.valid.files, data.valid.labels,
        ...                                        Preprocess(size=64), batch_size=4)))
        >>> images.shape, labels.tolist()
        (torch.Size([4, 3, 64, 64]), [0, 0, 0, 0])
    """

    def __init__(self, *args, on_failure: Callable[[str, str], None], **kwargs):
        super().__init__(*args, **kwargs)
        self.on_failure = on_failure

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seen, failed = 0, 0
        for images, labels, failures in super().__iter__():
            seen, failed = seen + len(labels), failed + len(failures)
            for path, reason in failures:
                self.on_failure(path, reason)
            if failed > 8 and failed > seen / 2:
                path, reason = failures[0] if failures else ("?", "?")
                raise ValueError(
                    f"{failed} of {seen} images failed to decode (e.g. {path}: {reason}). "
                    f"Expected a few bad files at most; check the files and the transform."
                )
            yield images, labels


def default_workers() -> int:
    """Decoding processes: one per core beyond the one running the model, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min((cores or 1) - 1, 16))


def _worker_init(worker_id: int) -> None:
    """Decoding workers must not compete with the model for cores: one thread each, and a lower
    scheduling priority, so the model's threads keep the cores and decoding fills the gaps."""
    torch.set_num_threads(1)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)


def by_value(samples: list) -> list:
    """A decoding worker's chunk of (image, label, failure) with the images as numpy arrays:
    they leave the worker by value, whereas each tensor would keep a shared-memory file open for
    as long as it lives (thousands of images exhaust the process's file descriptors, and that
    memory does not show in its resident size)."""
    return [(image.numpy(), label, failure) for image, label, failure in samples]


# What decoding a bad file can raise (Pillow wraps most, not all, of its decoders' errors).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                 MemoryError, Image.DecompressionBombError)


class ImageFiles(Dataset):
    """Files (or PIL images) and labels; ``transform`` turns one into a uint8 tensor.

    A file that cannot be decoded gives a plain gray image instead of an exception, with a line
    on stderr, so one bad file never ends an epoch.

    Example:
        >>> from threeline.vision.data import ImageData, demo_path
        >>> from threeline.vision.transforms import Preprocess
        >>> files = sorted((demo_path() / "train" / "cats").iterdir())[:2]
        >>> image, label = ImageFiles(files, [0, 0], Preprocess(size=64))[0]
        >>> image.shape, label
        (torch.Size([3, 64, 64]), 0)
    """

    def __init__(self, files: list, labels: Sequence[int] | None, transform: Callable,
                 max_pixels: int | None = MAX_PIXELS):
        self.files, self.transform, self.max_pixels = files, transform, max_pixels
        self.labels = list(labels) if labels is not None else [-1] * len(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, failure = self.decode(index)
        if failure is not None:
            print_failure(str(self.files[index]), failure)
        return image, self.labels[index]

    def decode(self, index: int) -> tuple[torch.Tensor, str | None]:
        """The transformed image and None, or a gray stand-in and why the file failed."""
        try:
            with pixel_limit(self.max_pixels):
                return self.transform(self.files[index]), None
        except Image.DecompressionBombError:
            reason = f"too large. {too_large_hint(self.max_pixels)}"
        except DECODE_ERRORS as err:
            text = str(err).strip() or type(err).__name__
            reason = f"corrupt or truncated ({text[:80]})"
        return self.transform(Image.new("RGB", (256, 256), (128, 128, 128))), reason


class ReportingFiles(ImageFiles):
    """ImageFiles whose items also carry the failure, ``(path, reason)`` or None, back from
    worker processes: ``(image, label, failure)``.

    Example:
        >>> from threeline.vision.data import ImageData, demo_path
        >>> from threeline.vision.transforms import Preprocess
        >>> files = sorted((demo_path() / "train" / "cats").iterdir())[:1]
        >>> image, label, failure = ReportingFiles(files, [0], Preprocess(size=64))[0]
        >>> image.shape, label, failure
        (torch.Size([3, 64, 64]), 0, None)
    """

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, tuple[str, str] | None]:
        image, failure = self.decode(index)
        report = None if failure is None else (str(self.files[index]), failure)
        return image, self.labels[index], report


def _collate(samples: list) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    images, labels, reports = zip(*samples, strict=True)
    failures = [r for r in reports if r is not None]
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), failures
