"""What :class:`~threeline.vision.data.ImageData` checks around a folder scan: the folder and
the arguments before it, training images in every class and some validation images after it.
Each problem is one error that says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from threeline.vision.images import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from threeline.vision.protocol import VisionData


def check_args(root: Path, size, valid_pct, batch_size, num_workers, max_pixels) -> None:
    """The image folder exists and can be read, and the arguments of
    :meth:`ImageData.from_folder` (or ``from_csv``) make sense; else an error saying what to do."""
    if not root.exists():
        raise FileNotFoundError(
            f"The folder {root} does not exist. Expected a folder with one sub-folder per class "
            f"(or train/ and valid/ folders that each hold them). Check the path."
        )
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; expected a folder of class sub-folders.")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PermissionError(
            f"The folder {root} cannot be read (permission denied). Give your user read access "
            f"(e.g. chmod -R u+rX {root}) or copy the images somewhere readable."
        )
    if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}.")
    if size is not None and (not isinstance(size, int) or size < 32):
        raise ValueError(f"size must be an int of at least 32 pixels (or None), got {size!r}. "
                         f"None trains a model of your own at the images' own size (28 px "
                         f"digits stay 28 px).")
    if not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct must lie between 0 and 1 (e.g. 0.2), got {valid_pct!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"num_workers must be None or an int >= 0, got {num_workers!r}.")


def check_nonempty(data: VisionData) -> None:
    """Every class has training images and there are validation images; else an error saying
    what to add."""
    counts = data.train.counts(data.classes)
    empty = [c for c, n in counts.items() if n == 0]
    bad = f" ({len(data.skipped)} files were skipped as unusable: see data.skipped)"
    bad = bad if data.skipped else ""
    if len(data.train) == 0:
        raise ValueError(
            f"No images found under {data.root}{bad}. Expected files ending in "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))} inside the class folders."
        )
    if empty:
        raise ValueError(
            f"Class folder(s) with no training images: {', '.join(empty)}{bad}. Add images to "
            f"them or remove them."
        )
    if len(data.valid) == 0:
        raise ValueError(
            f"No validation images under {data.root}. Add a valid/ folder or use more images "
            f"per class so valid_pct can hold some out."
        )
