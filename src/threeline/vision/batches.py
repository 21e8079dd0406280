"""A learner's images as batches on its device: decoded once into memory, or per pass.

Three sources, in order of preference:

- the decode-once cache (:mod:`threeline.presize`) of the train or valid files, which training
  without precompute, ``fine_tune`` and ``tta`` fill and reuse every epoch;
- on CUDA, nvjpeg (:mod:`threeline.decode`) for files read once, such as precompute's pass;
- Pillow in worker processes (:meth:`threeline.ImageData.loader`) otherwise.

Every batch leaves here normalized, float32, (B, 3, S, S), in the learner's memory format.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import nn

from threeline import distributed
from threeline.vision import decode
from threeline.vision.files import ImageFiles
from threeline.vision.presize import Presized, memory_budget, presize
from threeline.vision.transforms import center_crop_box, normalize, to_device

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionLearner
    from threeline.vision.scan import Split


def inference_batch_size(learn: VisionLearner) -> int:
    """Images per forward pass without gradients: larger on CUDA; on a CPU, batches of
    up to 32 ran about twice as fast as 64 (cache-friendly activations).

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()),
        ...                            device="cpu")
        >>> inference_batch_size(learn)
        32
    """
    if learn.device.type == "cuda":
        return 4 * learn.data.batch_size
    return min(learn.data.batch_size, 32)


def image_batches(learn: VisionLearner, items: Sequence, labels: Sequence[int] | None,
                  shuffle: bool, transform=None, batch_size: int | None = None
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalized float image batches (B, 3, S, S) in ``memory_format``, labels (B,) (or
    multi-hot (B, L) for multi-label data), on the device: from the decode-once cache when
    ``items`` is a split's file list and either that cache exists or precompute is off; else
    decoded for this pass.

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> learn = Learner.pretrained("efficientnet_lite0",
        ...     ImageData.from_folder(demo_path(), size=64), progress=False)
        >>> files = learn.data.valid.files[:3]
        >>> [tuple(x.shape) for x, _ in image_batches(learn, files, None, shuffle=False)]
        [(3, 3, 64, 64)]
    """
    cuda = learn.device.type == "cuda"
    splits = (learn.data.train, learn.data.valid)
    split = next((s.files for s in splits if s.files is items), None)
    decoded = split is not None and presize_key(learn, items) in learn._presized
    if transform is None and split is not None and (decoded or not learn.precompute):
        cache = presized_cache(learn, items, labels)  # decoded once, reused every epoch
        bs = batch_size or learn.data.batch_size
        for start in range(0, len(cache), bs):
            index = range(start, min(start + bs, len(cache)))
            images = to_device(cache.center_crops(index, learn.preprocess.size), learn.device)
            yield model_input(learn, images), to_device(
                cache.labels[start:start + len(index)], learn.device)
        return
    if transform is None and not shuffle and _decodes_on_device(learn, items):
        yield from _device_decoded_batches(learn, items, labels, batch_size)
        return
    generator = torch.Generator().manual_seed(learn.seed + len(learn.history))
    loader = learn.data.loader(items, labels, transform or learn.preprocess, shuffle=shuffle,
                               pin_memory=cuda, generator=generator, batch_size=batch_size)
    for images, targets in loader:
        yield model_input(learn, to_device(images, learn.device)), to_device(targets, learn.device)


def _decodes_on_device(learn: VisionLearner, items: Sequence) -> bool:
    """JPEG files go to nvjpeg on a CUDA device (see :mod:`threeline.decode`)."""
    return decode.available(learn.device) and not any(
        isinstance(item, Image.Image) for item in items)


