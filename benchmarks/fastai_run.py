"""fastai 2.8's side of the comparison, written as its documentation teaches.

frozen:   ``vision_learner(dls, arch)`` (body frozen, fastai's default ``train_bn=True``) then
          ``learn.fit_one_cycle(epochs, lr)``: every epoch runs the images through the body.
finetune: the same learner with ``batch_tfms=aug_transforms()``, then
          ``learn.fine_tune(epochs, base_lr=...)`` (one frozen epoch, then ``epochs`` unfrozen).

The timm backbone gets the same local ImageNet weights as the other frameworks through
``pretrained_cfg_overlay=dict(file=...)``, which ``vision_learner`` hands on to
``timm.create_model``. On CUDA the learner trains in bfloat16 mixed precision (``to_bf16``),
as threeline does.
"""

from __future__ import annotations

from pathlib import Path

import stand_ins

STAND_INS = stand_ins.install()

import fastai  # noqa: E402
import torch  # noqa: E402
from fastai.vision.all import (  # noqa: E402
    CategoryBlock,
    DataBlock,
    ImageBlock,
    IndexSplitter,
    Resize,
    accuracy,
    aug_transforms,
    set_seed,
    vision_learner,
)


def run(spec, selection, clock) -> dict:
    set_seed(spec.seed)
    clock.mark("start")
    pairs = selection.train + selection.valid
    files = [Path(f) for f, _ in pairs]
    names = {Path(f): selection.classes[label] for f, label in pairs}

    def label_of(path: Path) -> str:  # a plain function: fastai dispatches on its signature
        return names[path]

    finetune = spec.mode == "finetune"
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=lambda _: files,
        get_y=label_of,
        splitter=IndexSplitter(list(range(len(selection.train), len(files)))),
        item_tfms=Resize(spec.size),
        batch_tfms=aug_transforms() if finetune else None,
    )
    dls = block.dataloaders(selection.root, bs=spec.batch_size, device=torch.device(spec.device))
    learn = vision_learner(dls, spec.timm_name, metrics=accuracy, pretrained=True,
                           pretrained_cfg_overlay=dict(file=spec.weights))
    if spec.device.startswith("cuda"):
        learn = learn.to_bf16()
    clock.mark("fit_start")
    with learn.no_bar(), learn.no_logging():
        if finetune:
            learn.fine_tune(spec.epochs, base_lr=spec.finetune_lr)
            recipe = f"fine_tune({spec.epochs}, base_lr={spec.finetune_lr:g}), aug_transforms()"
        else:
            learn.fit_one_cycle(spec.epochs, spec.lr)
            recipe = f"fit_one_cycle({spec.epochs}, {spec.lr:g}), frozen body"
    clock.mark("fit_end")
    result = {
        "recipe": recipe,
        "accuracy": float(learn.recorder.values[-1][-1]),
        "epochs_run": spec.epochs + 1 if finetune else spec.epochs,
        "n_train": len(dls.train_ds),
        "n_valid": len(dls.valid_ds),
        "tta_accuracy": None,
        "fastai_version": fastai.__version__,
        "stand_ins": STAND_INS,
    }
    if spec.tta:
        clock.mark("tta_start")
        with learn.no_bar(), learn.no_logging():
            preds, targets = learn.tta()
        result["tta_accuracy"] = float((preds.argmax(1) == targets).float().mean())
        clock.mark("tta_end")
    return result
