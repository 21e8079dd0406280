"""Small real folders for ``small_data.py``: seeded subsets of ../shared/data, made of links.

Each case is a folder ``<work>/<case>/seed<k>/`` holding ``train/<class>/`` (links to a seeded,
class-balanced choice of files) and ``valid`` (a link to ``<work>/valid-<source>-<n>/``, one fixed
validation set per source, so every seed of a case is scored on the same images and the
activation cache of the validation split is computed once for all of them). Low-resolution
cases are copies of the source images shrunk to ``pixels`` on the shorter side (JPEG, quality
95), made once under ``<work>/pixels-<source>-<pixels>/``; the learner then upsamples them to
its input size, as a user's folder of 64 px tiles would be.

Sources (under ``--data-root``):

- ``hymenoptera``: its train/ and val/ (ants vs bees, all of it; seeds vary the training only);
- ``dogscats``: train/ for training, valid/ for validation;
- ``cifar10``: only train/ exists; a fixed seeded choice of each class validates, the rest is the
  training pool (32 px JPEGs);
- ``landcover``: the satellite chips that carry exactly one tag (five classes), split like
  cifar10 (224 px chips; shrunk to 64 px they stand for EuroSAT's 64 px tiles).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Case:
    source: str
    per_class: int | None  # training images per class; None: the whole training folder
    valid_per_class: int | None  # None: the whole validation folder
    pixels: int | None = None  # shrink to this shorter side first
    augment: str = "side_on"  # fine_tune's augmentation for this kind of picture


CASES = {
    "hymenoptera": Case("hymenoptera", None, None),
    "dogscats-20": Case("dogscats", 20, 200),
    "dogscats-50": Case("dogscats", 50, 200),
    "dogscats-100": Case("dogscats", 100, 200),
    "cifar10-50": Case("cifar10", 50, 50),
    "cifar10-100": Case("cifar10", 100, 50),
    "landcover64-50": Case("landcover", 50, 50, pixels=64, augment="top_down"),
    "dogscats64-50": Case("dogscats", 50, 200, pixels=64),
    # not small: checks that what helps small folders costs larger ones nothing
    "dogscats-1000": Case("dogscats", 1000, 500),
}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def pools(source: str, root: Path, valid_per_class: int | None
          ) -> tuple[list[str], dict[str, list[Path]], dict[str, list[Path]]]:
    """(classes, training pool per class, validation files per class) of a source folder.

    The validation choice depends only on the source and ``valid_per_class``, never on a seed.
    """
    base = root / source
    if not base.is_dir():
        raise SystemExit(f"{base} is missing: pass --data-root, the folder that holds {source}/.")
    if source in ("hymenoptera", "dogscats"):
        valid_dir = base / ("val" if source == "hymenoptera" else "valid")
        classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
        train = {c: _images(base / "train" / c) for c in classes}
        valid = {c: _images(valid_dir / c) for c in classes}
        if valid_per_class is not None:
            rng = random.Random(f"{source}:valid")
            valid = {c: sorted(rng.sample(v, valid_per_class)) for c, v in valid.items()}
        return classes, train, valid
    if source == "cifar10":
        classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
        every = {c: _images(base / "train" / c) for c in classes}
    elif source == "landcover":
        every = {}
        with open(base / "labels.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                tags = row["tags"].split()
                if len(tags) == 1:
                    file = base / "images" / f"{row['image_name']}.jpg"
                    every.setdefault(tags[0], []).append(file)
        classes = sorted(every)
    else:
        raise SystemExit(f"Unknown source {source!r}.")
    rng = random.Random(f"{source}:valid")
    valid = {c: sorted(rng.sample(files, valid_per_class)) for c, files in every.items()}
    chosen = {c: set(v) for c, v in valid.items()}
    train = {c: [f for f in every[c] if f not in chosen[c]] for c in classes}
    return classes, train, valid


def shrunk(file: Path, pixels: int, folder: Path) -> Path:
    """A copy of ``file`` with its shorter side ``pixels`` long (made once)."""
    from PIL import Image

    out = folder / f"{file.parent.name}-{file.stem}.jpg"
    if not out.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(file) as image:
            image = image.convert("RGB")
            scale = pixels / min(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            tmp = out.with_suffix(".tmp.jpg")
            image.resize(size, Image.Resampling.LANCZOS).save(tmp, quality=95)
            tmp.rename(out)
    return out


def _link_all(files: dict[str, list[Path]], folder: Path, case: Case, work: Path) -> None:
    for label, chosen in files.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for file in chosen:
            if case.pixels is not None:
                file = shrunk(file, case.pixels, work / f"pixels-{case.source}-{case.pixels}")
            link = folder / label / file.name
            if not link.is_symlink():
                link.symlink_to(file.resolve())


def build(name: str, seed: int, root: Path, work: Path) -> tuple[Path, int, int]:
    """The folder of case ``name`` for ``seed``: (folder, training images, validation images).

    Which training files a seed gets depends only on the case's name and the seed.
    """
    case = CASES[name]
    classes, train_pool, valid = pools(case.source, root, case.valid_per_class)
    rng = random.Random(f"{name}:{seed}")
    train = {c: (list(train_pool[c]) if case.per_class is None
                 else sorted(rng.sample(train_pool[c], case.per_class))) for c in classes}
    pixels = f"-{case.pixels}px" if case.pixels else ""
    valid_dir = work / f"valid-{case.source}-{case.valid_per_class or 'all'}{pixels}"
    if not valid_dir.is_dir():
        _link_all(valid, valid_dir.with_suffix(".tmp"), case, work)
        valid_dir.with_suffix(".tmp").rename(valid_dir)
    folder = work / name / f"seed{seed}"
    if not (folder / "valid").is_symlink():
        _link_all(train, folder / "train", case, work)
        (folder / "valid").symlink_to(valid_dir.resolve(), target_is_directory=True)
    return folder, sum(map(len, train.values())), sum(map(len, valid.values()))
