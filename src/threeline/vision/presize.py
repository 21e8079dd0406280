"""Decode once, keep uint8 pixels in memory: later epochs do no JPEG work.

Each image is decoded once and resized (keeping its aspect ratio) so that its shorter side is
``short`` pixels, a little more than the training size (the validation transform's resize, about
1.14 x size). A longer side beyond ``max_ratio`` x ``short`` is center-cropped to that bound, so
a panorama does not cost unbounded memory; an ordinary 4:3 or 3:2 photo keeps all its content and
nothing is ever squashed. Images of different shapes are padded into one batch tensor at batch
time and carry their true ``(height, width)`` with them, so augmentation only samples real pixels.

Memory: 3 x short x (up to max_ratio x short) bytes per image, e.g. 0.20-0.29 MB at size 224
(short 256). Beyond ``max_bytes`` in all (default: a quarter of the machine's memory, see
:func:`memory_budget`), the pixels go to an unlinked temporary file in the cache folder instead
(:class:`SpilledImages`) and each batch is read back from it: resident memory stays bounded,
and the operating system's page cache keeps the file fast while memory allows.

    cache = presize(files, labels, short=256)
    images, sizes, labels = cache.batch([0, 1, 2])  # (3, 3, H, W) uint8, (3, 2), (3,)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from threeline.progress import Progress
from threeline.vision import decode
from threeline.vision.files import ReportingFiles, _worker_init, by_value, default_workers
from threeline.vision.images import MAX_PIXELS, load_image
from threeline.vision.scan import print_failure
from threeline.vision.transforms import Box, resize_box

MAX_IN_MEMORY = 1 << 30  # bytes of decoded pixels a learner keeps in memory by default


def memory_budget() -> int:
    """The default ``max_bytes`` of the decode-once caches (all splits together): a quarter of
    physical memory, at most 1 GiB. Beyond it pixels go to a temporary file, which costs little:
    the operating system keeps what it can of that file in its page cache (reclaimable, not the
    process's resident memory), and a batch's reads from it take milliseconds.

    Example:
        >>> 0 < memory_budget() <= MAX_IN_MEMORY
        True
    """
    try:
        quarter = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (AttributeError, OSError, ValueError):
        quarter = MAX_IN_MEMORY
    return min(quarter, MAX_IN_MEMORY)


class SpilledImages:
    """uint8 images (3, h, w) kept in a temporary file; ``images[i]`` reads one back.

    The file is unlinked as soon as it is made (POSIX), so nothing is left behind, even after
    ``kill -9``.

    Example:
        >>> spilled = SpilledImages(Path(tempfile.gettempdir()))
        >>> spilled.append(torch.zeros(3, 4, 5, dtype=torch.uint8))
        >>> spilled[0].shape, len(spilled)
        (torch.Size([3, 4, 5]), 1)
    """

    def __init__(self, folder: Path, _file=None, _entries: list | None = None):
        if _file is None:
            folder.mkdir(parents=True, exist_ok=True)
            _file = tempfile.TemporaryFile(dir=folder, prefix="presized-")  # noqa: SIM115
        self._file = _file
        self._entries: list[tuple[int, tuple[int, int, int]]] = _entries or []  # offset, shape
        self._end = self._file.seek(0, os.SEEK_END)

    def append(self, image: torch.Tensor) -> None:
        data = image.cpu().contiguous().numpy().tobytes()
        self._file.seek(self._end)
        self._file.write(data)
        self._entries.append((self._end, tuple(image.shape)))
        self._end += len(data)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> torch.Tensor:
        offset, shape = self._entries[index]
        self._file.flush()
        data = os.pread(self._file.fileno(), shape[0] * shape[1] * shape[2], offset)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(shape)

    def select(self, keep: Sequence[int]) -> SpilledImages:
        """The images at ``keep``, in that order (the same file)."""
        return SpilledImages(Path(), self._file, [self._entries[i] for i in keep])


@dataclass
class Presized:
    """Decoded images (each uint8 (3, h, w), shorter side ``short``) and their labels."""

    images: list[torch.Tensor] | SpilledImages
    labels: torch.Tensor  # (N,) int64
    short: int
    failed: list[str] = field(default_factory=list)  # files left out: they failed to decode

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images padded to a common shape (B, 3, H, W) uint8, their sizes (B, 2), labels (B,).

        Example:
            >>> from threeline.vision.data import demo_path
            >>> files = sorted((demo_path() / "train" / "cats").iterdir())[:2]
            >>> images, sizes, labels = presize(files, [0, 0], short=64).batch([0, 1])
            >>> images.shape[:2], sizes.shape, int(sizes.min())
            (torch.Size([2, 3]), torch.Size([2, 2]), 64)
        """
        picked = [self.images[i] for i in index]
        sizes = torch.tensor([img.shape[1:] for img in picked], dtype=torch.int64)  # (B, 2)
        if all(img.shape == picked[0].shape for img in picked):
            return torch.stack(picked), sizes, self.labels[list(index)]  # nothing to pad
        height, width = (int(v) for v in sizes.max(0).values)
        out = picked[0].new_zeros(len(picked), 3, height, width)
        for slot, img in zip(out, picked, strict=False):
            slot[:, :img.shape[1], :img.shape[2]] = img
        return out, sizes, self.labels[list(index)]

    def center_crops(self, index: Sequence[int], size: int) -> torch.Tensor:
        """Center ``size`` x ``size`` crops (B, 3, size, size) uint8: the validation view.

        These are the same pixels as :class:`threeline.transforms.Preprocess` gives when
        ``short`` is its ``resize_to``.

        Example:
            >>> from threeline.vision.data import demo_path
            >>> files = sorted((demo_path() / "train" / "cats").iterdir())[:2]
            >>> presize(files, [0, 0], short=64).center_crops([0, 1], 56).shape
            torch.Size([2, 3, 56, 56])
        """
        out = []
        for i in index:
            img = self.images[i]  # (3, h, w)
            top, left = (img.shape[1] - size) // 2, (img.shape[2] - size) // 2
            out.append(img[:, top:top + size, left:left + size])
        return torch.stack(out)


class PresizeImage:
    """One file (or PIL image) -> uint8 (3, h, w) with min(h, w) == ``short``, aspect kept.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> path = next((demo_path("hymenoptera") / "train" / "ants").iterdir())
        >>> PresizeImage(short=100)(path).shape[1]
        100
    """

    def __init__(self, short: int, max_ratio: float = 1.5, interpolation: str = "bicubic"):
        if short < 8 or max_ratio < 1:
            raise ValueError(f"Need short >= 8 and max_ratio >= 1, got {short!r}, {max_ratio!r}.")
        self.short, self.max_ratio = int(short), float(max_ratio)
        self.interpolation = interpolation

    def __call__(self, source) -> torch.Tensor:
        image = load_image(source, min_size=self.short)
        return resize_box(image, presize_box(*image.size, self.short, self.max_ratio),
                          self.interpolation)


def presize_box(w: int, h: int, short: int, max_ratio: float = 1.5) -> Box:
    """Shorter side to ``short`` (aspect kept); a longer side beyond ``max_ratio`` x ``short``
    center-cropped to that bound, with an even margin so that a later center crop lands where
    a direct one would.

    Example:
        >>> presize_box(1000, 300, short=100)
        Box(new_w=333, new_h=100, left=92, top=0, width=149, height=100)
    """
    scale = short / min(w, h)
    new_w, new_h = max(short, round(w * scale)), max(short, round(h * scale))
    bound = int(max_ratio * short)
    keep_w = new_w if new_w <= bound else bound - (new_w - bound) % 2
    keep_h = new_h if new_h <= bound else bound - (new_h - bound) % 2
    return Box(new_w, new_h, (new_w - keep_w) // 2, (new_h - keep_h) // 2, keep_w, keep_h)


def presize(items: Sequence, labels: Sequence[int] | None, short: int, max_ratio: float = 1.5,
            interpolation: str = "bicubic", num_workers: int | None = None,
            progress: bool = False, device: torch.device | None = None,
            max_pixels: int | None = MAX_PIXELS,
            on_failure: Callable[[str, str], None] | None = None,
            drop_failed: bool = False, max_bytes: int | None = None,
            spill_dir: Path | None = None) -> Presized:
    """Decode ``items`` once into an in-memory :class:`Presized`: on a CUDA ``device``, ordinary
    JPEGs with nvjpeg (:mod:`threeline.decode`); otherwise in parallel worker processes.

    nvjpeg's images stay in the GPU's memory when at most a quarter of its free memory holds
    them all (counting every image at the widest shape kept), so that training batches need no
    copy from the host; otherwise they are kept in host memory.

    ``on_failure(path, reason)`` is called in this process for a file that cannot be decoded
    (:meth:`threeline.ImageData.report_failure` lists it in ``data.skipped``); without
    ``on_failure`` one line is printed. With ``drop_failed`` such files are left out (their paths
    in ``failed``), so no picture stands in for them under their label; else a gray stand-in
    keeps the images in step with ``items``.

    When the images may take more than ``max_bytes`` (default :func:`memory_budget`), counting
    each at the widest shape kept, host images go to a temporary file in ``spill_dir``
    (default: the cache folder) instead of memory.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> files = sorted((demo_path() / "train" / "dogs").iterdir())[:4]
        >>> len(presize(files, [1] * 4, short=64))
        4
    """
    transform = PresizeImage(short, max_ratio, interpolation)
    dataset = ReportingFiles(list(items), labels, transform, max_pixels)
    failed: list[str] = []

    def report(path: str, reason: str) -> None:
        failed.append(path)
        (on_failure or print_failure)(path, reason)

    bound = len(items) * 3 * transform.short * int(transform.max_ratio * transform.short)
    on_gpu = _kept_on_gpu(items, device, bound)
    spill = not on_gpu and bound > (memory_budget() if max_bytes is None else max_bytes)
    images: list[torch.Tensor] | SpilledImages = []
    if spill:
        from threeline.saving import cache_dir

        images = SpilledImages(spill_dir or cache_dir() / "presized")
    with Progress(len(items), "decode images", unit="img", enabled=progress) as bar:
        for chunk in _decoded(dataset, transform, device, on_gpu, num_workers, report):
            for image in chunk:
                images.append(image)
            bar.update(len(chunk))
    labels = torch.tensor(dataset.labels, dtype=torch.int64)
    if drop_failed and failed:
        gone = set(failed)
        keep = [i for i, item in enumerate(dataset.files) if str(item) not in gone]
        images = images.select(keep) if spill else [images[i] for i in keep]
        labels = labels[keep]
    return Presized(images, labels, int(short), failed if drop_failed else [])


def _nvjpeg(items: Sequence, device: torch.device | None) -> bool:
    """True when ``items`` are decoded by nvjpeg on ``device`` (files, a CUDA device)."""
    return (device is not None and decode.available(device)
            and not any(isinstance(f, Image.Image) for f in items))


def _kept_on_gpu(items: Sequence, device: torch.device | None, bound: int) -> bool:
    """True when nvjpeg's images stay on the GPU: a quarter of its free memory holds them."""
    return _nvjpeg(items, device) and bound <= torch.cuda.mem_get_info(device)[0] // 4


def _decoded(dataset: ReportingFiles, transform: PresizeImage, device: torch.device | None,
             on_gpu: bool, num_workers: int | None, report: Callable[[str, str], None]
             ) -> Iterator[list[torch.Tensor]]:
    """The dataset's images, in order, in chunks (on the GPU when ``on_gpu``, else in this
    process's own memory); failures go to ``report``."""

    def checked(image: torch.Tensor, label: int, failure: tuple[str, str] | None
                ) -> torch.Tensor:
        if failure is not None:
            report(*failure)
        return image

    files = dataset.files
    if _nvjpeg(files, device):
        batches = decode.DecodeBatches(
            files, lambda w, h: presize_box(w, h, transform.short, transform.max_ratio),
            device, fallback=lambda i: checked(*dataset[i]),
            interpolation=transform.interpolation, max_pixels=dataset.max_pixels)
        for chunk in batches(batch_size=256):
            yield _packed(chunk, device if on_gpu else torch.device("cpu"))
        return
    workers = default_workers() if num_workers is None else num_workers
    workers = min(workers, max(0, len(files) // 32))
    loader = DataLoader(dataset, batch_size=16, num_workers=workers, collate_fn=by_value,
                        worker_init_fn=_worker_init)
    for chunk in loader:  # (image, label, failure) triples, in order
        yield [checked(torch.from_numpy(image), label, failure)
               for image, label, failure in chunk]


def _packed(images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The images as views of one block of memory on ``device`` (one copy, one allocation)."""
    flat = torch.cat([image.reshape(-1) for image in images]).to(device)
    sizes = [image.numel() for image in images]
    return [part.view(image.shape) for part, image in zip(flat.split(sizes), images, strict=True)]
