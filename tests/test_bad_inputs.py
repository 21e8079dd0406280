"""Any folder a user throws at it: odd formats are read right, bad files skipped, bad layouts
refused before training. Every file here is made from the real demo photos."""

from __future__ import annotations

import math
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from threeline import ImageData, Learner
from threeline.vision import batches
from threeline.vision.images import BadImageError, load_image, probe_image

# Files that must be read, and what each tests.
GOOD = {
    "gray.jpg": "grayscale JPEG",
    "palette.png": "palette PNG",
    "alpha.png": "RGBA PNG, left half transparent",
    "cmyk.jpg": "CMYK JPEG",
    "gray16.png": "16-bit grayscale PNG",
    "rgb16.png": "16-bit RGB PNG",
    "anim.gif": "GIF",
    "photo.webp": "WebP",
    "photo.bmp": "BMP",
    "rotated.jpg": "phone photo stored sideways with EXIF orientation 6",
    "large.jpg": "12-megapixel JPEG",
    "sub folder/deeper/été 猫 1.jpg": "unicode and spaces, nested two folders down",
}
# Files that must be skipped at from_folder time, with a word of their reason.
SKIPPED = {
    "empty.jpg": "empty",
    "text.jpg": "not a readable image",
    "garbled.png": "not a readable image",
    "notes.txt": "not an image file",
    "bomb.png": "too large",
    "gone.jpg": "broken link",
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "header_only.jpg": "truncated",
}
IGNORED = [".DS_Store", "Thumbs.db", "._cat.jpg"]
# A complete-looking PNG (header and end fine) whose pixel data is scrambled: it fails only
# when decoded.
SCRAMBLED = ["scrambled.png"]


def _photo(demo: Path, cls: str, i: int) -> Image.Image:
    return Image.open(sorted((demo / "train" / cls).iterdir())[i]).convert("RGB")


