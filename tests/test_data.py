"""ImageData.from_folder on real photos: layouts, labels, the seeded split, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from threeline import ImageData


def _flat_copy(demo: Path, dest: Path) -> Path:
    """root/<class>/*.jpg from the demo's train and valid folders (no valid folder)."""
    for split in ("train", "valid"):
        for cls in (demo / split).iterdir():
            (dest / cls.name).mkdir(parents=True, exist_ok=True)
            for f in cls.iterdir():
                shutil.copy(f, dest / cls.name / f"{split}_{f.name}")
    return dest


def test_train_valid_layout(dogscats_demo):
    data = ImageData.from_folder(dogscats_demo, size=224)
    assert data.classes == ["cats", "dogs"]
    assert len(data.train) == 80 and len(data.valid) == 40
    assert data.train.counts(data.classes) == {"cats": 40, "dogs": 40}
    for split in (data.train, data.valid):
        for f, label in zip(split.files, split.labels, strict=True):
            assert f.parent.name == data.classes[label]
    assert "cats" in repr(data) and "40" in repr(data)


def test_val_folder_name_and_nested_images(dogscats_demo, tmp_path):
    shutil.copytree(dogscats_demo / "train", tmp_path / "train")
    shutil.copytree(dogscats_demo / "valid", tmp_path / "val")
    nested = tmp_path / "train" / "cats" / "more" / "deeper"
    nested.mkdir(parents=True)
    first = sorted((tmp_path / "train" / "cats").glob("*.jpg"))[0]
    shutil.copy(first, nested / "extra.jpeg")
    (tmp_path / "train" / "cats" / "notes.txt").write_text("not an image")
    data = ImageData.from_folder(tmp_path)
    assert len(data.valid) == 40
    assert nested / "extra.jpeg" in data.train.files
    assert data.train.counts(data.classes)["cats"] == 41


@pytest.mark.parametrize("with_train_folder", [False, True])
def test_seeded_split_is_deterministic_stratified_and_copies_nothing(
        dogscats_demo, tmp_path, with_train_folder):
    root = tmp_path / "photos"
    _flat_copy(dogscats_demo, root / "train" if with_train_folder else root)
    before = sorted(p for p in root.rglob("*") if p.is_file())
    a = ImageData.from_folder(root, valid_pct=0.25, seed=1)
    b = ImageData.from_folder(root, valid_pct=0.25, seed=1)
    c = ImageData.from_folder(root, valid_pct=0.25, seed=2)
    assert a.valid.files == b.valid.files and a.train.files == b.train.files
    assert set(a.valid.files) != set(c.valid.files)
    assert not set(a.train.files) & set(a.valid.files)
    assert a.valid.counts(a.classes) == {"cats": 15, "dogs": 15}
    assert len(a.train) + len(a.valid) == 120
    assert sorted(p for p in root.rglob("*") if p.is_file()) == before


def test_missing_folder_says_what_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*one sub-folder per class"):
        ImageData.from_folder(tmp_path / "nope")


def test_no_class_folders(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="No class folders found.*one sub-folder per class"):
        ImageData.from_folder(tmp_path)


def test_single_class(dogscats_demo, tmp_path):
    shutil.copytree(dogscats_demo / "train" / "cats", tmp_path / "cats")
    with pytest.raises(ValueError, match="Only one class folder.*at least two"):
        ImageData.from_folder(tmp_path)


def test_valid_class_not_in_train(dogscats_demo, tmp_path):
    shutil.copytree(dogscats_demo / "train", tmp_path / "train")
    shutil.copytree(dogscats_demo / "valid", tmp_path / "valid")
    shutil.copytree(dogscats_demo / "valid" / "cats", tmp_path / "valid" / "lions")
    with pytest.raises(ValueError, match="lions.*Every validation class needs training"):
        ImageData.from_folder(tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 8}, "size must be"), ({"valid_pct": 1.5}, "valid_pct must"),
    ({"batch_size": 0}, "batch_size must"), ({"num_workers": -1}, "num_workers must"),
])
def test_arguments_checked_up_front(dogscats_demo, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageData.from_folder(dogscats_demo, **kwargs)
