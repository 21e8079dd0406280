"""threeline: train a world-class model on your own data in three lines, then use it and ship it.

    from threeline import ImageData, Learner
    data = ImageData.from_folder("path/to/images")
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)
    learn.fit(0.01, 3)

The core (``Learner``, losses, callbacks, saving) is imported here; each application
(``threeline.vision``, ``threeline.tabular``, ``threeline.text``, ``threeline.collab``) is
imported when first used, so ``import threeline`` stays light.
"""

from __future__ import annotations

import importlib

from threeline.learner import Learner
from threeline.saving import cache_dir

__version__ = "0.2.0"

# names that live in an application, imported on first use
_LAZY = {
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
