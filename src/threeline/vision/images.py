"""Reading image files: one place that turns a path into an RGB picture.

Handles EXIF orientation (rotated phone photos), grayscale, palette and alpha images, 16-bit and
CMYK images, and uses JPEG draft mode so a large JPEG is decoded at a reduced scale when only a
small copy is needed.

Files that are not usable images are reported, not fatal: :func:`probe_image` reads only a file's
header (fast) and raises :class:`BadImageError` saying why a file cannot be used.

Very large images are refused above ``max_pixels`` (default :data:`MAX_PIXELS`) to guard against
decompression bombs: small files that declare enormous pictures. Pillow's own global limit is
never changed for good; it is lifted only while a file is opened under :func:`pixel_limit`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from threeline.vision.jpeg import HEAD_BYTES, jpeg_info

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
)
# Files that operating systems drop into folders: ignored without a word.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
MAX_PIXELS = 200_000_000  # 200 megapixels: above the largest phone cameras
_LIMIT_LOCK = threading.RLock()


class BadImageError(ValueError):
    """A file that cannot be used as an image; ``reason`` says why in a few words."""

    def __init__(self, path: str | Path, reason: str, hint: str = ""):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}." + (f" {hint}" if hint else ""))


def is_image_file(path: Path) -> bool:
    """True when ``path`` has an image extension and is not a hidden file.

    Example:
        >>> is_image_file(Path("cats/cat.1.JPG")), is_image_file(Path("cats/.DS_Store"))
        (True, False)
    """
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def is_system_file(path: Path) -> bool:
    """True for hidden files and the litter of file managers (``.DS_Store``, ``Thumbs.db``).

    Example:
        >>> is_system_file(Path("cats/Thumbs.db")), is_system_file(Path("cats/notes.txt"))
        (True, False)
    """
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FILES


def _megapixels(pixels: float) -> str:
    return f"{pixels / 1e6:,.0f} megapixels"


@contextmanager
def pixel_limit(max_pixels: int | None = MAX_PIXELS) -> Iterator[None]:
    """Open images under our decompression-bomb limit instead of Pillow's global one.

    Inside the block, opening an image of more than ``max_pixels`` pixels raises
    ``PIL.Image.DecompressionBombError``; ``None`` means no limit. Pillow's setting is restored
    on exit.

    Example:
        >>> with pixel_limit(100_000):
        ...     Image.open(next((Path(__file__).parent / "demo_data").rglob("*.jpg"))).size
        (200, 200)
    """
    with _LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        # Pillow raises above twice its setting (and only warns above it).
        Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max_pixels // 2
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def too_large_hint(max_pixels: int | None) -> str:
    """How to raise the limit, for error messages.

    Example:
        >>> "max_pixels" in too_large_hint(MAX_PIXELS)
        True
    """
    limit = "no limit" if max_pixels is None else f"the limit of {_megapixels(max_pixels)}"
    return (
        f"Images above {limit} are refused to guard against decompression bombs. If you trust "
        f"the file, raise it: ImageData.from_folder(..., max_pixels=1_000_000_000) "
        f"(max_pixels=None for no limit), or --max-pixels on the command line."
    )


def probe_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """The upright (width, height) of an image file, from its header only (no decoding).

    Raises:
        BadImageError: the file is empty, unreadable, not an image Pillow knows, or larger than
            ``max_pixels`` pixels.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> probe_image(next((demo_path() / "train" / "cats").iterdir()))
        (200, 200)
    """
    with pixel_limit(max_pixels):
        return read_header(path, max_pixels)


def read_header(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """:func:`probe_image` for use inside ``with pixel_limit(max_pixels):`` (many files, threads).

    Example:
        >>> from threeline.vision.data import demo_path
        >>> files = sorted((demo_path() / "train" / "dogs").iterdir())[:3]
        >>> with pixel_limit(MAX_PIXELS):
        ...     [read_header(f) for f in files]
        [(200, 200), (200, 200), (200, 200)]
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        with Image.open(path) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise BadImageError(path, f"image has no pixels ({width}x{height})")
            if _orientation(image) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except BadImageError:
        raise
    except Image.DecompressionBombError as err:
        raise BadImageError(path, "too large", too_large_hint(max_pixels)) from err
    except UnidentifiedImageError as err:
        raise BadImageError(path, "not a readable image (corrupt, or not an image)") from err
    except PermissionError as err:
        raise BadImageError(path, "cannot be read: permission denied") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImageError(path, f"corrupt or truncated ({_short(err)})") from err


