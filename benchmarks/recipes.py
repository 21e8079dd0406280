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
                  mode: str = "fine_tune", epochs: int = 3, seed: int = 0,
                  lr: float | None = None, batch_size: int = 64,
                  augment: str | None = "side_on", tta: bool = True, compile: bool = False,
                  lr_ratio: float | None = None, freeze_epochs: int | None = None,
                  head_lr: float | None = None, max_train: int | None = None,
                  device: str | None = None) -> dict:
    """Train one recipe from scratch and measure it.

    Args:
        path: an image folder (see :meth:`threeline.ImageData.from_folder`).
        mode: ``"precompute"`` (head on cached activations, one-cycle), ``"frozen"`` (head only,
            on augmented images), ``"one_cycle"`` / ``"sgdr"`` (whole network, ``epochs``
            epochs, differential rates ``slice(lr / lr_ratio, lr)``; SGDR uses cycle_len=1),
            or ``"fine_tune"`` (:meth:`Learner.fine_tune`; ``lr`` is its ``base_lr``). Settings
            left None take the library's defaults (fine_tune), else lr 1e-2 for the head alone
            ("precompute", "frozen") and 2e-3 for the whole network, lr_ratio 100.
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
        learn.fit(lr or 1e-2, epochs)
    elif mode in ("one_cycle", "sgdr"):
        learn.unfreeze()
        rates = slice((lr or 2e-3) / (lr_ratio or 100), lr or 2e-3)
        if mode == "sgdr":
            learn.fit(rates, epochs, cycle_len=1)
        else:
            learn.fit(rates, epochs)
    elif mode == "fine_tune":
        chosen = dict(base_lr=lr, freeze_epochs=freeze_epochs, lr_ratio=lr_ratio, head_lr=head_lr)
        learn.fine_tune(epochs, **{k: v for k, v in chosen.items() if v is not None})
    else:
        raise ValueError(f"Unknown mode {mode!r}; expected precompute, frozen, one_cycle, sgdr "
                         f"or fine_tune.")
    if learn.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = learn.validate()
    valid_loss, accuracy = result["valid_loss"], result["accuracy"]
    tta_accuracy = None
    if tta:
        labels = np.asarray(data.valid.labels)
        tta_accuracy = float((learn.tta(n=4).argmax(1) == labels).mean())
    return {"arch": arch, "size": size, "mode": mode, "epochs": epochs, "lr": lr,
            "lr_ratio": lr_ratio, "head_lr": head_lr, "freeze_epochs": freeze_epochs,
            "augment": augment, "compile": compile, "seed": seed,
            "accuracy": accuracy, "tta_accuracy": tta_accuracy, "valid_loss": valid_loss,
            "seconds": seconds, "device": learn.device.type, "n_train": len(data.train)}


def recipes(small: bool, epochs: int) -> list[tuple[str, dict]]:
    """(label, run_threeline arguments) for each row of the comparison."""
    rows = [
        ("precompute, head only", dict(mode="precompute", lr=1e-2, epochs=3, tta=False)),
        ("one_cycle, whole net", dict(mode="one_cycle", epochs=epochs)),
        ("SGDR cycle_len=1", dict(mode="sgdr", epochs=epochs)),
        (f"fine_tune({epochs - 1}) (defaults)", dict(mode="fine_tune", epochs=epochs - 1)),
        (f"fine_tune({epochs + 1}) (defaults)", dict(mode="fine_tune", epochs=epochs + 1)),
        ("fine_tune base_lr=5e-4", dict(mode="fine_tune", epochs=epochs - 1, lr=5e-4)),
        ("fine_tune base_lr=2e-3", dict(mode="fine_tune", epochs=epochs - 1, lr=2e-3)),
        ("fine_tune lr_ratio=100", dict(mode="fine_tune", epochs=epochs - 1, lr_ratio=100)),
        ("fine_tune head_lr=3e-3", dict(mode="fine_tune", epochs=epochs - 1, head_lr=3e-3)),
        ("fine_tune 1 head epoch", dict(mode="fine_tune", epochs=epochs - 1, freeze_epochs=1)),
        ("fine_tune, no augmentation", dict(mode="fine_tune", epochs=epochs - 1, augment=None)),
    ]
    if not small:
        rows.append(("fine_tune + torch.compile", dict(mode="fine_tune", epochs=epochs - 1,
                                                       compile=True)))
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
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
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
    seeds = [int(x) for x in args.seeds.split(",")]
    results = []
    print(f"dataset {args.path}, {args.arch} at {size} px, seeds {seeds}, device "
          f"{'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}",
          flush=True)
    for label, kwargs in recipes(args.small, epochs):
        if args.only and not any(part in label for part in args.only.split(",")):
            continue
        for seed in seeds:
            result = run_threeline(args.path, args.arch, size, seed=seed,
                                   batch_size=args.batch_size, max_train=args.max_train, **kwargs)
            result["label"] = label
            results.append(result)
            tta = result["tta_accuracy"]
            print(f"  {label}, seed {seed}: {result['accuracy']:.4f} (TTA "
                  f"{'-' if tta is None else f'{tta:.4f}'}) in {result['seconds']:.1f} s",
                  flush=True)
    print()
    print(table(results))
    return results


def table(results: list[dict]) -> str:
    """Markdown: one row per recipe; medians over seeds, with the range when several."""

    def cell(values: list, fmt: str) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        mid = fmt.format(float(np.median(values)))
        if len(values) == 1:
            return mid
        return f"{mid} ({fmt.format(min(values))}–{fmt.format(max(values))})"

    lines = ["| recipe | epochs | seeds | accuracy | TTA accuracy | valid loss | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label in dict.fromkeys(r["label"] for r in results):
        rows = [r for r in results if r["label"] == label]
        lines.append(
            f"| {label} | {rows[0]['epochs']} | {len(rows)} | "
            f"{cell([100 * r['accuracy'] for r in rows], '{:.2f} %')} | "
            f"{cell([None if r['tta_accuracy'] is None else 100 * r['tta_accuracy'] for r in rows], '{:.2f} %')} | "  # noqa: E501
            f"{cell([r['valid_loss'] for r in rows], '{:.4f}')} | "
            f"{cell([r['seconds'] for r in rows], '{:.1f}')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
