"""The whitened convnet: its first layer computed from real CIFAR-10 images, the learner's
data-dependent initialisation (once, saved with the model), and real training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cifar_images
from threeline.learner import Learner
from threeline.losses import CrossEntropy
from threeline.models.convnet import FastConvNet, fast_convnet


@pytest.fixture(scope="module")
def cifar_small():
    return cifar_images.cifar_small()


def train_images(data) -> torch.Tensor:
    return torch.cat([x for x, _ in data.batches("train", torch.device("cpu"), False, 0)])


def test_shapes_and_widths():
    model = fast_convnet(n_classes=7, widths=(8, 16, 24), n_convs=3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.fc.in_features == 24
    assert len(model.blocks[0]) == 4 + 3 * 2  # conv, pool, norm, GELU; (conv, norm, GELU) x 2
    gray = fast_convnet(n_classes=3, in_channels=1, widths=(8, 8, 8))
    assert gray.whiten.filters.shape == (8, 1, 2, 2)
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_classes": 0}, "n_classes"), ({"widths": (8, 8)}, "three positive"),
    ({"widths": (8, 0, 8)}, "three positive"), ({"n_convs": 0}, "n_convs"),
    ({"scale": 0}, "scale"), ({"shift_scale": -1.0}, "shift_scale"),
])
def test_bad_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fast_convnet(**kwargs)


def test_whitening_filters_decorrelate_real_patches(cifar_small):
    """The first half of the stem's outputs, on the images it was fitted on, have the
    covariance diag(lambda / (lambda + eps)): uncorrelated, unit variance where the patch
    variance is well above eps (computed directly from the patches' eigenvalues)."""
    x = train_images(cifar_small)[:400]  # (400, 3, 32, 32)
    model = fast_convnet()
    model.initialize_from(x)
    with torch.no_grad():
        out = F.conv2d(x, model.whiten.filters)[:, :12]  # (B, 12, 31, 31), without the bias
    out = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    out -= out.mean(0)
    got = out.T @ out / len(out)  # (12, 12)
    patches = F.unfold(x, 2).transpose(1, 2).reshape(-1, 12).double()
    patches -= patches.mean(0)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    expected = torch.diag(eigenvalues / (eigenvalues + model.whiten.eps))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)
    assert torch.equal(model.whiten.filters[12:], -model.whiten.filters[:12])


def test_the_learner_initialises_from_data_once_and_it_is_saved(cifar_small, tmp_path):
    torch.manual_seed(0)
    model = fast_convnet(n_classes=10, widths=(8, 16, 16))
    random_filters = model.whiten.filters.clone()
    learn = Learner(model, cifar_small, loss=CrossEntropy(label_smoothing=0.2), device="cpu",
                    progress=False)
    learn.checkpoint_dir, learn.optimizer = False, "sgd"
    assert not model.initialized
    learn.fit(0.5, 1, wd=1e-3)
    assert model.initialized
    fitted = model.whiten.filters.clone()
    assert not torch.equal(fitted, random_filters)
    first = next(iter(cifar_small.batches("train", torch.device("cpu"), True, 0)))[0]
    fresh = fast_convnet(n_classes=10, widths=(8, 16, 16))
    fresh.initialize_from(first)  # the first training batch of the first epoch
    torch.testing.assert_close(fresh.whiten.filters, fitted)
    learn.fit(0.5, 1, wd=1e-3)  # a second fit keeps the filters
    assert torch.equal(model.whiten.filters, fitted)
    learn.save(tmp_path / "convnet")
    loaded = Learner.load(tmp_path / "convnet", model=fast_convnet(n_classes=10,
                                                                    widths=(8, 16, 16)),
                          device="cpu")
    assert isinstance(loaded.model, FastConvNet) and loaded.model.initialized
    assert torch.equal(loaded.model.whiten.filters, fitted)


def test_it_learns_real_cifar_images(cifar_small):
    torch.manual_seed(0)
    learn = Learner(fast_convnet(n_classes=10, widths=(16, 32, 32)), cifar_small,
                    loss=CrossEntropy(label_smoothing=0.2), device="cpu", progress=False)
    learn.checkpoint_dir, learn.optimizer = False, "sgd"
    learn.fit(0.5, 5, wd=1e-3)
    # 200 validation images, 10 classes: chance is 10 % (2.1 points standard deviation)
    assert learn.history[-1]["accuracy"] >= 0.30, learn.history
