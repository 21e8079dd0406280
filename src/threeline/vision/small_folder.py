"""What changes on a small folder: up to :data:`SMALL_FOLDER` training images.

There the extra passes below cost seconds, and on the small real folders of
``benchmarks/small_data.py`` they paid (``benchmarks/results/small_data-*.md``):

- the input size is :data:`SIZE_SCALE` times the one the network was trained at (unless the
  data sets one; 288 px for ``efficientnet_lite0``, 336 for ``efficientnet_lite2``), unless
  the pictures are tinier than :data:`MIN_SIDE`: pretrained networks see objects larger in
  training (random crops) than in a centred view at the same size, so a larger view of the
  same picture reads better;
- ``fine_tune`` ends with test-time augmentation turned on: ``predict`` averages the plain
  view and :data:`TTA_VIEWS` augmented copies (:mod:`threeline.vision.tta`).

The head is a separate rule (solved and linear up to 2,000 images: :func:`model.head_width`).
"""

from __future__ import annotations

SMALL_FOLDER = 1_000  # training images
SIZE_SCALE = 1.3
MIN_SIDE = 64  # pixels on the median image's shorter side, for SIZE_SCALE
TTA_VIEWS = 4


def is_small(n_train: int) -> bool:
    """True for a folder of up to :data:`SMALL_FOLDER` training images.

    Example:
        >>> is_small(244), is_small(23_000)
        (True, False)
    """
    return n_train <= SMALL_FOLDER


def input_size(default: int, native: int, n_train: int, shorter_side: int | None) -> int:
    """The input size for a network trained at ``native`` pixels whose default is
    ``default``: on a small folder whose median image is at least :data:`MIN_SIDE` pixels on
    its shorter side, :data:`SIZE_SCALE` times ``native`` (to a multiple of 16) when that is
    above ``default``; else ``default``. Tinier pictures stay at ``default``: upsampling
    32 px CIFAR images further cost accuracy (``benchmarks/results/small_data-*-size.md``).

    Example:
        >>> input_size(224, 224, 244, 375), input_size(300, 260, 244, 200)
        (288, 336)
        >>> input_size(224, 224, 500, 32), input_size(300, 260, 23_000, 375)
        (224, 300)
    """
    larger = 16 * round(native * SIZE_SCALE / 16)
    enough = shorter_side is not None and shorter_side >= MIN_SIDE
    return max(default, larger) if is_small(n_train) and enough else default


def tta_views(n_train: int) -> int:
    """The augmented copies ``fine_tune(tta=None)`` turns on: :data:`TTA_VIEWS` on a small
    folder, else 0.

    Example:
        >>> tta_views(250), tta_views(5_000)
        (4, 0)
    """
    return TTA_VIEWS if is_small(n_train) else 0
