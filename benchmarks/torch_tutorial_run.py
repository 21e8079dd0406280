"""A plain PyTorch loop in the style of the PyTorch transfer-learning tutorial.

The tutorial's recipe: a pretrained network whose classifier is replaced by a new linear layer,
torchvision transforms (random-resized crops and flips to train; resize and center crop to
validate), SGD with momentum 0.9 and a step decay (x0.1 every 7 epochs), a train phase and a
validation phase each epoch, and two variants -- train the whole network, or freeze everything but
the new layer ("ConvNet as fixed feature extractor").

Deviations, to keep the comparison about the frameworks: the backbone, its weights, the image size,
the epochs and the batch size are those of the other frameworks (the tutorial uses ResNet-18 and
batches of 4, so its learning rate 0.001 becomes ``spec.torch_lr``); data loading uses as many
workers as fastai does; the frozen variant trains without augmentation, like the others; the
final epoch's model is scored (the tutorial keeps the best epoch on the validation set); on CUDA
the forward passes run in bfloat16 autocast, like threeline's and fastai's.
"""

from __future__ import annotations

import contextlib
import math
import random

import numpy as np
import timm
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from common import cpu_count


class Files(Dataset):
    """(file, label) pairs -> (transformed image, label), as torchvision's ImageFolder yields."""

    def __init__(self, pairs, transform):
        self.pairs, self.transform = pairs, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        path, label = self.pairs[index]
        with open(path, "rb") as handle:
            image = Image.open(handle).convert("RGB")
        return self.transform(image), label


def make_transforms(size: int, config: dict, augment: bool):
    interpolation = transforms.InterpolationMode(config.get("interpolation", "bicubic"))
    normalize = transforms.Normalize(config["mean"], config["std"])
    evaluate = transforms.Compose([
        transforms.Resize(math.floor(size / config.get("crop_pct", 0.875)), interpolation),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        normalize,
    ])
    if not augment:
        return evaluate, evaluate
    train = transforms.Compose([
        transforms.RandomResizedCrop(size, interpolation=interpolation),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        normalize,
    ])
    return train, evaluate


def run(spec, selection, clock) -> dict:
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    device = torch.device(spec.device)
    cuda = device.type == "cuda"
    finetune = spec.mode == "finetune"
    clock.mark("start")

    model = timm.create_model(spec.timm_name, pretrained=True,
                              pretrained_cfg_overlay=dict(file=spec.weights))
    # the tutorial's step: replace the ImageNet classifier by a fresh nn.Linear (default init)
    model.classifier = nn.Linear(model.num_features, len(selection.classes))
    config = timm.data.resolve_data_config({}, model=model)
    train_tf, valid_tf = make_transforms(spec.size, config, augment=finetune)
    workers = min(16, cpu_count())
    loaders = {
        "train": DataLoader(Files(selection.train, train_tf), batch_size=spec.batch_size,
                            shuffle=True, num_workers=workers, pin_memory=cuda),
        "valid": DataLoader(Files(selection.valid, valid_tf), batch_size=spec.batch_size,
                            shuffle=False, num_workers=workers, pin_memory=cuda),
    }
    model = model.to(device)
    if not finetune:  # a fixed feature extractor: only the new classifier learns
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                lr=spec.torch_lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    epochs = spec.epochs + 1 if finetune else spec.epochs  # as many passes as fine_tune makes

    clock.mark("fit_start")
    accuracy = float("nan")
    for _ in range(epochs):
        for phase in ("train", "valid"):
            training = phase == "train"
            model.train(training)
            correct = torch.zeros((), dtype=torch.long, device=device)
            for images, labels in loaders[phase]:
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
                            else contextlib.nullcontext())
                with torch.set_grad_enabled(training), autocast:
                    outputs = model(images)
                    loss = criterion(outputs.float(), labels)
                if training:
                    loss.backward()
                    optimizer.step()
                correct += (outputs.argmax(1) == labels).sum()
            if training:
                scheduler.step()
            else:
                accuracy = correct.item() / len(selection.valid)
    clock.mark("fit_end")
    return {
        "recipe": (f"SGD({spec.torch_lr:g}, momentum=0.9), {epochs} epochs, "
                   + ("whole network, crop+flip" if finetune else "classifier only")),
        "accuracy": accuracy,
        "epochs_run": epochs,
        "n_train": len(selection.train),
        "n_valid": len(selection.valid),
        "tta_accuracy": None,
    }
