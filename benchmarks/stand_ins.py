"""Stand-ins for modules that fastai imports at start-up but never calls on the benchmark's path.

``fastai.imports`` runs ``import requests, scipy`` and ``from scipy import ndimage``;
``fastai.metrics`` and ``fastai.interpret`` import ``sklearn.metrics``; ``fastai.data.transforms``
imports ``sklearn.model_selection.train_test_split``. Training an image classifier with
``vision_learner``, ``fit_one_cycle``, ``fine_tune``, ``accuracy`` and ``tta`` uses none of them.
On a machine without those packages (scipy and scikit-learn are ~50 MB of wheels),
:func:`install` registers empty modules under those names, so ``import fastai`` works; any use of
one raises at once instead of giving a wrong result. Installed packages are never replaced.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

NEEDED = {
    "requests": [],
    "scipy": ["ndimage", "stats"],
    "sklearn": ["metrics", "model_selection"],
}


class _Missing(types.ModuleType):
    """A module whose every public attribute is a function that raises ImportError."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        name = f"{self.__name__}.{attr}"

        def unavailable(*args, **kwargs):
            raise ImportError(f"{name} is not installed here (a stand-in from benchmarks).")

        return unavailable


def _missing(name: str, is_package: bool = False) -> _Missing:
    module = _Missing(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=is_package)
    if is_package:
        module.__path__ = []  # so that "import package.sub" finds the registered entries
    return module


def install() -> list[str]:
    """Register stand-ins for the packages in :data:`NEEDED` that are not installed.

    Returns the names of the packages filled in (empty when all are installed).
    """
    filled = []
    for package, submodules in NEEDED.items():
        if package in sys.modules or importlib.util.find_spec(package) is not None:
            continue
        parent = _missing(package, is_package=True)
        sys.modules[package] = parent
        for sub in submodules:
            child = _missing(f"{package}.{sub}")
            sys.modules[f"{package}.{sub}"] = child
            setattr(parent, sub, child)
        filled.append(package)
    return filled
