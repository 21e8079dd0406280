"""threeline: train a world-class model on your own data in three lines, then use it and ship it.

    from threeline import ImageData, Learner
    data = ImageData.from_folder("path/to/images")
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)
    learn.fit(0.01, 3)

Every name here is imported when first used: the core (``Learner``, losses, callbacks, saving)
with torch, each application (``threeline.vision``, ``threeline.tabular``, ``threeline.text``,
``threeline.collab``) with its own dependencies; so ``import threeline`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from threeline.learner import Learner
    from threeline.saving import cache_dir

from threeline.version import __version__

# names imported on first use: the command line parses its arguments before torch loads
_LAZY = {
    "Learner": "threeline.learner",
    "cache_dir": "threeline.saving",
    "ImageData": "threeline.vision",
    "demo_path": "threeline.vision",
    "available_models": "threeline.vision",
    "TabularData": "threeline.tabular",
    "CollabData": "threeline.collab",
    "TextData": "threeline.text",
}

__all__ = ["Learner", "__version__", "cache_dir", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'threeline' has no attribute {name!r}")
