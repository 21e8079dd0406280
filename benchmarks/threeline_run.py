"""threeline's side of the comparison: the three lines a user writes, timed.

The selected files are linked into a folder of their own (train/ and valid/, a folder per class)
before the clock starts, so ``ImageData.from_folder`` scans what a user's folder would hold, as
the other frameworks get the same file lists directly.

frozen:   ``Learner.pretrained(arch, data, precompute=True)`` then ``learn.fit(lr, epochs)``.
          The body's activations are computed inside ``fit`` (so they are on the clock), in a fresh
          cache folder; a ``warm_cache`` run reuses the folder an earlier run filled.
finetune: ``Learner.pretrained(arch, data, augment="side_on")`` then
          ``learn.fine_tune(epochs, base_lr=...)``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from threeline import ImageData, Learner


def linked_folder(selection, folder: Path) -> Path:
    """``folder``/{train,valid}/<class>/ holding a symbolic link per selected file (made once;
    the same folder, hence the same activation cache key, for every run of this selection)."""
    for split, pairs in (("train", selection.train), ("valid", selection.valid)):
        for file, label in pairs:
            link = folder / split / selection.classes[label] / Path(file).name
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path(file).resolve())
    return folder


def run(spec, selection, clock) -> dict:
    root = linked_folder(selection, Path(spec.selection).with_suffix(".folder"))
    clock.mark("start")
    data = ImageData.from_folder(root, size=spec.size, batch_size=spec.batch_size)
    assert (len(data.train), len(data.valid)) == (len(selection.train), len(selection.valid))
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
                    inspect.signature(type(learn).fine_tune).parameters.items()
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
