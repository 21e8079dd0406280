"""JPEG headers read without Pillow, and decoding with torch (nvjpeg on a GPU), checked against
Pillow on real photos and on the odd-file corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from threeline.vision import decode
from threeline.vision.images import probe_image, quick_header
from threeline.vision.jpeg import HEAD_BYTES, jpeg_info
from threeline.vision.presize import Presized, PresizeImage, presize, presize_box
from threeline.vision.transforms import Preprocess, center_crop_box


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_quick_header_agrees_with_pillow_or_defers(corpus, hymenoptera_demo):
    photos = [p for p in _all_files(hymenoptera_demo) if p.suffix == ".jpg"]
    assert len(photos) > 50
    assert all(quick_header(p) == probe_image(p) for p in photos)  # ordinary JPEGs: no Pillow
    deferred = set()
    for path in _all_files(corpus):
        quick = quick_header(path)
        if quick is None:
            deferred.add(path.name)
            continue
        assert quick == probe_image(path), path
    # Pillow is asked about everything that is not an ordinary, complete-headed JPEG
    assert {"palette.png", "anim.gif", "photo.webp", "text.jpg", "empty.jpg"} <= deferred
    assert "rotated.jpg" not in deferred and quick_header(corpus / "train/cats/rotated.jpg") == (
        200, 120)  # stored 120 wide and 200 high, displayed turned a quarter


def test_jpeg_info_reads_channels_rotation_and_coding(corpus):
    cats = corpus / "train" / "cats"

    def info(name):
        return jpeg_info((cats / name).read_bytes()[:HEAD_BYTES])

    assert info("gray.jpg").channels == 1 and info("gray.jpg").plain
    assert info("cmyk.jpg").channels == 4 and not info("cmyk.jpg").plain
    assert info("rotated.jpg").orientation == 6 and not info("rotated.jpg").plain
    assert info("large.jpg").upright_size == (4000, 3000)
    assert jpeg_info((cats / "palette.png").read_bytes()) is None


def test_only_ordinary_complete_jpegs_are_suited(corpus):
    dogs, cats = corpus / "train" / "dogs", corpus / "train" / "cats"
    assert decode.suited((cats / "gray.jpg").read_bytes())
    for name in ("cmyk.jpg", "rotated.jpg", "palette.png"):
        assert not decode.suited((cats / name).read_bytes()), name
    assert not decode.suited((dogs / "truncated.jpg").read_bytes())  # no end-of-image marker
    assert not decode.suited((cats / "large.jpg").read_bytes(), max_pixels=1_000_000)


@pytest.mark.parametrize("view", ["center_crop", "presize"])
def test_torch_decoding_matches_pillow(corpus, view):
    """The path CUDA takes, run on the CPU: same shapes, pixels within rounding of Pillow."""
    cats = corpus / "train" / "cats"
    files = sorted(p for p in cats.rglob("*") if p.is_file())
    if view == "center_crop":
        pillow = Preprocess(size=96)

        def box(w, h):
            return center_crop_box(w, h, pillow.resize_to, pillow.size)
    else:
        pillow = PresizeImage(short=80)

        def box(w, h):
            return presize_box(w, h, 80)
    called = []

    def fallback(index: int) -> torch.Tensor:
        called.append(files[index].name)
        return pillow(files[index])

    batches = decode.DecodeBatches(files, box, torch.device("cpu"), fallback, threads=2)
    images = [image for chunk in batches(batch_size=5) for image in chunk]
    assert len(images) == len(files)
    assert batches.taken == len(files) - len(called) >= 12
    assert {"rotated.jpg", "cmyk.jpg", "palette.png", "anim.gif"} <= set(called)
    for path, image in zip(files, images, strict=True):
        if path.name in called:  # the fallback's picture is Pillow's own
            continue
        reference = pillow(path)
        assert image.dtype == torch.uint8 and image.shape == reference.shape, path.name
        # different JPEG decoders and resize kernels: a level or two apart, no more
        assert (image.float() - reference.float()).abs().mean() < 2.0, path.name


def test_broken_jpegs_go_to_the_fallback(corpus):
    dogs = corpus / "train" / "dogs"
    files = [p for p in sorted(dogs.glob("*.jpg")) if not p.is_symlink() and p.name[0] != "."]
    called = []
    pillow = Preprocess(size=64)

    def fallback(index: int) -> torch.Tensor:
        called.append(files[index].name)
        return torch.full((3, 64, 64), 128, dtype=torch.uint8)

    box = lambda w, h: center_crop_box(w, h, pillow.resize_to, 64)  # noqa: E731
    batches = decode.DecodeBatches(files, box, torch.device("cpu"), fallback)
    images = [image for chunk in batches(batch_size=64) for image in chunk]
    assert sorted(called) == ["empty.jpg", "header_only.jpg", "text.jpg", "truncated.jpg"]
    assert all(image.shape == (3, 64, 64) for image in images)


def test_apply_boxes_groups_and_crops():
    a = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 50, 20), dtype=torch.uint8)
    boxes = [center_crop_box(40, 30, 30, 24), center_crop_box(20, 50, 30, 24)]
    out = decode.apply_boxes([a, b, a], boxes + boxes[:1])
    assert [tuple(x.shape) for x in out] == [(3, 24, 24)] * 3
    assert torch.equal(out[0], out[2])
    assert torch.equal(out[0], a[:, 3:27, 8:32])  # already the right size: only cropped
    # two same-shaped pictures resized in one group come out as each resized alone
    c = torch.randint(0, 256, (3, 50, 20), dtype=torch.uint8)
    together = decode.apply_boxes([b, c], [boxes[1]] * 2)
    for image, out_one in zip((b, c), together, strict=True):
        assert torch.equal(out_one, decode.apply_boxes([image], [boxes[1]])[0])
    assert not torch.equal(together[0], together[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvjpeg)")
def test_nvjpeg_matches_pillow_on_the_gpu(hymenoptera_demo):
    """nvjpeg and libjpeg-turbo (Pillow) upsample colour differently, so pixels differ a little:
    on an H100 the mean absolute difference per photo had a median of 0.96 grey levels and a
    maximum of 3.6 over these photos (benchmarks/results/lesson1-nvidia-h100-2026-11-27.md);
    the bounds below leave room above those."""
    files = [p for p in _all_files(hymenoptera_demo) if p.suffix == ".jpg"]
    pillow = Preprocess(size=224)
    device = torch.device("cuda")
    assert decode.available(device)
    box = lambda w, h: center_crop_box(w, h, pillow.resize_to, 224)  # noqa: E731
    batches = decode.DecodeBatches(files, box, device, lambda i: pillow(files[i]))
    images = [image for chunk in batches(batch_size=32) for image in chunk]
    assert batches.taken == len(files)
    diffs = []
    for path, image in zip(files, images, strict=True):
        assert image.device.type == "cuda" and image.shape == (3, 224, 224)
        diffs.append((image.cpu().float() - pillow(path).float()).abs().mean().item())
    assert float(np.median(diffs)) < 1.5 and max(diffs) < 6.0, (np.median(diffs), max(diffs))


def test_memory_bounds_do_not_change_the_pictures(corpus, monkeypatch):
    """Decoding in pixel-bounded chunks and resizing in pixel-bounded groups (what keeps a folder
    of 12-megapixel photos from filling the GPU) gives the very same pixels."""
    cats = corpus / "train" / "cats"
    files = sorted(cats.glob("*.jpg"))  # includes a 12-megapixel photo
    pillow = Preprocess(size=64)

    def decode_all() -> list[torch.Tensor]:
        box = lambda w, h: center_crop_box(w, h, pillow.resize_to, 64)  # noqa: E731
        batches = decode.DecodeBatches(files, box, torch.device("cpu"),
                                       lambda i: pillow(files[i]), threads=2)
        return [image for chunk in batches(batch_size=8) for image in chunk]

    roomy = decode_all()
    monkeypatch.setattr(decode, "_DECODE_PIXELS", 100_000)  # about two demo photos per call
    monkeypatch.setattr(decode, "_GROUP_PIXELS", 50_000)  # one photo per resize
    tight = decode_all()
    assert len(roomy) == len(tight) == len(files)
    assert all(torch.equal(a, b) for a, b in zip(roomy, tight, strict=True))


def corrupted_decodes(decoder: decode.DecodeBatches, trials: int = 20) -> int:
    """Decode ``decoder.files`` ``trials`` times, each time right after freeing blocks of the
    pictures' sizes that kernels queued on the current stream still have to fill and read.
    Counts the trials where a queued read or a picture came out wrong (0 when the decoder keeps
    to memory nobody else uses)."""
    device = decoder.device
    reference = [image.clone() for chunk in decoder(len(decoder.files)) for image in chunk]
    torch.cuda.synchronize(device)
    infos = [jpeg_info(Path(p).read_bytes()) for p in decoder.files]
    sizes = [3 * info.width * info.height for info in infos]  # bytes of each decoded picture
    heavy = torch.randn(4096, 4096, device=device)
    wrong = 0
    for _ in range(trials):
        x = heavy
        for _ in range(8):  # some 50 ms of work queued on the current stream
            x = torch.tanh(x @ heavy)
        victims = [torch.full((n // 4,), 1.0, device=device) + 0 * x[0, 0] for n in sizes]
        sums = [v.sum() for v in victims]  # (), queued behind the work above
        del victims  # freed, but their blocks are still in use by the queued sums
        images = [image for chunk in decoder(len(decoder.files)) for image in chunk]
        torch.cuda.synchronize(device)
        bad_sums = any(float(s) != n // 4 for s, n in zip(sums, sizes, strict=True))
        bad_images = any(not torch.equal(a, b) for a, b in zip(images, reference, strict=True))
        wrong += bad_sums or bad_images
    return wrong


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvjpeg)")
def test_gpu_decoding_never_writes_into_memory_still_in_use(dogscats_demo):
    """nvjpeg's hardware decoder ignores work queued on its stream; on the caller's stream it
    overwrote activations the last forward pass was still using (NaN rows in the cache)."""
    files = sorted((dogscats_demo / "train" / "cats").glob("*.jpg"))[:16]
    box = lambda w, h: center_crop_box(w, h, 256, 224)  # noqa: E731
    decoder = decode.DecodeBatches(files, box, torch.device("cuda"), lambda i: None)
    assert corrupted_decodes(decoder) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvjpeg)")
def test_presized_images_stay_on_the_gpu_and_batch_there(hymenoptera_demo):
    """Decoded once by nvjpeg, the images stay in the GPU's memory (they fit easily here);
    batches of equal and of mixed shapes are made there, padded like host memory's."""
    files = [p for p in _all_files(hymenoptera_demo) if p.suffix == ".jpg"][:24]
    labels = [0] * len(files)
    on_gpu = presize(files, labels, short=64, device=torch.device("cuda"))
    assert all(image.is_cuda for image in on_gpu.images)
    shapes = {tuple(image.shape) for image in on_gpu.images}
    assert len(shapes) > 1  # mixed shapes: padded
    padded, sizes, _ = on_gpu.batch(range(len(files)))
    assert padded.is_cuda and padded.shape[0] == len(files)
    on_host = Presized([image.cpu() for image in on_gpu.images], on_gpu.labels, 64)
    host_padded, host_sizes, _ = on_host.batch(range(len(files)))
    assert torch.equal(padded.cpu(), host_padded) and torch.equal(sizes, host_sizes)
    same = [i for i, image in enumerate(on_gpu.images) if image.shape == on_gpu.images[0].shape]
    assert torch.equal(on_gpu.batch(same)[0].cpu(), on_host.batch(same)[0])
