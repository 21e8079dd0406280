"""Image folders decoded once into uint8 squares, channels as in the files: the pixels that
:class:`threeline.vision.resident.ResidentImages` keeps on the device.

Each image's shorter side is resized to ``size`` (antialiased bicubic, by torch) and the center
``size`` x ``size`` square kept; an image already that size is not resampled. Grayscale files
(modes L, LA, I, I;16, 1, F) keep one channel; when every file is grayscale the images are
(N, size, size, 1), otherwise every image has 3 channels. Decoding runs in worker processes, as
:mod:`threeline.vision.presize` does; files that fail to decode are left out and listed in
``data.skipped``.

    data = ImageData.from_folder("mnist")          # size None: the images' own size
    learn = Learner(resnet(18, 10, small_input=True, in_channels=data.channels), data)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from threeline.progress import Progress
from threeline.vision.files import ReportingFiles, _worker_init, by_value, default_workers
from threeline.vision.images import MAX_PIXELS, load_image
from threeline.vision.presize import memory_budget
from threeline.vision.resident import ResidentImages, check_fits, resident_bytes
from threeline.vision.transforms import center_crop_box, resize_box

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionData

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class SquareImage:
    """One file (or PIL image) -> uint8 (C, size, size): C is 1 for a grayscale file, else 3.

    Example:
        >>> SquareImage(32)(Image.new("L", (40, 30))).shape
        torch.Size([1, 32, 32])
    """

    def __init__(self, size: int, interpolation: str = "bicubic"):
        self.size, self.interpolation = int(size), interpolation

    def __call__(self, source) -> torch.Tensor:
        if isinstance(source, Image.Image):
            return self.square(source)
        with Image.open(source) as image:
            if image.format == "JPEG":  # decode a large JPEG at a reduced scale
                image.draft(image.mode, (self.size, self.size))
            image.load()
            return self.square(image)

    def square(self, image: Image.Image) -> torch.Tensor:
        gray = image.mode in GRAY_MODES
        rgb = load_image(image)  # upright RGB: EXIF turned, alpha on white, 16 bits to 8
        box = center_crop_box(*rgb.size, self.size, self.size)
        x = resize_box(rgb, box, self.interpolation)  # (3, S, S), not resampled at size S
        return x[:1].clone() if gray else x


def decode_squares(files: Sequence, labels: Sequence[int], size: int, pad: int = 0,
                   num_workers: int | None = None, max_pixels: int | None = MAX_PIXELS,
                   on_failure: Callable[[str, str], None] | None = None,
                   max_bytes: int | None = None, progress: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N, size, size, C) uint8, labels (N,) int64, and the files left out (failed).

    Refuses (:class:`threeline.vision.resident.TooLargeError`) as soon as the images, with a
    ``pad``-pixel border, are known to need more than ``max_bytes`` (default: a quarter of the
    memory), before decoding when even one channel would not fit.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> files = sorted((demo_path() / "train" / "cats").iterdir())[:2]
        >>> images, labels, failed = decode_squares(files, [0, 0], 32, num_workers=0)
        >>> tuple(images.shape), labels.tolist(), failed
        ((2, 32, 32, 3), [0, 0], [])
    """
    budget = memory_budget() if max_bytes is None else max_bytes

    def projected(channels: int) -> int:  # every image kept, with its border
        return resident_bytes(len(files), size, size, channels, pad)

    check_fits(projected(1), budget, "memory")
    dataset = ReportingFiles(list(files), labels, SquareImage(size), max_pixels)
    workers = default_workers() if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size=64, num_workers=min(workers, len(files) // 128),
                        collate_fn=by_value, worker_init_fn=_worker_init)
    images: list[torch.Tensor] = []  # each (C, S, S)
    kept: list[int] = []
    failed: list[str] = []
    channels = 1
    with Progress(len(files), "decode images", unit="img", enabled=progress) as bar:
        for chunk in loader:  # (image, label, failure) triples, in order
            for image, label, failure in chunk:
                if failure is not None:
                    failed.append(failure[0])
                    if on_failure is not None:
                        on_failure(*failure)
                    continue
                images.append(torch.from_numpy(image))
                kept.append(label)
                channels = max(channels, image.shape[0])
            check_fits(projected(channels), budget, "memory")
            bar.update(len(chunk))
    return _stacked(images, channels, size), torch.tensor(kept, dtype=torch.int64), failed


