"""From-scratch ResNets: shapes for every depth and stem, real training on CIFAR-10 images
through the core Learner, and the save/load round trip of a model of one's own."""

from __future__ import annotations

import pytest
import torch

import cifar_images
from threeline.learner import Learner
from threeline.losses import CrossEntropy
from threeline.models.resnet import FastResNet, fast_resnet, resnet
from threeline.saving import ModelFileError


@pytest.mark.parametrize(("depth", "small_input", "size", "features"), [
    (9, True, 32, 128), (10, True, 32, 128), (18, True, 32, 128), (34, True, 32, 128),
    (50, True, 32, 512), (101, True, 32, 512),
    (10, False, 64, 128), (18, False, 64, 128), (34, False, 64, 128), (50, False, 64, 512),
    (101, False, 64, 512),
])
def test_shapes_for_every_depth_and_stem(depth, small_input, size, features):
    torch.manual_seed(0)
    model = resnet(depth, n_classes=7, small_input=small_input, width=16).eval()  # (w=16)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    last = model.fc if depth == 9 else model.head[-1]
    assert last.in_features == features
    if depth != 9:  # the small stem keeps full resolution; the ImageNet stem divides by 4
        stem_out = model.stem(x)
        assert stem_out.shape[-1] == (size if small_input else size // 4)


def test_depth_9_is_the_fast_network_for_small_images():
    assert isinstance(resnet(depth=9, n_classes=10), FastResNet)
    assert resnet(depth=18).stem[0][0].kernel_size == (7, 7)  # the ImageNet stem by default


def test_each_residual_branch_starts_as_identity():
    """Zero-initialised last BatchNorm scale: a block's output is relu(shortcut) at start."""
    block = resnet(18, small_input=True).stages[0][0].train()
    x = torch.randn(4, 64, 8, 8)
    assert torch.equal(block(x), torch.relu(x))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"depth": 20}, "depth must be one of"),
    ({"depth": 9, "small_input": False}, "32 px images"),
    ({"depth": 18, "n_classes": 0}, "n_classes"),
    ({"depth": 18, "width": 2.5}, "width"),
])
def test_bad_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resnet(**kwargs)


def test_fast_resnet_checks_its_scale():
    with pytest.raises(ValueError, match="scale"):
        fast_resnet(scale=0)


@pytest.fixture(scope="module")
def cifar_small():
    return cifar_images.cifar_small()


@pytest.fixture(scope="module")
def trained(cifar_small) -> Learner:
    torch.manual_seed(0)
    model = fast_resnet(n_classes=10, width=8)
    learn = Learner(model, cifar_small, loss=CrossEntropy(label_smoothing=0.1), device="cpu",
                    progress=False)
    learn.checkpoint_dir = False
    learn.fit(1e-2, 5)
    return learn


def test_small_resnet_learns_cifar(trained):
    accuracy = trained.history[-1]["accuracy"]
    # 200 validation images, 10 classes: chance is 10 % (2.1 points standard deviation)
    assert accuracy >= 0.25, f"accuracy {accuracy:.3f} after 5 epochs"
    losses = [row["train_loss"] for row in trained.history]
    assert losses[-1] < losses[0]


def test_save_and_load_a_model_of_ones_own(trained, cifar_small, tmp_path):
    trained.save(tmp_path / "model")
    loaded = Learner.load(tmp_path / "model", model=fast_resnet(n_classes=10, width=8),
                          device="cpu")
    for key, value in trained.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    batches = list(cifar_small.batches("valid", torch.device("cpu"), False, 0))
    before, y = trained.get_preds(batches)
    after, _ = loaded.get_preds(batches)
    assert torch.equal(before, after)
    assert float((after.argmax(1) == y).float().mean()) == pytest.approx(
        trained.history[-1]["accuracy"])
    assert loaded.history == trained.history
    with pytest.raises(ModelFileError, match="do not fit"):
        Learner.load(tmp_path / "model", model=resnet(18, n_classes=10, small_input=True),
                     device="cpu")