def _device_decoded_batches(learn: VisionLearner, files: Sequence, labels: Sequence[int] | None,
                            batch_size: int | None
                            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The validation view of ``files``, decoded and cropped on the device, in order."""
    p, data = learn.preprocess, learn.data
    pillow = ImageFiles(list(files), labels, p, data.max_pixels)

    def fallback(index: int) -> torch.Tensor:  # Pillow, reporting files that fail
        image, failure = pillow.decode(index)
        if failure is not None:
            data.report_failure(str(files[index]), failure)
        return image

    decoder = decode.DecodeBatches(
        files, lambda w, h: center_crop_box(w, h, p.resize_to, p.size), learn.device,
        fallback, p.interpolation, data.max_pixels)
    start, targets = 0, torch.tensor(pillow.labels, dtype=torch.int64)
    for images in decoder(batch_size or data.batch_size):
        batch = torch.stack(images)  # (B, 3, S, S) uint8 on the device
        yield (model_input(learn, batch),
               to_device(targets[start:start + len(images)], learn.device))
        start += len(images)


def presize_key(learn: VisionLearner, items: Sequence) -> tuple:
    """What a decode-once cache depends on: the files, the size and the interpolation."""
    return (tuple(map(str, items)), learn.preprocess.resize_to, learn.preprocess.interpolation)


def presized_cache(learn: VisionLearner, items: Sequence, labels: Sequence[int] | None) -> Presized:
    """The decode-once uint8 cache of ``items`` (train or valid files), built on first use.

    The splits' caches together keep at most ``learn.presize_max_bytes`` in memory (default
    :func:`threeline.vision.presize.memory_budget`: a quarter of the machine's memory, at most
    1 GiB); a split that would go beyond it is kept in a temporary file instead
    (``presize.SpilledImages``).

    Files that fail to decode are left out: of the cache, and of their split (``data.train``
    or ``data.valid``, changed in place), so no gray picture trains or validates under a
    label; ``data.skipped`` lists them.
    """
    p, key = learn.preprocess, presize_key(learn, items)
    if key not in learn._presized:
        split = next((s for s in (learn.data.train, learn.data.valid) if s.files is items), None)
        cache = presize(items, labels, short=p.resize_to, interpolation=p.interpolation,
                        num_workers=learn.data.num_workers, progress=learn.progress,
                        device=learn.device, max_pixels=learn.data.max_pixels,
                        on_failure=learn.data.report_failure, drop_failed=split is not None,
                        max_bytes=_budget_left(learn),
                        spill_dir=learn.cache / "presized")
        if cache.failed:
            leave_out(split, [Path(f) for f in cache.failed])  # ``items``: now shorter
            key = presize_key(learn, items)
        learn._presized[key] = cache
    return learn._presized[key]


def _budget_left(learn: VisionLearner) -> int:
    """Bytes of ``presize_max_bytes`` that the caches already held in host memory leave."""
    budget = getattr(learn, "presize_max_bytes", None)
    held = sum(image.numel() for cache in learn._presized.values()
               if isinstance(cache.images, list) for image in cache.images
               if image.device.type == "cpu")
    return max(0, (memory_budget() if budget is None else budget) - held)


def leave_out(split: Split, paths: Sequence[Path]) -> None:
    """Take files that failed to decode out of ``split`` (in place), with one line."""
    split.drop(paths)
    print(f"Left out {len(paths)} file(s) that failed to decode; {len(split)} remain in that "
          f"split.", file=sys.stderr, flush=True)


def model_input(learn: VisionLearner, images: torch.Tensor) -> torch.Tensor:
    """uint8, or float in [0, 1], (B, 3, S, S) on the device -> normalized, in
    ``memory_format``.

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
        >>> float(model_input(learn, torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)).max())
        1.0
    """
    images = normalize(images, learn.preprocess.mean, learn.preprocess.std)
    return images.contiguous(memory_format=learn.memory_format)


def train_batches(learn: VisionLearner) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled training batches: cached activations (B, D) with precompute, else
    images (B, 3, S, S) from the decode-once cache, augmented on the device when set.

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> learn = Learner.pretrained("efficientnet_lite0",
        ...     ImageData.from_folder(demo_path(), size=64, batch_size=16), progress=False)
        >>> xb, yb = next(train_batches(learn))
        >>> tuple(xb.shape), tuple(yb.shape)
        ((16, 3, 64, 64), (16,))
    """
    if not learn.precompute:  # images from the decode-once cache, augmented on the device
        cache = presized_cache(learn, learn.data.train.files, learn.data.train.labels)
        generator = torch.Generator().manual_seed(learn.seed + learn.epoch)
        order = torch.randperm(len(cache), generator=generator).tolist()  # same in every process
        if learn.world.rank:  # each process augments its own batches differently
            seed = learn.seed + learn.epoch + 7_919 * learn.world.rank
            generator = torch.Generator().manual_seed(seed)
        bs, size = learn.data.batch_size, learn.preprocess.size
        whole = len(order) if learn.world.size == 1 else len(order) - bs + 1  # several: full only
        for start in distributed.share(range(0, whole, bs), learn.world):
            index = order[start:start + bs]
            if len(index) < 2 and start > 0:  # BatchNorm cannot train on a single image
                break
            if learn.augment is None:
                images = to_device(cache.center_crops(index, size), learn.device)  # uint8
            else:
                padded, sizes, _ = cache.batch(index)  # (B, 3, H, W) uint8, (B, 2)
                images = learn.augment(to_device(padded, learn.device), sizes, size, generator)
            yield model_input(learn, images), to_device(cache.labels[index], learn.device)
        return
    x, y = learn.features("train", dtype=None)  # (N, D) bfloat16, (N,)
    generator = torch.Generator(device=learn.device).manual_seed(learn.seed + learn.epoch)
    order = torch.randperm(len(x), device=learn.device, generator=generator)
    bs = learn.data.batch_size
    for start in distributed.share(range(0, len(x) - bs + 1 if len(x) > bs else 1, bs),
                                   learn.world):
        idx = order[start:start + bs]
        yield x[idx].float(), y[idx]


