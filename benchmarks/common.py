"""What every benchmark run shares: the file lists, the clock and the memory reading.

Each run happens in its own process (see ``run_one.py``) and gets the same explicit lists of
training and validation files, so every framework trains and validates on exactly the same images.
The clock is read the same way for all: ``start`` before the data pipeline is built, ``fit_start``
once the model is ready, ``fit_end`` after the last epoch's validation (CUDA synchronised).
"""

from __future__ import annotations

import json
import os
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"}
VALID_NAMES = ("valid", "val", "validation")


@dataclass
class Selection:
    """Classes and the (file, label) pairs of each split; labels index into ``classes``."""

    root: str
    classes: list[str]
    train: list[tuple[str, int]]
    valid: list[tuple[str, int]]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        raw = json.loads(Path(path).read_text())
        return cls(raw["root"], raw["classes"], [tuple(p) for p in raw["train"]],
                   [tuple(p) for p in raw["valid"]])

    def files(self) -> list[str]:
        return [f for f, _ in self.train + self.valid]


def _images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def select_files(root: str | Path, max_train: int | None = None, max_valid: int | None = None,
                 seed: int = 0) -> Selection:
    """The train/ and valid/ (or val/) images of ``root``, optionally a balanced seeded subset.

    ``max_train`` / ``max_valid`` cap the number of images per split, split evenly between the
    classes; which images are kept depends only on ``seed`` (not on the run's seed), so every
    framework and every repeat sees the same subset.
    """
    root = Path(root)
    valid_dir = next((root / n for n in VALID_NAMES if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or valid_dir is None:
        raise SystemExit(f"{root} needs train/<class>/ and valid/<class>/ (or val/) folders.")
    classes = sorted(p.name for p in (root / "train").iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    rng = random.Random(seed)

    def pick(folder: Path, cap: int | None) -> list[tuple[str, int]]:
        out = []
        for label, name in enumerate(classes):
            files = _images(folder / name)
            if cap is not None and len(files) > cap // len(classes):
                files = sorted(rng.sample(files, cap // len(classes)))
            out += [(f, label) for f in files]
        return out

    return Selection(str(root), classes, pick(root / "train", max_train),
                     pick(valid_dir, max_valid))


def read_all(files: list[str]) -> int:
    """Read every file once, so that no run pays for a cold disk cache. Returns the bytes read."""
    total = 0
    for f in files:
        with open(f, "rb") as handle:
            total += len(handle.read())
    return total


@dataclass
class Spec:
    """One run: which framework, on what, for how long. Written as JSON for ``run_one.py``."""

    framework: str  # "threeline" | "fastai" | "torch"
    task: str
    mode: str  # "frozen" | "finetune"
    seed: int
    arch: str  # threeline's registry name, e.g. "efficientnet_lite0"
    timm_name: str
    weights: str  # the local safetensors file of the ImageNet weights
    selection: str  # path of a Selection JSON
    size: int
    epochs: int  # frozen: epochs of head training; finetune: epochs after the frozen one
    lr: float
    finetune_lr: float
    torch_lr: float
    batch_size: int
    device: str
    cache_dir: str = ""  # threeline's activation cache for this run
    warm_cache: bool = False  # threeline: the cache was filled by an earlier run
    tta: bool = True
    extra: dict = field(default_factory=dict)


class Clock:
    """Wall-clock marks, read with ``time.perf_counter`` after a CUDA synchronise.

    The peak memory is read at ``fit_end``, so test-time augmentation does not count in it.
    """

    def __init__(self, device: str):
        self.device = device
        self.marks: dict[str, float] = {}
        self.peak: tuple[str, float] | None = None

    def mark(self, name: str) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        self.marks[name] = time.perf_counter()
        if name == "fit_end":
            self.peak = peak_memory_mib(self.device)

    def between(self, a: str, b: str) -> float:
        return self.marks[b] - self.marks[a]


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib(device: str) -> tuple[str, float]:
    """("gpu", peak bytes allocated by torch) on CUDA, else ("rss", peak resident set), in MiB."""
    if device.startswith("cuda"):
        import torch

        return "gpu", torch.cuda.max_memory_allocated() / 2**20
    return "rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def publish(lines: list[str], out: Path | None, name: str) -> None:
    """Print a report's markdown lines; with ``out``, also write them to ``out/name``."""
    print("\n".join(lines))
    if out:
        path = Path(out) / name
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path}")