def _png16(path: Path, rgb: np.ndarray) -> None:
    """Write a 48-bit RGB PNG by hand (Pillow cannot write one)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb.astype(">u2") * 257)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _bomb(path: Path, png: bytes) -> None:
    """A real PNG whose header claims 100000 x 100000 pixels (a decompression bomb)."""
    ihdr = bytearray(png[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", 100_000, 100_000)
    path.write_bytes(png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:])


def make_corpus(root: Path, demo: Path) -> Path:
    """train/ and valid/ with cats and dogs: real photos plus every kind of odd and bad file."""
    for split, count in (("train", 12), ("valid", 6)):
        for cls in ("cats", "dogs"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            offset = 0 if split == "train" else 20
            for i in range(count):
                shutil.copy(sorted((demo / "train" / cls).iterdir())[offset + i], folder)
    cats = root / "train" / "cats"
    photo = _photo(demo, "cats", 30)
    photo.convert("L").save(cats / "gray.jpg")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(cats / "palette.png")
    rgba = photo.convert("RGBA")
    alpha = np.full((photo.height, photo.width), 255, np.uint8)
    alpha[:, : photo.width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(cats / "alpha.png")
    photo.convert("CMYK").save(cats / "cmyk.jpg", quality=95)
    gray16 = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray16).save(cats / "gray16.png")
    _png16(cats / "rgb16.png", np.asarray(photo))
    photo.save(cats / "anim.gif")
    photo.save(cats / "photo.webp", quality=95)
    photo.save(cats / "photo.bmp")
    upright = photo.crop((0, 40, 200, 160))  # 200 x 120, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(cats / "rotated.jpg", exif=exif.tobytes(),
                                                      quality=95)
    photo.resize((4000, 3000), Image.Resampling.BILINEAR).save(cats / "large.jpg", quality=80)
    nested = cats / "sub folder" / "deeper"
    nested.mkdir(parents=True)
    photo.save(nested / "été 猫 1.jpg")

    dogs = root / "train" / "dogs"
    jpeg = (dogs / sorted(os.listdir(dogs))[0]).read_bytes()
    png_buffer = dogs / "source.png"
    _photo(demo, "dogs", 30).save(png_buffer)
    png = png_buffer.read_bytes()
    png_buffer.unlink()
    (dogs / "empty.jpg").write_bytes(b"")
    (dogs / "text.jpg").write_text("this is not a photo\n")
    (dogs / "garbled.png").write_bytes(bytes(16) + png[16:])
    (dogs / "notes.txt").write_text("labels were checked by hand\n")
    _bomb(dogs / "bomb.png", png)
    (dogs / "gone.jpg").symlink_to(dogs / "deleted-long-ago.jpg")
    (dogs / "truncated.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 5])
    (dogs / "truncated.png").write_bytes(png[: len(png) // 3])
    (dogs / "header_only.jpg").write_bytes(jpeg[:_scan_start(jpeg)])
    scrambled = bytearray(png)
    scrambled[len(png) // 2:len(png) // 2 + 200] = bytes(200)
    (dogs / "scrambled.png").write_bytes(bytes(scrambled))
    for name in IGNORED:
        (dogs / name).write_bytes(b"\x00\x05\x16\x07 metadata")
    return root


def _scan_start(jpeg: bytes) -> int:
    """Where a JPEG's pixel data begins (after its start-of-scan header): the header alone
    is everything before."""
    at = jpeg.index(b"\xff\xda")
    return at + 2 + int.from_bytes(jpeg[at + 2:at + 4], "big")


def test_from_folder_skips_bad_files_with_one_summary_line(corpus, capsys):
    data = ImageData.from_folder(corpus, size=64)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"Skipped {len(SKIPPED)} of "), err
    assert "data.skipped" in err[0] and "max_pixels" in err[0]  # how to keep very large images
    reasons = {p.name: r for p, r in data.skipped.items()}
    assert sorted(reasons) == sorted(SKIPPED)
    for name, word in SKIPPED.items():
        assert word in reasons[name], (name, reasons[name])
    train_names = {p.relative_to(corpus / "train" / "cats").as_posix()
                   for p in data.train.files if "cats" in p.parts}
    assert set(GOOD) <= train_names
    dog_names = {p.name for p in data.train.files if "dogs" in p.parts}
    assert set(SCRAMBLED) <= dog_names and not set(IGNORED) & dog_names
    assert not set(SKIPPED) & dog_names  # truncated files and headers alone never train
    assert (len(data.train), len(data.valid)) == (24 + len(GOOD) + len(SCRAMBLED), 12)
    text = repr(data)
    assert ("image sizes (width x height): smallest 200x120, median 200x200, largest 4000x3000"
            in text)
    assert f"skipped {len(SKIPPED)} files" in text


def test_odd_formats_decode_upright_and_faithful(corpus, dogscats_demo):
    cats = corpus / "train" / "cats"
    photo = np.asarray(_photo(dogscats_demo, "cats", 30), dtype=np.float64)
    gray = photo @ [0.299, 0.587, 0.114]

    def loaded(name: str) -> np.ndarray:
        image = load_image(cats / name)
        assert image.mode == "RGB", name
        return np.asarray(image, dtype=np.float64)

    for name in ("cmyk.jpg", "palette.png", "photo.webp", "photo.bmp", "rgb16.png",
                 "sub folder/deeper/été 猫 1.jpg"):
        assert np.abs(loaded(name) - photo).mean() < 8, name
    for name in ("gray.jpg", "gray16.png"):
        assert np.abs(loaded(name)[..., 0] - gray).mean() < 3, name
    assert np.abs(loaded("anim.gif") - photo).mean() < 20  # 256 colours
    alpha = loaded("alpha.png")
    assert alpha[:, :100].min() == 255  # transparent half on white
    assert np.abs(alpha[:, 100:] - photo[:, 100:]).mean() < 2
    rotated = loaded("rotated.jpg")
    assert rotated.shape == (120, 200, 3)  # upright: landscape again
    assert np.abs(rotated - photo[40:160]).mean() < 8
    assert probe_image(cats / "rotated.jpg") == (200, 120)


def test_decompression_bomb_limit_is_an_argument(corpus, capsys):
    large = corpus / "train" / "cats" / "large.jpg"
    with pytest.raises(BadImageError, match=r"max_pixels=") as info:
        probe_image(large, max_pixels=10_000_000)
    assert info.value.reason == "too large"
    assert probe_image(large) == (4000, 3000)
    data = ImageData.from_folder(corpus, size=64, max_pixels=10_000_000)
    assert data.skipped[large] == "too large"
    assert "max_pixels" in capsys.readouterr().err
    unlimited = ImageData.from_folder(corpus, size=64, max_pixels=None)
    assert {p.name for p in unlimited.skipped} == set(SKIPPED) - {"bomb.png"}
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own setting is left alone


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_files_and_root(tmp_path, dogscats_demo, capsys):
    root = make_small(tmp_path / "data", dogscats_demo)
    locked = root / "cats" / "locked.jpg"
    shutil.copy(next((dogscats_demo / "train" / "cats").iterdir()), locked)
    locked.chmod(0)
    assert "permission denied" in ImageData.from_folder(root, size=64).skipped[locked]
    root.chmod(0)
    try:
        with pytest.raises(PermissionError, match="cannot be read"):
            ImageData.from_folder(root)
    finally:
        root.chmod(0o755)


def test_training_never_crashes_on_files_that_fail_to_decode(corpus, capsys):
    data = ImageData.from_folder(corpus, size=64, batch_size=16, num_workers=0)
    capsys.readouterr()
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False)
    learn.checkpoint_dir = False
    learn.fit(0.01, 1)  # decodes every file once (cached activations)
    err = capsys.readouterr().err
    for name in SCRAMBLED:
        path = corpus / "train" / "dogs" / name
        assert f"Could not decode {path}" in err and "corrupt" in data.skipped[path]
    learn.unfreeze()
    rows = learn.fit(1e-4, 1)  # the whole network on images decoded once
    assert len(learn.history) == 2 and math.isfinite(rows[0]["valid_loss"])
    for name in SCRAMBLED:  # left out of the split the decode-once cache was made from
        assert corpus / "train" / "dogs" / name not in data.train.files


def make_small(root: Path, demo: Path, classes=("cats", "dogs"), n: int = 3) -> Path:
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for src in sorted((demo / "train" / cls).iterdir())[:n]:
            shutil.copy(src, root / cls)
    return root


def test_fail_fast_with_what_and_how_to_fix(tmp_path, dogscats_demo):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*Check the path"):
        ImageData.from_folder(tmp_path / "nowhere")
    photo = next((dogscats_demo / "train" / "cats").iterdir())
    with pytest.raises(NotADirectoryError, match="expected a folder"):
        ImageData.from_folder(photo)

    empty_class = make_small(tmp_path / "a", dogscats_demo)
    (empty_class / "birds").mkdir()
    with pytest.raises(ValueError, match=r"no training images: birds.*Add images"):
        ImageData.from_folder(empty_class)

    bad_only = make_small(tmp_path / "b", dogscats_demo)
    (bad_only / "birds").mkdir()
    (bad_only / "birds" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"birds \(1 files were skipped"):
        ImageData.from_folder(bad_only)

    with pytest.raises(ValueError, match=r"Only one class folder.*at least two"):
        ImageData.from_folder(make_small(tmp_path / "c", dogscats_demo, classes=("cats",)))

    extra = tmp_path / "d"
    make_small(extra / "train", dogscats_demo)
    make_small(extra / "valid", dogscats_demo)
    shutil.copytree(extra / "valid" / "cats", extra / "valid" / "birds")
    with pytest.raises(ValueError, match=r"class folders not in .*birds.*add them, or remove"):
        ImageData.from_folder(extra)

    no_images = tmp_path / "e"
    for cls in ("cats", "dogs"):
        (no_images / cls).mkdir(parents=True)
        (no_images / cls / "readme.txt").write_text("photos to come")
    with pytest.raises(ValueError, match=r"No images found.*Expected files ending in"):
        ImageData.from_folder(no_images)

    with pytest.raises(ValueError, match="No class folders found"):
        ImageData.from_folder(tmp_path / "e" / "cats")


@pytest.mark.parametrize("workers", [0, 2])
def test_decode_once_cache_leaves_out_failures(corpus, capsys, workers):
    """Training without precompute decodes into the in-memory cache (in a worker process with
    workers=2: the 37 training files allow one): files that fail there are reported, listed
    in data.skipped and left out of the split, so no stand-in picture trains under a label."""
    data = ImageData.from_folder(corpus, size=64, batch_size=16, num_workers=workers)
    learn = Learner.pretrained("efficientnet_lite0", data, progress=False)
    learn.checkpoint_dir = False
    capsys.readouterr()
    before = len(data.train)
    learn.fit(1e-4, 1)
    err = capsys.readouterr().err
    for name in SCRAMBLED:
        path = corpus / "train" / "dogs" / name
        assert f"Could not decode {path}" in err
        assert "corrupt" in data.skipped[path] and path not in data.train.files
    assert len(data.train) == before - len(SCRAMBLED) == len(data.train.labels)
    assert len(learn._presized[batches.presize_key(learn, data.train.files)]) == len(data.train)


def _broken_mid_file(photo: Path, dest: Path) -> Path:
    """A copy of a real JPEG whose pixel data breaks into junk markers halfway; it starts and
    ends as a JPEG should, so the folder scan keeps it, and it fails only while decoding."""
    jpeg = photo.read_bytes()
    middle = len(jpeg) // 2
    dest.write_bytes(jpeg[:middle] + b"\xff\xc8" * 50 + jpeg[middle + 100:])
    return dest


def test_precompute_leaves_out_files_that_fail_only_while_decoding(tmp_path, dogscats_demo,
                                                                    capsys):
    """Precompute, the head's training and validation leave such files out (no gray stand-in
    row under their label); a second run reads which from the cache, decoding nothing."""
    root = tmp_path / "data"
    make_small(root / "train", dogscats_demo, n=6)
    make_small(root / "valid", dogscats_demo, n=3)
    broken = [_broken_mid_file(dogscats_demo / "train" / "dogs" / "dog.1025.jpg",
                               root / "train" / "dogs" / "broken.jpg"),
              _broken_mid_file(dogscats_demo / "train" / "cats" / "cat.1025.jpg",
                               root / "valid" / "cats" / "broken.jpg")]

    def run() -> tuple[ImageData, Learner, list[int]]:
        data = ImageData.from_folder(root, size=64, batch_size=4, num_workers=0)
        assert broken[0] in data.train.files and broken[1] in data.valid.files  # scan passes
        learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False,
                                   cache_dir=tmp_path / "cache")
        learn.checkpoint_dir = False
        seen = [0]  # images through the backbone
        learn.body.register_forward_hook(lambda m, args, out: seen.__setitem__(
            0, seen[0] + args[0].shape[0]))
        capsys.readouterr()
        learn.fit(0.01, 1)  # precompute, then the head trains and validates
        return data, learn, seen

    data, learn, seen = run()
    err = capsys.readouterr().err
    assert seen[0] == 13 + 7 + 13  # train, valid, and train mirrored for the solved head
    assert len(learn._cached["train_mirrored"][0]) == 12  # the broken file's mirror left out
    for path, split in zip(broken, (data.train, data.valid), strict=True):
        assert f"Could not decode {path}" in err and "corrupt" in data.skipped[path]
        assert path not in split.files
    assert (len(data.train), len(data.valid)) == (12, 6) == (len(data.train.labels),
                                                            len(data.valid.labels))
    for name, split in (("train", data.train), ("valid", data.valid)):
        x, y = learn.features(name)
        assert x.shape == (len(split), learn.body.out_features) and y.tolist() == split.labels
    assert len(learn.get_preds()[0]) == 6  # validation: no stand-in row either
    first = learn.features("train")[0]
    learn.unfreeze()
    assert math.isfinite(learn.fit(1e-4, 1)[0]["valid_loss"])  # the whole network, on images

    again, second, seen = run()  # the same files: the cache says which rows were left out
    assert seen[0] == 0 and "Could not decode" in capsys.readouterr().err
    assert set(broken) <= set(again.skipped) and (len(again.train), len(again.valid)) == (12, 6)
    assert second.features("train")[0].equal(first)