def quick_probe(path: str | Path, max_pixels: int | None = MAX_PIXELS
                ) -> tuple[tuple[int, int] | None, bool]:
    """(:func:`quick_header`'s size or None, whether the file ends as a complete JPEG or PNG),
    from one open: a photo smaller than the header's 64 KB is read once for both.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> quick_probe(next((demo_path() / "train" / "cats").iterdir()))
        ((200, 200), True)
    """
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            if len(head) < HEAD_BYTES:
                tail = head[-_TAIL_BYTES:]
            else:
                f.seek(-_TAIL_BYTES, os.SEEK_END)
                tail = f.read()
    except OSError:
        return None, False
    complete = _ends_complete(head, tail)
    info = jpeg_info(head)
    if info is None or info.orientation == 0:
        return None, complete
    if max_pixels is not None and info.width * info.height > max_pixels:
        return None, complete  # read_header says why, in the usual words
    return info.upright_size, complete


def _ends_complete(head: bytes, tail: bytes) -> bool:
    return ((head.startswith(b"\xff\xd8") and b"\xff\xd9" in tail)
            or (head.startswith(b"\x89PNG") and tail.endswith(_PNG_END)))


def quick_header(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int] | None:
    """The upright (width, height) of an ordinary JPEG from its first bytes, without Pillow;
    None for anything else (other formats, odd or broken files): ask :func:`read_header` then.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> quick_header(next((demo_path() / "train" / "cats").iterdir()))
        (200, 200)
    """
    try:
        with open(path, "rb") as f:
            info = jpeg_info(f.read(HEAD_BYTES))
    except OSError:
        return None
    if info is None or info.orientation == 0:
        return None
    if max_pixels is not None and info.width * info.height > max_pixels:
        return None  # read_header says why, in the usual words
    return info.upright_size


# How a complete file ends: a JPEG with its end-of-image marker (perhaps followed by a few
# bytes of padding), a PNG with its IEND chunk. Checked on the last bytes only.
_TAIL_BYTES = 64
_PNG_END = b"IEND\xaeB`\x82"
# Formats without such an end are decoded in full when checked, up to this file size.
_DECODE_CHECK_BYTES = 32 << 20


def check_complete(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> None:
    """Raise :class:`BadImageError` for a file cut short (truncated, or a header alone).

    A JPEG or PNG whose last bytes are its end marker passes at the cost of one small read;
    any other file (no end marker: truncated, or with unusual trailing data; GIF, WebP, BMP,
    TIFF) is decoded in full, and a file that fails to decode is refused. Call it inside
    ``with pixel_limit(max_pixels):``.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> check_complete(next((demo_path() / "train" / "cats").iterdir()))  # no error
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError as err:
        raise BadImageError(path, f"cannot be read ({_short(err)})") from err
    if _ends_complete(head, tail):
        return
    if size > _DECODE_CHECK_BYTES and not head.startswith((b"\xff\xd8", b"\x89PNG")):
        return  # a large file of another format: decoding it now would cost too much
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (64, 64))  # decodes every byte, at an eighth of the scale
            image.load()
    except Image.DecompressionBombError as err:
        raise BadImageError(path, "too large", too_large_hint(max_pixels)) from err
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        raise BadImageError(path, f"corrupt or truncated ({_short(err)})") from err


def _short(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright), read without decoding any pixels."""
    try:
        if image.format == "PNG":  # Pillow's PNG getexif() decodes the whole image
            exif = Image.Exif()
            if image.info.get("exif"):
                exif.load(image.info["exif"])
            return int(exif.get(0x0112, 1))
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF: treat as upright
        return 1


def load_image(source: str | Path | Image.Image, min_size: int | None = None) -> Image.Image:
    """Open an image as an upright RGB PIL image.

    Args:
        source: a file path or a PIL image.
        min_size: when given, a JPEG may be decoded at a reduced scale (draft mode) as long as
            both sides stay at least ``min_size`` pixels: much faster for big photos.

    Example:
        >>> from threeline.vision.data import demo_path
        >>> path = next((demo_path() / "train" / "cats").iterdir())
        >>> load_image(path).mode
        'RGB'
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        image = Image.open(source)
        if min_size is not None and image.format == "JPEG":
            image.draft("RGB", (min_size, min_size))
        image.load()  # a file that cannot be decoded fails here, not in the EXIF step below
    with contextlib.suppress(Exception):  # malformed EXIF: keep the picture as stored
        image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16") or image.mode == "I":
        image = image.point(lambda v: v / 256).convert("L")  # 16-bit -> 8-bit
    return image.convert("RGB")


def expand_items(items, on_empty_folder: Callable[[Path], None] | None = None) -> list:
    """A flat list of files and PIL images from files, folders, PIL images or lists of them.

    A folder gives its image files, sorted, recursively; ``on_empty_folder(folder)`` is called
    for a folder that holds none.

    Example:
        >>> len(expand_items(Image.new("RGB", (4, 4))))
        1
    """
    if isinstance(items, (str, os.PathLike, Image.Image)):
        items = [items]
    out: list = []
    for item in items:
        if isinstance(item, Image.Image):
            out.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found and on_empty_folder is not None:
                on_empty_folder(path)
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither an image file nor a folder.")
    if not out:
        raise ValueError("No images to predict on: the files and folders given hold none.")
    return out
