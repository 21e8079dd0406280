"""What a learner writes and reads back: its tensors, the JSON that rebuilds it, ``save`` and
``load`` (the files themselves are :mod:`threeline.saving`'s).

:class:`LearnerState` is a base of :class:`threeline.learner.Learner`; applications override
``describe`` (and ``state_dict`` when they keep more than the model's tensors).

    learn.save("runs/pets/model")              # model.safetensors + model.json
    learn = Learner.load("runs/pets/model")    # an application's model rebuilds itself
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from threeline.checkpoints import Checkpoints
from threeline.saving import ModelFileError, model_paths, read_model, write_model


class LearnerState:
    """Saving and loading for :class:`threeline.learner.Learner` (``model``, ``loss``,
    ``history`` and ``world`` are the learner's), and where ``fit`` checkpoints."""

    _checkpoints: Checkpoints

    @property
    def checkpoint_dir(self) -> Path | None:
        """Where ``fit`` saves ``last`` and ``best`` after each epoch (None until the first
        save). Set a folder to choose it, or ``False`` to save no checkpoints."""
        store = self._checkpoints
        return None if not store.enabled or store.last is None else store.last.parent

    @checkpoint_dir.setter
    def checkpoint_dir(self, folder: str | os.PathLike | bool | None) -> None:
        if folder is False:
            self._checkpoints = Checkpoints(enabled=False)
        else:
            self._checkpoints = Checkpoints(None if folder in (None, True) else folder)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor that :meth:`save` writes."""
        return dict(self.model.state_dict())

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy saved tensors into the model, in place (same architecture)."""
        try:
            self.model.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise ModelFileError(
                f"The saved weights do not fit this model ({str(err).splitlines()[0][:160]}); "
                f"build the same architecture, or save the model again.") from err

    def static_state_prefixes(self) -> tuple[str, ...]:
        """State keys that cannot change during the current fit (copied once for checkpoints)."""
        return ()

    def describe(self) -> dict:
        """JSON that rebuilds this learner: ``"application"`` names the package whose
        ``rebuild(description, tensors, ...)`` does it (None: a model of your own)."""
        return {"application": None, "model": type(self.model).__name__,
                "loss": self.loss.describe()}

    def snapshot(self, reuse: dict[str, torch.Tensor] | None = None,
                 **extra) -> tuple[dict[str, torch.Tensor], dict]:
        """CPU copies of the tensors and the description, taken now. ``reuse``: tensors of an
        earlier snapshot kept as they are (under :meth:`static_state_prefixes`)."""
        static = self.static_state_prefixes()
        tensors = {k: v.detach().to("cpu", copy=True)
                   for k, v in self.state_dict().items()
                   if not (reuse and static and k.startswith(static))}
        info = self.describe() | {"history": self.history} | extra
        return (reuse or {}) | tensors, info

    def save(self, path: str | os.PathLike, **extra) -> Path:
        """Save as ``path.safetensors`` + ``path.json`` (no pickle); returns the weights' path.
        With several processes, only rank 0 writes (the others hold the same weights)."""
        if not self.world.main:
            return model_paths(path)[0]
        return write_model(path, *self.snapshot(**extra))

    @classmethod
    def load(cls, path: str | os.PathLike, model: nn.Module | None = None, **kwargs) -> Any:
        """A learner from :meth:`save` files (or a run folder holding ``model.*``).

        Models of an application (images, tables, ...) rebuild themselves from their JSON;
        a model of your own needs ``model=`` (the same architecture, freshly built). Other
        keyword arguments go to the application's rebuild (``device=``, ``data=``, ...).
        """
        info, tensors = read_model(path)
        if model is not None:
            learn = cls(model, kwargs.pop("data", None), **kwargs)
            learn.load_state_dict(tensors)
            learn.history = list(info.get("history") or [])
            return learn
        app = info.get("application")
        if not isinstance(app, str) or not app.startswith("threeline."):
            raise ModelFileError(
                f"{model_paths(path)[1]} holds a model of your own ({info.get('model')}); "
                f"pass it: Learner.load(path, model=YourModel(...)).")
        return importlib.import_module(app).rebuild(info, tensors, **kwargs)
