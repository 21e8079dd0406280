"""Decoding JPEG files on the GPU: nvjpeg, then resizing there, a batch at a time.

On a CUDA machine the network is fast enough that decoding in worker processes with Pillow
becomes the limit. Here the calling thread reads the files' bytes; nvjpeg decodes a whole batch on
the GPU, and the resize and crop (the same :class:`~threeline.transforms.Box` as the Pillow path,
antialiased like Pillow) run there too, one call per group of same-sized pictures.

Only ordinary JPEGs take this path: 1 or 3 channels, no EXIF rotation, no Adobe color transform,
ending with an end-of-image marker (so a truncated file is not decoded silently). Everything else
(PNG, rotated phone photos, CMYK, broken files) goes through ``fallback`` (Pillow, in threads),
which also reports files that cannot be decoded.

    batches = DecodeBatches(files, box=lambda w, h: center_crop_box(w, h, 297, 260),
                            device=torch.device("cuda"), fallback=pillow_decode)
    for images in batches(batch_size=256):  # a list of uint8 (3, 260, 260) tensors on the GPU
        ...

nvjpeg runs on a CUDA stream of its own. Its hardware decoder does not wait for work queued
on the stream it is given: on the caller's stream it wrote into memory that the previous batch's
forward pass had freed but was still using, and about one activation row in 200 came out NaN.

It also runs on the CPU (libjpeg-turbo through torchvision), which is how the tests check it
without a GPU, but there Pillow in worker processes is as fast and is what the learner uses.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from threeline.vision.images import MAX_PIXELS
from threeline.vision.jpeg import HEAD_BYTES, jpeg_info
from threeline.vision.transforms import Box, resize_pixels

BoxFor = Callable[[int, int], Box]  # (width, height) of a picture -> what to keep of it
_GROUP = 64  # pictures resized in one call, at most
_GROUP_PIXELS = 32_000_000  # and at most this many source pixels (a 384 MB float copy)
_DECODE_PIXELS = 256_000_000  # pixels decoded in one nvjpeg call (768 MB of uint8 RGB)


def available(device: torch.device) -> bool:
    """True when JPEGs can be decoded on ``device``: a CUDA device and torchvision's nvjpeg.

    Example:
        >>> available(torch.device("cpu"))
        False
    """
    if device.type != "cuda":
        return False
    return image_ops()


RGB = 3  # torchvision's ImageReadMode.RGB


def image_ops() -> bool:
    """Load torchvision's compiled image operators (``torch.ops.image``) from its package
    folder without running its Python modules, which import ``torchvision.ops`` and with it
    ``torch._dynamo`` (over five seconds on a fresh GPU machine); True when nvjpeg's batch
    decoder is there. A torchvision laid out otherwise is imported the usual way.

    Example:
        >>> image_ops() in (True, False)
        True
    """
    if not hasattr(torch.ops.image, "decode_jpeg"):
        spec = importlib.util.find_spec("torchvision")
        folder = Path(spec.submodule_search_locations[0]) if spec and \
            spec.submodule_search_locations else None
        libraries = [lib for pattern in ("_C*.so", "image*.so")  # _C first, as torchvision does
                     for lib in sorted(folder.glob(pattern))] if folder else []
        try:
            for lib in libraries:
                torch.ops.load_library(str(lib))
            if not libraries:
                import torchvision.io  # noqa: F401
        except (ImportError, OSError):
            return False
    return hasattr(torch.ops.image, "decode_jpegs_cuda")


def suited(data: bytes | bytearray, max_pixels: int | None = MAX_PIXELS) -> bool:
    """True when ``data`` (a whole file) is an ordinary JPEG that torch decodes exactly as
    Pillow would; False sends it to Pillow.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> suited(next((demo_path() / "train" / "cats").iterdir()).read_bytes())
        True
        >>> suited(b"GIF89a...")
        False
    """
    return _plain_pixels(data, max_pixels) is not None


def _plain_pixels(data: bytes | bytearray, max_pixels: int | None) -> int | None:
    """The picture's pixel count when :func:`suited`, else None."""
    info = jpeg_info(bytes(data[:HEAD_BYTES]))
    if info is None or not info.plain:
        return None
    pixels = info.width * info.height
    if max_pixels is not None and pixels > max_pixels:
        return None
    if not bytes(data[-32:]).rstrip(b"\x00\n\r ").endswith(b"\xff\xd9"):
        return None  # no end-of-image marker: truncated (Pillow says so)
    return pixels


