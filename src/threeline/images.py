"""Reading image files: one place that turns a path into an RGB picture.

Handles EXIF orientation (rotated phone photos), grayscale, palette and alpha images, and uses
JPEG draft mode so a large JPEG is decoded at a reduced scale when only a small copy is needed.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"})


def is_image_file(path: Path) -> bool:
    """True when ``path`` has an image extension and is not a hidden file.

    Example:
        >>> is_image_file(Path("cats/cat.1.JPG")), is_image_file(Path("cats/.DS_Store"))
        (True, False)
    """
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(source: str | Path | Image.Image, min_size: int | None = None) -> Image.Image:
    """Open an image as an upright RGB PIL image.

    Args:
        source: a file path or a PIL image.
        min_size: when given, a JPEG may be decoded at a reduced scale (draft mode) as long as
            both sides stay at least ``min_size`` pixels: much faster for big photos.

    Example:
        >>> from threeline.data import demo_path
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
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode == "I;16" or image.mode == "I":
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB")
