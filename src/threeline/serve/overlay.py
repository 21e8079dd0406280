"""Heat maps as see-through PNG pictures for the page: cold is clear, hot is red.

Example:
    >>> import numpy as np
    >>> overlay_png(np.zeros((8, 8), np.float32)).startswith("data:image/png;base64,")
    True
"""

from __future__ import annotations

import base64
from io import BytesIO

import numpy as np
from PIL import Image

# colour stops from cold to hot (blue, cyan, yellow, red) and their opacity (0-255)
_STOPS = np.array([0.0, 0.35, 0.7, 1.0])
_COLOURS = np.array([[40, 60, 255], [0, 220, 255], [255, 230, 0], [255, 30, 0]], np.float32)
_ALPHA = np.array([0, 90, 160, 200], np.float32)


def overlay_pixels(heat: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> uint8 RGBA (H, W, 4).

    Example:
        >>> overlay_pixels(np.array([[0.0, 1.0]]))[0, :, 3].tolist()
        [0, 200]
    """
    if heat.ndim != 2:
        raise ValueError(f"a heat map is (H, W); got shape {heat.shape}.")
    v = np.clip(np.nan_to_num(heat.astype(np.float32)), 0, 1)  # (H, W)
    rgb = np.stack([np.interp(v, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=-1)
    alpha = np.interp(v, _STOPS, _ALPHA)[..., None]
    return np.concatenate([rgb, alpha], axis=-1).round().astype(np.uint8)  # (H, W, 4)


def overlay_png(heat: np.ndarray) -> str:
    """A heat map (H, W) in [0, 1] as a ``data:`` URL of an RGBA PNG."""
    buffer = BytesIO()
    Image.fromarray(overlay_pixels(heat)).save(buffer, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
