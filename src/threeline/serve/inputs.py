"""Uploaded images and texts, checked before the model sees them.

An upload is opened with Pillow from its bytes, whatever its name or declared type says: its
format must be one Pillow decodes for us (JPEG, PNG, WebP, GIF, BMP), its size (from the
header, before decoding) at most ``max_pixels``, and it must decode completely (truncated
files are refused). JPEGs decode at reduced scale when much larger than the model needs
(draft mode, as ``learn.predict`` does with files); other large images are reduced by an
integer factor, so a decoded image never holds much more than the model needs.

Example:
    >>> from io import BytesIO
    >>> from PIL import Image
    >>> buffer = BytesIO()
    >>> Image.new("RGB", (640, 480)).save(buffer, "PNG")
    >>> image, size = decode_image(buffer, "a.png", max_pixels=10**6, short=256)
    >>> image.size, size
    ((640, 480), (640, 480))
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import IO

from PIL import Image, UnidentifiedImageError

from threeline.serve.errors import ApiError

FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def safe_name(name: str | None, index: int) -> str:
    """The last part of an uploaded file's name, without control characters (never a path).

    Example:
        >>> safe_name("../../etc/passwd", 0), safe_name("C:\\\\photos\\\\cat.jpg", 1)
        ('passwd', 'cat.jpg')
        >>> safe_name(None, 2)
        'image 3'
    """
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = _UNSAFE.sub("", base).strip()[:200]
    return base if base not in ("", ".", "..") else f"image {index + 1}"


def decode_image(source: IO[bytes], name: str, max_pixels: int,
                 short: int) -> tuple[Image.Image, tuple[int, int]]:
    """An upright RGB image from an upload and its upright (width, height) as uploaded, or an
    :class:`ApiError` saying why not.

    The image returned may be smaller: reduced towards ``short`` pixels on its shorter side, and
    cut to its central 2:1 part when longer than that (the model sees only the center), so a
    waiting image holds little memory whatever was uploaded.

    Args:
        source: the file's bytes (a binary file object, read from its start).
        name: the (safe) file name, for messages.
        max_pixels: the most width x height accepted.
        short: the model's resize target for the shorter side; decoding stops near it.
    """
    from threeline.vision.images import load_image

    source.seek(0)
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as err:
        raise _too_large(name, None, max_pixels) from err
    except UnidentifiedImageError as err:
        raise ApiError(415, f"{name} is not an image Pillow can read (send JPEG, PNG, WebP, "
                            f"GIF or BMP).") from err
    except Exception as err:  # a broken header: Pillow raises many kinds
        raise _unreadable(name, err) from err
    with image:
        if image.format not in FORMATS:
            raise ApiError(415, f"{name} is a {image.format} image; send JPEG, PNG, WebP, GIF or "
                                f"BMP.")
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large(name, (width, height), max_pixels)
        if width < 1 or height < 1:
            raise ApiError(422, f"{name} has no pixels ({width}x{height}).")
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (short, short))  # decode at 1/2, 1/4, 1/8 scale when large
        try:
            image.load()  # all the pixel data: truncated or corrupt files fail here
            upright = load_image(image)  # EXIF orientation, alpha onto white, 16-bit, RGB
        except Image.DecompressionBombError as err:
            raise _too_large(name, (width, height), max_pixels) from err
        except Exception as err:
            raise _unreadable(name, err) from err
    size = upright.size
    w, h = size
    if max(w, h) > 2 * min(w, h):  # a panorama: keep its central 2:1 part
        cut = 2 * min(w, h)
        upright = upright.crop(((w - cut) // 2, 0, (w - cut) // 2 + cut, h) if w > h
                               else (0, (h - cut) // 2, w, (h - cut) // 2 + cut))
    factor = min(upright.size) // short
    if factor >= 2:  # keep at least `short` pixels on the shorter side
        upright = upright.reduce(factor)
    return upright, size


def crop_box(width: int, height: int, resize_to: int, size: int) -> dict[str, float]:
    """Where the model's center crop lies in a ``width`` x ``height`` picture, as fractions
    (left, top, width, height): the page puts the heat map there.

    Example:
        >>> crop_box(400, 200, 256, 224)
        {'left': 0.28125, 'top': 0.0625, 'width': 0.4375, 'height': 0.875}
    """
    scale = resize_to / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return {"left": left / new_w, "top": top / new_h, "width": size / new_w,
            "height": size / new_h}


def check_texts(payload: object, max_items: int, max_chars: int) -> list[str]:
    """The ``texts`` of a JSON request body, checked: a non-empty list of strings.

    Example:
        >>> check_texts({"texts": ["Great film."]}, 16, 1000)
        ['Great film.']
    """
    texts = payload.get("texts") if isinstance(payload, dict) else None
    if isinstance(payload, dict) and texts is None and isinstance(payload.get("text"), str):
        texts = [payload["text"]]
    if not isinstance(texts, list) or not texts:
        raise ApiError(400, 'Send JSON like {"texts": ["first text", "second text"]}.')
    if len(texts) > max_items:
        raise ApiError(413, f"{len(texts)} texts in one request; at most {max_items} (send "
                            f"several requests, or raise --max-files).")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ApiError(400, f"texts[{i}] is a {type(text).__name__}; each text must be a "
                                f"string.")
        if len(text) > max_chars:
            raise ApiError(413, f"texts[{i}] has {len(text):,} characters; at most "
                                f"{max_chars:,} (raise --max-text-chars).")
    return texts


def _too_large(name: str, size: tuple[int, int] | None, max_pixels: int) -> ApiError:
    what = f"{size[0]}x{size[1]} pixels" if size else "more pixels than Pillow allows"
    return ApiError(413, f"{name} is {what}; the server takes at most {max_pixels:,} pixels per "
                         f"image (a guard against decompression bombs; raise --max-pixels if "
                         f"you trust such files).")


def _unreadable(name: str, err: BaseException) -> ApiError:
    reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
    return ApiError(422, f"{name} could not be decoded ({reason}); it may be truncated or "
                         f"corrupt.")
