"""The applications' factories as Learner class methods: ``Learner.pretrained(...)``,
``Learner.tabular(...)`` and the others each import their application package when first
called (the registry is the package's name), so ``import threeline`` loads none of them.

    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)   # threeline.vision
"""

from __future__ import annotations

from importlib import import_module
from typing import Any


def _factory(package: str, function: str, doc: str) -> classmethod:
    """A class method that imports ``package`` when called and returns its ``function``'s
    learner."""
    def make(cls, *args: Any, **kwargs: Any) -> Any:
        return getattr(import_module(package), function)(*args, **kwargs)

    make.__name__, make.__doc__ = function, doc
    return classmethod(make)


class Applications:
    """Factories of :class:`threeline.learner.Learner` for each application."""

    pretrained = _factory("threeline.vision", "pretrained", "An image classifier on a "
                          "pretrained body: :func:`threeline.vision.pretrained`.")
    tabular = _factory("threeline.tabular", "tabular_learner",
                       "A model of a table: :func:`threeline.tabular.tabular_learner`.")
    collab = _factory("threeline.collab", "collab_learner",
                      "Collaborative filtering: :func:`threeline.collab.collab_learner`.")
    text_classifier = _factory("threeline.text", "text_classifier",
                               "A text classifier: :func:`threeline.text.text_classifier`.")
    language_model = _factory("threeline.text", "language_model",
                              "A language model: :func:`threeline.text.language_model`.")