def _stacked(images: list[torch.Tensor], channels: int, size: int) -> torch.Tensor:
    """(C, S, S) images -> one (N, S, S, channels) uint8 tensor; gray ones repeated to RGB
    when ``channels`` is 3."""
    out = torch.empty(len(images), size, size, channels, dtype=torch.uint8)
    for slot, image in zip(out, images, strict=True):
        slot.copy_(image.permute(1, 2, 0).expand(size, size, channels))
    return out


def data_size(data: VisionData) -> int:
    """The size to train at: ``data.size``, else the median image's shorter side."""
    if data.size is not None:
        return int(data.size)
    median = data.image_sizes.get("median")
    if median is None:
        raise ValueError("The image size is unknown: pass one, e.g. "
                         "ImageData.from_folder(path, size=32).")
    return int(min(median))


def on_device(data: VisionData, augment: bool = True, flip: bool = True, pad: int | None = None,
              max_bytes: int | None = None) -> ResidentImages:
    """``data``'s images decoded once (kept on ``data``) as :class:`ResidentImages` with these
    settings; ``pad`` None: an eighth of the size (4 pixels at 32)."""
    if data.multi_label:
        raise NotImplementedError(
            "Multi-label images (several tags an image) do not train from random weights yet: "
            "ImageData batches for Learner(model, data) need one class an image. Train a "
            "pretrained body instead: Learner.pretrained('efficientnet_lite0', data).")
    size = data_size(data)
    pad = size // 8 if pad is None else pad
    if data._resident is None or data._resident.size != (size, size):
        data._resident = _decoded(data, size, pad, max_bytes)
    return data._resident.options(batch_size=data.batch_size, pad=pad, flip=flip,
                                  augment=augment, max_bytes=max_bytes)


def input_batches(data: VisionData, files: Sequence, device: torch.device
                  ) -> Iterator[tuple[torch.Tensor, None]]:
    """Image files (or PIL images) decoded like ``data``'s training images (same square size,
    same channels) and normalised by the same statistics, in batches without targets."""
    resident = on_device(data)
    square = SquareImage(resident.size[0])
    images = []
    for source in files:
        x = square(source)  # (1 or 3, S, S)
        if x.shape[0] == 3 and resident.channels == 1:  # a colour file for a gray model
            gray = Image.fromarray(x.permute(1, 2, 0).numpy()).convert("L")  # PIL's luminance
            x = torch.from_numpy(np.array(gray)).unsqueeze(0)  # (1, S, S)
        images.append(x)
    stacked = _stacked(images, resident.channels, resident.size[0])  # (N, S, S, C)
    return resident.input_batches(stacked, device)


def _decoded(data: VisionData, size: int, pad: int, max_bytes: int | None) -> ResidentImages:
    """Both splits decoded into one ResidentImages; failed files leave ``data``'s splits."""
    files = [*data.train.files, *data.valid.files]
    labels = [*data.train.labels, *data.valid.labels]
    images, kept, failed = decode_squares(
        files, labels, size, pad, data.num_workers, data.max_pixels, data.report_failure,
        max_bytes, progress=len(files) >= 5000)
    data.train.drop(failed)
    data.valid.drop(failed)
    n_train = len(data.train)
    return ResidentImages(images, kept, torch.arange(n_train),
                          torch.arange(n_train, len(kept)), data.batch_size, pad=pad)
