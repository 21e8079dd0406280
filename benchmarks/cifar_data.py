"""CIFAR-10 for the benchmark: the JPEG files read once, decoded in worker processes, split.

    python3 benchmarks/cifar.py --prepare /tmp/cifar10.npz     # pack the 50,000 JPEGs
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch


def _decode(blobs: list[bytes]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # torchvision's libjpeg instead (pixels may differ by a grey level)
        from torchvision.io import ImageReadMode, decode_jpeg

        return np.stack([decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8),
                                     mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
                         for b in blobs])
    out = []
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as im:
            out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)  # (n, 32, 32, 3) uint8


def decode_all(blobs: list[bytes], workers: int | None = None) -> np.ndarray:
    """JPEG bytes -> (N, H, W, 3) uint8, decoded with Pillow in worker processes."""
    workers = workers or min(16, os.cpu_count() or 1)
    chunks = [blobs[i:i + 2000] for i in range(0, len(blobs), 2000)]
    if workers == 1 or len(chunks) == 1:
        return np.concatenate([_decode(c) for c in chunks])
    with ProcessPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(_decode, chunks)))


def read_folder(root: Path, per_class: int | None = None) -> tuple[list[bytes], np.ndarray,
                                                                   list[str]]:
    """The JPEG bytes, labels and classes of ROOT/<class>/*.jpg (ROOT/train/<class> too)."""
    if (root / "train").is_dir():
        root = root / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"No class folders under {root}; expected {root}/<class>/*.jpg.")
    blobs, labels = [], []
    for index, name in enumerate(classes):
        files = sorted((root / name).glob("*.jpg"))[:per_class]
        blobs += [f.read_bytes() for f in files]
        labels += [index] * len(files)
    return blobs, np.asarray(labels, dtype=np.int64), classes


def prepare(out: Path, root: Path, per_class: int | None) -> None:
    """Pack the JPEG bytes, offsets, labels and classes into one .npz file."""
    blobs, labels, classes = read_folder(root, per_class)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    np.savez(out, jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
             labels=labels.astype(np.uint8), classes=np.asarray(classes))
    print(f"{out}: {len(blobs)} images, {out.stat().st_size / 2**20:.1f} MiB")


def load(source: Path, per_class: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 32, 32, 3) uint8 images, (N,) int64 labels and the classes, from a folder or .npz."""
    if source.suffix == ".npz":
        with np.load(source) as z:
            jpeg, offsets = z["jpeg"].tobytes(), z["offsets"]
            labels, classes = z["labels"].astype(np.int64), [str(c) for c in z["classes"]]
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class]
                               for c in range(len(classes))])
        blobs = [jpeg[offsets[i]:offsets[i + 1]] for i in keep]
        labels = labels[keep]
    elif source.is_dir():
        blobs, labels, classes = read_folder(source, per_class)
    else:
        raise FileNotFoundError(f"{source} is neither a folder of class folders nor a .npz made "
                                f"by --prepare.")
    return decode_all(blobs), labels, classes


def split(labels: np.ndarray, valid_pct: float = 0.1, seed: int = 42) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """Seeded per-class split: (train indices, valid indices); 500 per class of 5,000."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for c in np.unique(labels):
        items = rng.permutation(np.flatnonzero(labels == c))
        n_valid = round(len(items) * valid_pct)
        valid.append(items[:n_valid])
        train.append(items[n_valid:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))