class DecodeBatches:
    """Files -> lists of uint8 (3, h, w) tensors on ``device``, ``box`` applied, in order.

    Args:
        files: image files.
        box: what to keep of a (width, height) picture, e.g. a center crop.
        device: where to decode and resize.
        fallback: file index -> uint8 (3, h, w) CPU tensor with ``box`` applied, for the files
            this path does not take (called in threads; Pillow releases the interpreter lock).
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``, as in the Pillow path.
        threads: threads running ``fallback``.
    """

    def __init__(self, files: Sequence[str | Path], box: BoxFor, device: torch.device,
                 fallback: Callable[[int], torch.Tensor], interpolation: str = "bicubic",
                 max_pixels: int | None = MAX_PIXELS, threads: int = 8):
        self.files, self.box, self.device, self.fallback = list(files), box, device, fallback
        self.interpolation = interpolation
        self.max_pixels, self.threads = max_pixels, threads
        self.taken = 0  # files decoded by torch (the rest went to fallback)
        # nvjpeg's own stream: nothing else is ever queued on it (see the module's docstring)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, batch_size: int) -> Iterator[list[torch.Tensor]]:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="fallback") as pool:
            for start in range(0, len(self.files), batch_size):
                # read here, one file after another: threads reading small files fought over the
                # interpreter lock (see the README's "How it is fast"), and nvjpeg, which
                # retakes that lock often, waited on them
                stop = min(start + batch_size, len(self.files))
                yield self._batch(pool, [(i, _read_suited(self.files[i], self.max_pixels))
                                         for i in range(start, stop)])

    def _batch(self, pool: ThreadPoolExecutor,
               reads: list[tuple[int, tuple[bytearray, int] | None]]) -> list[torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        later = {i: pool.submit(self.fallback, i) for i, read in reads if read is None}
        for chunk in _chunks([(i, read) for i, read in reads if read is not None]):
            # full-size pictures live only while their chunk is resized
            decoded = _decode([torch.frombuffer(data, dtype=torch.uint8) for _, (data, _) in chunk],
                              self.device, self.stream)
            ok = [(i, image) for (i, _), image in zip(chunk, decoded, strict=True)
                  if image is not None]
            later |= {i: pool.submit(self.fallback, i)
                      for (i, _), image in zip(chunk, decoded, strict=True) if image is None}
            self.taken += len(ok)
            boxes = [self.box(int(image.shape[2]), int(image.shape[1])) for _, image in ok]
            resized = apply_boxes([im for _, im in ok], boxes, self.interpolation)
            for (i, _), image in zip(ok, resized, strict=True):
                out[i] = image
        for i, future in later.items():
            out[i] = future.result().to(self.device, non_blocking=True)
        return [out[i] for i, _ in reads]


def _read_suited(path: str | Path, max_pixels: int | None) -> tuple[bytearray, int] | None:
    """The file's bytes and pixel count when torch should decode it, else None (Pillow will)."""
    try:
        with open(path, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            if f.readinto(data) != len(data):
                return None
    except OSError:
        return None
    pixels = _plain_pixels(data, max_pixels)
    return None if pixels is None else (data, pixels)


def _chunks(reads: list) -> Iterator[list]:
    """Consecutive runs of ``(index, (bytes, pixels))`` of at most ``_DECODE_PIXELS`` pixels
    (at least one file each)."""
    chunk, pixels = [], 0
    for item in reads:
        if chunk and pixels + item[1][1] > _DECODE_PIXELS:
            yield chunk
            chunk, pixels = [], 0
        chunk.append(item)
        pixels += item[1][1]
    if chunk:
        yield chunk


def _decode(datas: list[torch.Tensor], device: torch.device,
            stream: torch.cuda.Stream | None = None) -> list[torch.Tensor | None]:
    """Decode to RGB uint8 (3, h, w) on ``device``: the whole list at once, or one by one when
    a file in it fails (None for the files that fail). With ``stream``, nvjpeg runs there and
    the pictures are handed over to the current stream."""
    if not datas:
        return []
    if stream is None:
        return _decode_all(datas, device)
    current = torch.cuda.current_stream(device)
    stream.synchronize()  # the last batch's decode is done with its scratch memory
    with torch.cuda.stream(stream):
        images = _decode_all(datas, device)
    current.wait_stream(stream)
    for image in images:
        if image is not None:  # its memory is not reused before the current stream is done
            image.record_stream(current)
    return images


def _decode_all(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """nvjpeg through torchvision's operator (what ``torchvision.io.decode_jpeg`` calls; its
    Python side is deprecated in torchvision 0.29 for TorchCodec, which has no batched GPU
    decoding yet); a batch that fails is decoded file by file, a failing file gives None.
    On a CPU, libjpeg-turbo one file at a time."""
    image_ops()
    if device.type != "cuda":
        def decode(datas: list[torch.Tensor], mode: int, device: torch.device) -> list:
            return [torch.ops.image.decode_jpeg(data, mode, False) for data in datas]
    else:
        decode = torch.ops.image.decode_jpegs_cuda
    try:
        return list(decode(datas, RGB, device))
    except RuntimeError:
        pass
    out: list[torch.Tensor | None] = []
    for data in datas:
        try:
            out.append(decode([data], RGB, device)[0])
        except RuntimeError:
            out.append(None)
    return out


def apply_boxes(images: list[torch.Tensor], boxes: list[Box],
                interpolation: str = "bicubic") -> list[torch.Tensor]:
    """Resize each uint8 (3, h, w) image to its box's size and cut the box's window out.

    Pictures of one shape and box are resized together, in groups of up to 64 (fewer for big
    pictures). Antialiased, like Pillow, when shrinking; rounded back to uint8.

    Example:
        >>> from threeline.vision.transforms import center_crop_box
        >>> image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
        >>> apply_boxes([image], [center_crop_box(400, 300, 256, 224)])[0].shape
        torch.Size([3, 224, 224])
    """
    groups: dict[tuple, list[int]] = {}
    for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
        groups.setdefault((tuple(image.shape), box), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(images)
    for (shape, box), members in groups.items():
        per = max(1, min(_GROUP, _GROUP_PIXELS // (shape[1] * shape[2])))
        for start in range(0, len(members), per):
            part = members[start:start + per]
            x = torch.stack([images[i] for i in part])  # (G, 3, h, w) uint8
            if (box.new_h, box.new_w) != shape[1:]:
                x = resize_pixels(x, box.new_h, box.new_w, interpolation)
            x = x[:, :, box.top:box.top + box.height, box.left:box.left + box.width]
            for j, i in enumerate(part):
                out[i] = x[j]
    return out  # type: ignore[return-value]


