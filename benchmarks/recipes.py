"""Measure training recipes side by side and print a markdown table, to choose the defaults.

Compares, on one dataset: the one-cycle schedule against SGDR (cosine with warm restarts), the
fine_tune recipe at a few settings, and torch.compile on and off. Every row is a fresh learner
with the same seed; accuracy is on the validation set, with and without test-time augmentation.

    python benchmarks/recipes.py ../shared/data/hymenoptera --small       # CPU, minutes
    python benchmarks/recipes.py ../shared/data/dogscats --arch efficientnet_lite2 --size 260

Other scripts can import :func:`run_threeline`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from threeline import ImageData, Learner


def run_threeline(path: str | os.PathLike, arch: str = "efficientnet_lite0", size: int = 224,
                  mode: str = "fine_tune", epochs: int = 3, seed: int = 0, lr: float = 2e-3,
                  batch_size: int = 64, augment: str | None = "side_on", tta: bool = True,
                  compile: bool = False, lr_ratio: float = 100.0, freeze_epochs: int = 1,
                  max_train: int | None = None, device: str | None = None) -> dict:
    """Train one recipe from scratch and measure it.

    Args:
        path: an image folder (see :meth:`threeline.ImageData.from_folder`).
        mode: ``"precompute"`` (head on cached activations, one-cycle), ``"frozen"`` (head only,
            on augmented images), ``"one_cycle"`` / ``"sgdr"`` (whole network, ``epochs``
            epochs, differential rates ``slice(lr / lr_ratio, lr)``; SGDR uses cycle_len=1),
            or ``"fine_tune"`` (:meth:`Learner.fine_tune`).
        max_train: use only this many training images (a seeded sample), for quick runs.

    Returns:
        dict with accuracy, tta_accuracy (None when tta=False), valid_loss, seconds (training
        time, activation cache included), epochs and the settings.

    Example:
        >>> r = run_threeline("data/hymenoptera", size=128, mode="precompute")  # doctest: +SKIP
        >>> sorted(r)[:3]  # doctest: +SKIP
        ['accuracy', 'arch', 'augment']
    """
    torch.manual_seed(seed)
    data = ImageData.from_folder(path, size=size, batch_size=batch_size)
    if max_train is not None and max_train < len(data.train):
        keep = np.random.default_rng(seed).permutation(len(data.train))[:max_train]
        data.train.files = [data.train.files[i] for i in sorted(keep)]
        data.train.labels = [data.train.labels[i] for i in sorted(keep)]
    precompute = mode == "precompute"
    learn = Learner.pretrained(arch, data, precompute=precompute, seed=seed, progress=False,
                               device=device, augment=None if precompute else augment)
    learn.compile = compile
    start = time.perf_counter()
    if mode in ("precompute", "frozen"):
        learn.fit(lr, epochs)
    elif mode in ("one_cycle", "sgdr"):
        learn.unfreeze()
        rates = slice(lr / lr_ratio, lr)
        if mode == "sgdr":
            learn.fit(rates, epochs, cycle_len=1)
        else:
            learn.fit(rates, epochs)
    elif mode == "fine_tune":
        learn.fine_tune(epochs, base_lr=lr, freeze_epochs=freeze_epochs, lr_ratio=lr_ratio)
    else:
        raise ValueError(f"Unknown mode {mode!r}; expected precompute, frozen, one_cycle, sgdr "
                         f"or fine_tune.")
    if learn.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    valid_loss, accuracy = learn.validate()
    tta_accuracy = None
    if tta:
        labels = np.asarray(data.valid.labels)
        tta_accuracy = float((learn.tta(n=4).argmax(1) == labels).mean())
    return {"arch": arch, "size": size, "mode": mode, "epochs": epochs, "lr": lr,
            "lr_ratio": lr_ratio, "augment": augment, "compile": compile, "seed": seed,
            "accuracy": accuracy, "tta_accuracy": tta_accuracy, "valid_loss": valid_loss,
            "seconds": seconds, "device": learn.device.type, "n_train": len(data.train)}


def recipes(small: bool, epochs: int) -> list[tuple[str, dict]]:
    """(label, run_threeline arguments) for each row of the comparison."""
    rows = [
        ("precompute, head only", dict(mode="precompute", lr=1e-2, epochs=3, tta=False)),
        ("one_cycle, whole net", dict(mode="one_cycle", epochs=epochs)),
        ("SGDR cycle_len=1", dict(mode="sgdr", epochs=epochs)),
        ("fine_tune lr=1e-3 ratio=10 (default)", dict(mode="fine_tune", epochs=epochs - 1,
                                                      lr=1e-3, lr_ratio=10)),
        ("fine_tune lr=2e-3 ratio=100", dict(mode="fine_tune", epochs=epochs - 1, lr=2e-3,
                                             lr_ratio=100)),
        ("fine_tune lr=5e-4 ratio=10", dict(mode="fine_tune", epochs=epochs - 1, lr=5e-4,
                                            lr_ratio=10)),
    ]
    if not small:
        rows.append(("fine_tune + torch.compile", dict(mode="fine_tune", epochs=epochs - 1,
                                                       lr=1e-3, lr_ratio=10, compile=True)))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every recipe on the dataset given and print a markdown table.

    Example:
        >>> main(["data/hymenoptera", "--small"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=None,
                        help="image size (default 224; 128 with --small)")
    parser.add_argument("--epochs", type=int, default=None, help="default 5; 2 with --small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=None,
                        help="use at most this many training images")
    parser.add_argument("--small", action="store_true",
                        help="CPU-sized run: size 128, 2 epochs, no torch.compile row")
    parser.add_argument("--only", default=None,
                        help="run only rows whose label contains one of these (comma-separated)")
    args = parser.parse_args(argv)
    size = args.size or (128 if args.small else 224)
    epochs = args.epochs or (2 if args.small else 5)
    results = []
    print(f"dataset {args.path}, {args.arch} at {size} px, seed {args.seed}, device "
          f"{'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}",
          flush=True)
    for label, kwargs in recipes(args.small, epochs):
        if args.only and not any(part in label for part in args.only.split(",")):
            continue
        result = run_threeline(args.path, args.arch, size, seed=args.seed,
                               batch_size=args.batch_size, max_train=args.max_train, **kwargs)
        result["label"] = label
        results.append(result)
        print(f"  {label}: {result['accuracy']:.4f} in {result['seconds']:.1f} s", flush=True)
    print()
    print("| recipe | epochs | accuracy | TTA accuracy | valid loss | seconds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        tta = f"{r['tta_accuracy']:.2%}" if r["tta_accuracy"] is not None else "-"
        print(f"| {r['label']} | {r['epochs']} | {r['accuracy']:.2%} | {tta} | "
              f"{r['valid_loss']:.4f} | {r['seconds']:.1f} |")
    return results


if __name__ == "__main__":
    main()
