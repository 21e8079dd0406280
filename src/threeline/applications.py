"""The applications' factories as Learner class methods: ``Learner.pretrained(...)``,
``Learner.tabular(...)`` and the others each import their application package when first
called (the registry is the package's name), so ``import threeline`` loads none of them.

    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)   # threeline.vision
"""

from __future__ import annotations

from importlib import import_module
from typing import Any


class Applications:
    """Factories of :class:`threeline.learner.Learner` for each application."""

    @classmethod
    def pretrained(cls, *args, **kwargs) -> Any:
        """An image classifier on a pretrained body: :func:`threeline.vision.pretrained`."""
        return import_module("threeline.vision").pretrained(*args, **kwargs)

    @classmethod
    def tabular(cls, *args, **kwargs) -> Any:
        """A model of a table: :func:`threeline.tabular.tabular_learner`."""
        return import_module("threeline.tabular").tabular_learner(*args, **kwargs)

    @classmethod
    def collab(cls, *args, **kwargs) -> Any:
        """Collaborative filtering: :func:`threeline.collab.collab_learner`."""
        return import_module("threeline.collab").collab_learner(*args, **kwargs)

    @classmethod
    def text_classifier(cls, *args, **kwargs) -> Any:
        """A text classifier: :func:`threeline.text.text_classifier`."""
        return import_module("threeline.text").text_classifier(*args, **kwargs)

    @classmethod
    def language_model(cls, *args, **kwargs) -> Any:
        """A language model: :func:`threeline.text.language_model`."""
        return import_module("threeline.text").language_model(*args, **kwargs)
