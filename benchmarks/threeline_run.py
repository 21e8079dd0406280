"""threeline's side of the comparison: the three lines a user writes, timed.

frozen:   ``Learner.pretrained(arch, data, precompute=True)`` then ``learn.fit(lr, epochs)``.
          The body's activations are computed inside ``fit`` (so they are on the clock), in a fresh
          cache folder; a ``warm_cache`` run reuses the folder an earlier run filled.
finetune: ``Learner.pretrained(arch, data, augment="side_on")`` then
          ``learn.fine_tune(epochs, base_lr=...)``.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np

from threeline import ImageData, Learner


def _restrict(data: ImageData, selection) -> ImageData:
    """Keep only the selected files (the same lists the other frameworks get), in data's order."""

    def keep(split, pairs):
        wanted = {str(Path(f).resolve()) for f, _ in pairs}
        idx = [i for i, f in enumerate(split.files) if str(Path(f).resolve()) in wanted]
        if len(idx) == len(split.files):
            return split
        return dataclasses.replace(split, files=[split.files[i] for i in idx],
                                   labels=[split.labels[i] for i in idx])

    return dataclasses.replace(data, train=keep(data.train, selection.train),
                               valid=keep(data.valid, selection.valid))


def run(spec, selection, clock) -> dict:
    clock.mark("start")
    data = ImageData.from_folder(selection.root, size=spec.size, batch_size=spec.batch_size)
    data = _restrict(data, selection)
    options = dict(device=spec.device, seed=spec.seed, cache_dir=spec.cache_dir or None,
                   progress=False)
    if spec.mode == "frozen":
        learn = Learner.pretrained(spec.arch, data, precompute=True, **options)
        clock.mark("fit_start")
        learn.fit(spec.lr, spec.epochs)
        recipe = f"fit({spec.lr:g}, {spec.epochs}), precompute=True"
    else:
        learn = Learner.pretrained(spec.arch, data, augment="side_on", **options)
        clock.mark("fit_start")
        learn.fine_tune(spec.epochs)  # threeline's own defaults, as fastai runs with its own
        defaults = {name: p.default for name, p in
                    inspect.signature(Learner.fine_tune).parameters.items()
                    if name in ("base_lr", "lr_ratio", "freeze_epochs", "head_lr")}
        settings = ", ".join(f"{k}={v:g}" for k, v in defaults.items())
        recipe = f'fine_tune({spec.epochs}) ({settings}), augment="side_on"'
    clock.mark("fit_end")
    result = {
        "recipe": recipe,
        "accuracy": float(learn.history[-1]["accuracy"]),
        "epochs_run": len(learn.history),
        "n_train": len(data.train),
        "n_valid": len(data.valid),
        "tta_accuracy": None,
    }
    if spec.tta:
        clock.mark("tta_start")
        labels = np.asarray(data.valid.labels)
        result["tta_accuracy"] = float((learn.tta().argmax(1) == labels).mean())
        clock.mark("tta_end")
    return result
