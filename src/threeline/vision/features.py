"""Cached activations for ``precompute=True``: run the frozen backbone once, keep its outputs.

The cache key covers everything that changes the activations: the backbone and its weights, the
preprocessing (size, crop, interpolation, normalization) and the files (path, size, mtime). Any
change gives a new key, so a stale cache is never read. Files are written to a temporary name and
renamed into place, so a killed run never leaves a half-written cache behind.

Activations are kept in bfloat16, on disk and in memory, whatever the device: half the bytes of
float32 (5 KiB a photo for efficientnet_lite0's 2,560 values; a relative rounding error of at
most 2^-9 a value). Batches are converted to float32 for the head. Memory figures:
``benchmarks/results/memory-cpu-2core-*.md``.

A file that fails to decode during the pass over the images (a JPEG cut short inside its pixel
data, say, which the folder scan cannot tell) is left out: its row is dropped, the file leaves its
split and joins ``data.skipped``. The cache remembers which rows were left out and why, so a later
run from the same files leaves out the same ones without decoding anything.

:func:`ensure` fills a learner's activations, from the cache or by running its body once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from threeline.progress import Progress
from threeline.saving import atomic_write
from threeline.vision import batches
from threeline.vision.fold import folded

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionLearner

FORMAT_VERSION = 4  # 2: BatchNorm folded; 3: torch resizes; 4: bfloat16, files left out
STORED = torch.bfloat16  # the type activations are kept in


def files_fingerprint(files: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size, mtime in ns) per file: what makes a file's pixels what they are.

    Folders are resolved once each, not once per file (a tenth of the time on 12,000 files).

    Example:
        >>> from threeline.vision.data import demo_path
        >>> photo = sorted((demo_path() / "train" / "cats").iterdir())[0]
        >>> path, size, mtime = files_fingerprint([photo])[0]
        >>> path == str(photo.resolve()) and size == photo.stat().st_size
        True
    """
    folders: dict[str, str] = {}
    out = []
    for f in files:
        folder, name = os.path.split(os.fspath(f))
        if folder not in folders:
            folders[folder] = os.path.realpath(folder or ".")
        stat = os.stat(f)
        out.append((os.path.join(folders[folder], name), stat.st_size, stat.st_mtime_ns))
    return out


