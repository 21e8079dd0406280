"""Figures without global state: grids of images and matrices, drawn with Agg, saved as PNG.

Figures are made with :class:`matplotlib.figure.Figure` directly, not through ``pyplot``: nothing
is left open between calls, no display is needed, and a figure returned as a notebook cell's
value is shown inline once (it renders itself as PNG).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_IMAGES = 36  # a grid holds at most this many images (6 x 6), so titles stay legible
MAX_NAME = 20  # class names longer than this are shortened in titles and tick labels


class PlotFigure(Figure):
    """A Figure that shows itself inline in notebooks as PNG, even without ``pyplot``."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def new_figure(width: float, height: float, layout: str | None = None) -> PlotFigure:
    """An empty figure ``width`` x ``height`` inches with an Agg canvas.

    Example:
        >>> new_figure(4, 3).get_size_inches().tolist()
        [4.0, 3.0]
    """
    fig = PlotFigure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def short(name: str, width: int = MAX_NAME) -> str:
    """``name`` cut to ``width`` characters with an ellipsis when longer.

    Example:
        >>> short("a_very_long_class_name_indeed", 10)
        'a_very_lo…'
    """
    return name if len(name) <= width else name[: width - 1] + "…"


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], heading: str,
               colors: Sequence[str] | None = None) -> PlotFigure:
    """Images (H, W, 3) uint8 in a near-square grid, each with its title, under ``heading``.

    At most :data:`MAX_IMAGES` are drawn; an empty list gives a figure that says so.

    Example:
        >>> fig = image_grid([np.zeros((8, 8, 3), np.uint8)] * 4, ["a"] * 4, "four")
        >>> sum(1 for ax in fig.axes if ax.images)
        4
    """
    images, titles = list(images)[:MAX_IMAGES], list(titles)[:MAX_IMAGES]
    if not images:
        fig = new_figure(5, 1.2)
        fig.text(0.5, 0.5, heading, ha="center", va="center", fontsize=11)
        return fig
    cols = min(len(images), max(2, math.ceil(math.sqrt(len(images)))), 6)
    rows = math.ceil(len(images) / cols)
    lines = max(t.count("\n") + 1 for t in titles)
    cell = 2.4
    fig = new_figure(cols * cell, rows * (cell + 0.17 * lines) + 0.5, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            color = colors[i] if colors is not None else "black"
            ax.set_title(titles[i], fontsize=9, color=color)
    fig.suptitle(heading, fontsize=12)
    return fig


def matrix_figure(values: np.ndarray, names: list[str], normalize: bool) -> PlotFigure:
    """A square matrix as a heat map with row and column ``names`` and the values written in.

    Sized to the number of rows; with more than 10, empty cells are left blank.

    Example:
        >>> fig = matrix_figure(np.array([[3.0, 1.0], [0.0, 4.0]]), ["cats", "dogs"], False)
        >>> float(fig.axes[0].images[0].get_array().sum())
        8.0
    """
    n = len(names)
    side = min(3.0 + 0.42 * n, 18.0)
    fig = new_figure(side + 1.5, side + 1.0)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    font = 10 if n <= 10 else 8 if n <= 20 else 7
    labels = [short(name) for name in names]
    ax.set_xticks(range(n), labels, rotation=90 if n > 4 else 0, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    high = values.max() if values.size else 0
    for r in range(n):
        for c in range(n):
            v = values[r, c]
            if n > 10 and v == 0:
                continue  # with many classes, empty cells stay blank
            text = f"{v:.2f}" if normalize else f"{int(v)}"
            ax.text(c, r, text, ha="center", va="center", fontsize=font,
                    color="white" if high and v > high / 2 else "black")
    return fig


def image_array(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A uint8 (3, H, W) tensor (what transforms return) -> (H, W, 3) array for display.

    Example:
        >>> image_array(torch.zeros(3, 4, 5, dtype=torch.uint8)).shape
        (4, 5, 3)
    """
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return array.transpose(1, 2, 0) if array.ndim == 3 and array.shape[0] == 3 else array


def save_png(fig: Figure, save: str | os.PathLike | None) -> Path | None:
    """Write ``fig`` to the PNG file ``save`` (folders are created); None writes nothing.

    Example:
        >>> save_png(new_figure(2, 2), None) is None
        True
    """
    if save is None:
        return None
    path = Path(save).expanduser()
    if path.suffix.lower() != ".png":
        raise ValueError(f"save must be a path ending in .png, got {str(path)!r}; e.g. "
                         f"save='plots/top_losses.png'.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path
