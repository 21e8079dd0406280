"""A model of your own trains on an image folder: ``Learner(resnet(...), ImageData)``.

Real data: CIFAR-10 JPEGs from ../shared/data/cifar10 (via ``shared_dataset``). Two small
folders are built once per module in a temporary folder:

* ``rgb``: 150 images of each of 3 classes (airplane, automobile, frog), as symbolic links to
  the real 32 px JPEGs;
* ``gray``: the same images made "MNIST-style" with Pillow: converted to grayscale (mode L),
  resized to 28 x 28 and saved as PNG. They are real photos turned gray, not real digits.

Models are tiny (width 8) so that 3 epochs on a busy 2-core CPU take a few seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import shared_dataset
from threeline import ImageData, Learner
from threeline.models import fast_convnet, resnet
from threeline.vision import squares
from threeline.vision.resident import ResidentImages, TooLargeError
from threeline.vision.solve import one_cpu_thread
from threeline.vision.squares import SquareImage, decode_squares

CLASSES = ("airplane", "automobile", "frog")
PER_CLASS = 150
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    source = shared_dataset("cifar10") / "train"
    root = tmp_path_factory.mktemp("from-scratch")
    for name in CLASSES:
        (root / "rgb" / name).mkdir(parents=True)
        (root / "gray" / name).mkdir(parents=True)
        for path in sorted((source / name).glob("*.jpg"))[:PER_CLASS]:
            (root / "rgb" / name / path.name).symlink_to(path.resolve())
            with Image.open(path) as image:
                gray = image.convert("L").resize((28, 28), Image.Resampling.BICUBIC)
                gray.save(root / "gray" / name / f"{path.stem}.png")
    return {"rgb": root / "rgb", "gray": root / "gray"}


def load(folder: Path, **kwargs) -> ImageData:
    return ImageData.from_folder(folder, valid_pct=0.2, batch_size=32, verbose=False, **kwargs)


@pytest.fixture(scope="module")
def rgb(folders) -> ImageData:
    return load(folders["rgb"], size=32)


@pytest.fixture(scope="module")
def gray(folders) -> ImageData:
    return load(folders["gray"])  # size None: the images' own 28 px


def first(batches):
    return next(iter(batches))


def test_rgb_batches_shapes_and_types(rgb):
    assert rgb.channels == 3
    assert rgb.steps("train") == len(rgb.train) // 32
    assert rgb.steps("valid") == -(-len(rgb.valid) // 64)
    x, y = first(rgb.batches("train", CPU, True, 0))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert y.shape == (32,) and y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}
    xv, yv = first(rgb.batches("valid", CPU, False, 0))
    assert xv.shape == (64, 3, 32, 32) and yv.shape == (64,)  # twice the batch size


def test_training_batches_are_normalised(rgb):
    plain = rgb.on_device(augment=False)
    x = torch.cat([x for x, _ in plain.batches("train", CPU, True, 0)])  # (N, 3, 32, 32)
    per_channel = x.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(1).abs().max() < 0.02
    assert (per_channel.std(1) - 1).abs().max() < 0.02


def test_augmentation_changes_training_batches_only(rgb):
    augmented, plain = rgb.on_device(), rgb.on_device(augment=False)
    (xa, ya), (xp, yp) = (first(d.batches("train", CPU, True, 5)) for d in (augmented, plain))
    assert torch.equal(ya, yp)  # the same images, in the same order
    assert not torch.equal(xa, xp)  # cropped and flipped
    again, _ = first(augmented.batches("train", CPU, True, 5))
    assert torch.equal(xa, again)  # the seed decides the augmentation
    other, _ = first(augmented.batches("train", CPU, True, 6))
    assert not torch.equal(xa, other)
    valid = [first(d.batches("valid", CPU, False, s))[0] for d, s in ((augmented, 0),
                                                                      (plain, 1))]
    assert torch.equal(*valid)
    flipped, _ = first(augmented.with_flipped_valid().batches("valid", CPU, False, 0))
    assert torch.equal(flipped, valid[0].flip(3))  # flip test-time augmentation
    moved, _ = first(augmented.options(shift_valid=(1, -2)).batches("valid", CPU, False, 0))
    assert torch.equal(moved[:, :, :-1, 2:], valid[0][:, :, 1:, :-2])  # down 1, left 2
    assert torch.equal(moved[:, :, -1], valid[0][:, :, -2, list(range(2, 0, -1)) + list(
        range(0, 30))])  # the last row reflects; its first columns too
    with pytest.raises(ValueError, match="shift_valid"):
        augmented.options(shift_valid=(32, 0))
    with pytest.raises(ValueError, match="shift_valid"):  # one number: the clear error too
        augmented.options(shift_valid=1)


def test_grayscale_keeps_one_channel_at_its_own_size(gray, folders):
    assert gray.channels == 1
    x, _ = first(gray.batches("train", CPU, True, 0))
    assert x.shape == (32, 1, 28, 28)
    resident = gray.on_device()
    assert resident.images.shape[1:] == (28, 28, 1) and resident.pad == 3
    with Image.open(gray.train.files[0]) as image:  # already 28 px: not resampled
        assert np.array_equal(resident.images[0, :, :, 0].numpy(), np.asarray(image))


def test_mixed_gray_and_color_files_get_three_channels(folders):
    files = [next((folders[k] / "frog").iterdir()) for k in ("gray", "rgb")]
    images, _, failed = decode_squares(files, [0, 1], 32, num_workers=0)
    assert images.shape == (2, 32, 32, 3) and failed == []
    assert torch.equal(images[0, ..., 0], images[0, ..., 2])  # the gray one, repeated
    assert SquareImage(32)(Image.new("LA", (50, 40))).shape == (1, 32, 32)


def fit(model: nn.Module, data, epochs: int, lr: float,
        optimizer: str = "adamw") -> tuple[Learner, list[dict]]:
    torch.manual_seed(0)
    learn = Learner(model, data, device="cpu", progress=False)
    learn.checkpoint_dir, learn.optimizer = False, optimizer
    # tiny models gain nothing from a second thread, and on a busy CPU lose a lot to it
    with one_cpu_thread(torch.device("cpu")), contextlib.redirect_stdout(io.StringIO()):
        rows = learn.fit(lr, epochs)
    return learn, rows


def test_resnet_of_your_own_trains_on_an_rgb_folder(rgb):
    learn, rows = fit(resnet(depth=10, n_classes=3, small_input=True, width=8), rgb, 3, 4e-3)
    assert [m.name for m in learn.metrics] == ["accuracy"]  # CrossEntropy's metric
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["accuracy"] > 0.5  # chance: 1/3


def test_resnet_of_your_own_trains_on_grayscale_images(gray):
    model = resnet(depth=9, n_classes=3, width=8, in_channels=gray.channels)
    learn, rows = fit(model, gray, 3, 1e-2)
    conv = next(m for m in learn.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.in_channels == 1
    assert rows[-1]["accuracy"] > 0.5  # chance: 1/3


def test_the_whitened_convnet_initialises_from_the_folder_and_predicts_files(rgb, gray, folders):
    """fast_convnet's first layer is computed from the first batch of the folder's images."""
    for data in (rgb, gray):
        model = fast_convnet(n_classes=3, widths=(8, 16, 16), in_channels=data.channels)
        learn, rows = fit(model, data, 3, 0.5, optimizer="sgd")
        assert model.initialized and rows[-1]["accuracy"] > 0.5  # chance: 1/3
    files = sorted((folders["gray"] / "frog").glob("*.png"))[:4]
    assert learn.predict([str(f) for f in files]).shape == (4, 3)


def test_your_own_model_predicts_files_and_survives_save_and_load(rgb, gray, tmp_path):
    model = resnet(depth=10, n_classes=3, small_input=True, width=8)
    learn, _ = fit(model, rgb, 2, 4e-3)
    files = rgb.valid.files[:6]
    probs = learn.predict(files)  # decoded, squared and normalised like the training images
    logits, _ = learn.get_preds()  # the validation batches: the same files, in order
    assert probs.shape == (6, 3)
    assert torch.allclose(probs, logits[:6].softmax(1).cpu(), atol=1e-4)
    assert torch.allclose(learn.predict(files[0]), probs[:1], atol=1e-5)  # one path
    learn.save(tmp_path / "mine")
    again = Learner.load(tmp_path / "mine", model=resnet(depth=10, n_classes=3,
                                                          small_input=True, width=8),
                         data=rgb, device="cpu", progress=False)
    assert torch.allclose(again.predict(files), probs, atol=1e-5)
    assert again.history == learn.history
    interp = again.interpret()  # the validation images: top losses, confusion matrix
    assert interp.confusion_matrix().sum() == len(rgb.valid.files)
    assert np.isclose(interp.correct.mean(), learn.history[-1]["accuracy"], atol=1e-6)
    interp.plot_top_losses(4, save=tmp_path / "top.png")
    assert (tmp_path / "top.png").stat().st_size > 1000
    # a colour photo for a grayscale model becomes one channel, at the model's size
    gray_learn = Learner(resnet(depth=9, n_classes=3, width=8, in_channels=1), gray,
                         device="cpu", progress=False)
    assert gray_learn.predict(files[:2]).shape == (2, 3)
    with pytest.raises(TypeError, match="input_batches"):
        Learner(nn.Linear(2, 2), torch_data(), device="cpu").predict([[0.0, 1.0]])


def torch_data():
    from threeline.batches import TensorData

    y = torch.zeros(4, dtype=torch.long)
    return TensorData([torch.zeros(4, 2)], y, [torch.zeros(4, 2)], y, batch_size=2)


def test_too_large_resident_images_are_refused(folders, monkeypatch):
    data = load(folders["rgb"], size=32)
    with pytest.raises(TooLargeError, match=r"GiB.*smaller size.*Learner\.pretrained"):
        data.on_device(max_bytes=100_000)
    monkeypatch.setattr(squares, "memory_budget", lambda: 100_000)
    learn = Learner(resnet(depth=10, n_classes=3, small_input=True, width=8), data,
                    device="cpu", progress=False)
    with pytest.raises(TooLargeError, match="a quarter of the memory"):
        learn.fit(1e-3, 1)


def test_multi_label_images_are_not_supported_yet(rgb):
    tagged = dataclasses.replace(rgb, multi_label=True)
    with pytest.raises(NotImplementedError, match="Learner.pretrained"):
        tagged.steps("train")


def test_resident_images_check_their_input():
    with pytest.raises(ValueError, match="uint8"):
        ResidentImages(torch.zeros(4, 8, 8, 3), torch.zeros(4), [0, 1], [2, 3])
    images = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="pad"):
        ResidentImages(images, torch.zeros(4), [0, 1], [2, 3], pad=8)
    with pytest.raises(ValueError, match="split"):
        ResidentImages(images, torch.zeros(4), [0, 1], [2, 3]).batches("test", CPU, False, 0)