def cache_key(backbone: dict, files: Sequence[Path], labels: Sequence) -> str:
    """A hex digest of the backbone description, the files' fingerprints and their labels.

    Example:
        >>> len(cache_key({"arch": "x"}, [], []))
        64
    """
    payload = {
        "format": FORMAT_VERSION,
        "backbone": backbone,
        "files": files_fingerprint(files),
        "labels": [list(map(int, v)) if isinstance(v, (tuple, list)) else int(v)
                   for v in labels],  # class indices, or multi-hot rows
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(folder: Path, key: str) -> tuple[dict[str, torch.Tensor], dict[int, str]] | None:
    """The cached tensors for ``key`` and the rows left out (index in the file list -> why),
    or None when there are none (or they cannot be read)."""
    path = folder / f"{key}.safetensors"
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            left_out = json.loads((f.metadata() or {}).get("left_out", "{}"))
        return tensors, {int(i): str(why) for i, why in left_out.items()}
    except Exception:  # a foreign or damaged file: recompute rather than fail
        return None


def save(folder: Path, key: str, tensors: dict[str, torch.Tensor],
         left_out: dict[int, str] | None = None) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename. ``left_out``
    (row index in the file list -> why) goes into the file's metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.safetensors"
    tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
    metadata = {"left_out": json.dumps({str(i): why for i, why in (left_out or {}).items()})}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


MIRRORED = "train_mirrored"  # learn._cached key: the training images' activations, mirrored


def ensure(learn: VisionLearner, splits: Sequence[str]) -> None:
    """Read each split's activations from the cache; compute the missing ones in one pass
    of the body (one set of decoding workers for all of them), then cache them per split.
    Files that failed to decode leave their split (see the module's docstring).

    When ``learn.mirrors_training_images`` (a solved linear head), the training images are
    also run mirrored left to right, kept under :data:`MIRRORED`: twice the rows for the
    solve, at the cost of one more forward pass of the body over them and no more decoding.
    """
    folder, missing = learn.cache / "features", []
    for split in splits:
        mirror = split == "train" and learn.mirrors_training_images
        if split in learn._cached and (MIRRORED in learn._cached or not mirror):
            continue
        part = learn.data.split(split)
        key = cache_key(learn.backbone_description(), part.files, part.labels)
        found = load(folder, key)
        if found is None or (mirror and "mirrored" not in found[0]):
            missing.append((split, part, key, mirror))
            continue
        tensors, left_out = found
        _leave_out(learn, part, left_out)
        _keep(learn, split, tensors, mirror)
    if not missing:
        return
    names = "precompute " + " + ".join(s for s, *_ in missing)
    if all(batches.presize_key(learn, part.files) in learn._presized for _, part, *_ in missing):
        # already decoded into memory (fine_tune does that first): no decoding at all
        body = inference_body(learn)
        acts = [run_body(learn, part.files, names, body, range(len(part) if mirror else 0))
                for _, part, _, mirror in missing]
    else:  # one set of decoding workers for all the splits; each split a view, no copy
        sizes = [len(part) for _, part, *_ in missing]
        start, mirror_rows = 0, range(0)  # the training split's rows, when it is mirrored
        for size, (*_, mirror) in zip(sizes, missing, strict=True):
            mirror_rows = range(start, start + size) if mirror else mirror_rows
            start += size
        every = run_body(learn, [f for _, part, *_ in missing for f in part.files], names,
                         mirror=mirror_rows)
        acts = list(every.split(sizes, dim=1))
    for (split, part, key, mirror), views in zip(missing, acts, strict=True):  # (V, N, D)
        failed = {i: learn.data.skipped[f] for i, f in enumerate(part.files)
                  if f in learn.data.skipped}  # reported while decoding
        labels = torch.tensor(part.labels, dtype=torch.int64)
        if failed:
            kept = [i for i in range(len(part)) if i not in failed]
            views, labels = views[:, kept], labels[kept]  # (V, N', D), (N',)
        tensors = {"features": views[0], "labels": labels}
        if mirror:
            tensors["mirrored"] = views[1]
        save(folder, key, tensors, failed)
        _leave_out(learn, part, failed)
        _keep(learn, split, tensors, mirror)


def _keep(learn: VisionLearner, split: str, tensors: dict[str, torch.Tensor],
          mirror: bool) -> None:
    """Put a split's cached tensors on the learner's device (and its mirror when wanted)."""
    labels = tensors["labels"].to(learn.device)
    learn._cached[split] = (tensors["features"].to(learn.device), labels)
    if mirror:
        learn._cached[MIRRORED] = (tensors["mirrored"].to(learn.device), labels)


def _leave_out(learn: VisionLearner, part, failed: dict[int, str]) -> None:
    """Take the files at ``failed`` (index -> why) out of ``part`` and into ``data.skipped``."""
    if not failed:
        return
    paths = [part.files[i] for i in sorted(failed)]
    for i, path in zip(sorted(failed), paths, strict=True):
        learn.data.report_failure(str(path), failed[i])
    batches.leave_out(part, paths)


@torch.inference_mode()
def run_body(learn: VisionLearner, items: Sequence, desc: str,
             body: torch.nn.Module | None = None, mirror: range = range(0)) -> torch.Tensor:
    """Pooled activations (V, N, D) bfloat16 on the CPU, for files or PIL images: what CUDA's
    autocast computes them in; on a CPU each batch is rounded to it as it comes (the float32
    rows of the whole set are never held at once). V is 1, or 2 when ``mirror`` (a range of
    item indices) is not empty: then ``[1]`` holds those items mirrored left to right
    (decoded once, run twice), zeros elsewhere.

    The body runs with its BatchNorms folded into its convolutions (:mod:`threeline.fold`);
    ``body`` passes an :func:`inference_body` already made, so several passes share one.
    They gather on the device and come back in one copy at the end: a copy per batch would
    make the host wait for each forward pass instead of decoding the next batch meanwhile.
    """
    body = body if body is not None else inference_body(learn)
    views = 2 if len(mirror) else 1
    out: torch.Tensor | None = None
    start = 0
    with Progress(len(items), desc, unit="img", enabled=learn.progress) as bar:
        size = batches.inference_batch_size(learn)
        for images, _ in batches.image_batches(learn, items, None, False, batch_size=size):
            with learn.autocast():
                acts = body(images)  # (B, D)
                if out is None:
                    out = acts.new_zeros(views, len(items), acts.shape[1], dtype=STORED)
                out[0, start:start + len(acts)] = acts
                lo, hi = max(start, mirror.start), min(start + len(acts), mirror.stop)
                if lo < hi:  # (b, 3, H, W) mirrored -> (b, D)
                    out[1, lo:hi] = body(images[lo - start:hi - start].flip(-1))
            start += len(acts)
            bar.update(len(acts))
    if out is None:  # no items
        return torch.empty(views, 0, learn.body.out_features, dtype=STORED)
    return out.cpu()


def inference_body(learn: VisionLearner) -> torch.nn.Module:
    """An eval-mode copy of the learner's body with BatchNorm folded into the convolutions.

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
        >>> any(isinstance(m, torch.nn.BatchNorm2d) for m in inference_body(learn).modules())
        False
    """
    return folded(learn.body, example_input(learn))


def example_input(learn: VisionLearner) -> torch.Tensor:
    """One random image (1, 3, S, S) as the body takes it: to trace and check its layers."""
    size = learn.preprocess.size
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return example.to(learn.device).contiguous(memory_format=learn.memory_format)