def feature_batches(learn: VisionLearner, split: str, rows: int = 8192
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The cached activations of ``split`` in order, (rows, D) float32 at a time, and labels:
    the validation pass of the head, without a float32 copy of the whole set."""
    x, y = learn.features(split, dtype=None)  # (N, D) bfloat16, (N,)
    for start in range(0, len(x), rows):
        yield x[start:start + rows].float(), y[start:start + rows]


def step_parts(learn: VisionLearner, module: nn.Module, x) -> int:
    """How many forward and backward passes a training step on the image batch ``x`` (B, 3,
    S, S) takes: one, unless the activations its backward pass keeps would pass
    ``learn.step_memory`` bytes; then the least number of parts (of two images at least) that
    stay within it.

    Only while no BatchNorm of the body trains (the default), on one process: then the parts'
    gradients add up to the batch's. The head's BatchNorm normalizes each part by its own
    statistics.
    """
    budget = learn.step_memory
    if (budget is None or not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) < 4
            or learn.world.size > 1 or any(norm.training for norm in learn._body_norms)):
        return 1
    if learn._step_bytes is None:  # measured once a fit
        learn._step_bytes = saved_bytes_per_image(learn, module, x)
    most = max(2, budget // max(1, learn._step_bytes))  # images a pass
    return min(-(-len(x) // most), len(x) // 2)


def saved_bytes_per_image(learn: VisionLearner, module: nn.Module, x: torch.Tensor) -> int:
    """Bytes that autograd keeps per image of ``x`` for ``module``'s backward pass: those of a
    forward pass of two images less those of one (the weights' cancel out). Run in eval mode:
    no dropout draws a number, no BatchNorm statistic moves.

    Example:
        >>> from threeline import ImageData, Learner, demo_path
        >>> learn = Learner.pretrained("efficientnet_lite0",
        ...     ImageData.from_folder(demo_path(), size=64), device="cpu", progress=False)
        >>> learn.unfreeze()
        >>> x = torch.zeros(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
        >>> saved_bytes_per_image(learn, learn.trainable(), x) > 64 * 64 * 3 * 4
        True
    """

    def saved(images: torch.Tensor) -> int:
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with (torch.enable_grad(), learn.autocast(module),
              torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)):
            learn.forward(module, images)
        return sum(storages.values())

    module.eval()
    try:
        return max(0, saved(x[:2]) - saved(x[:1]))
    finally:
        learn.set_train_mode(module)


def accumulated_step(learn: VisionLearner, x: torch.Tensor, y: torch.Tensor,
                     parts: int) -> torch.Tensor:
    """One optimizer step on the batch ``x`` (B, 3, S, S), ``y`` (B,) run as ``parts`` forward
    and backward passes whose gradients add up (the loss averages over the batch, so each
    part's counts by its share of the images); returns the batch's loss on the device.
    Only one part's activations are held at a time."""
    module = learn._fit_module
    learn.opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=learn.device)
    for part_x, part_y in zip(x.tensor_split(parts), y.tensor_split(parts), strict=True):
        with learn.autocast(module):
            out = learn.forward(learn._step_module, part_x)
        loss = learn.loss(out, part_y) * (len(part_x) / len(x))
        loss.backward()
        total += loss.detach()
    if learn.clip:
        nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], learn.clip)
    learn.opt.step()
    return total
