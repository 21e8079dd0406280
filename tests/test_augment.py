"""Augmentation on real photos: labels and shapes kept, seeded, pixels changed; presizing."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from threeline import ImageData, Learner
from threeline.vision import batches
from threeline.vision.augment import Augment, side_on, top_down
from threeline.vision.presize import presize
from threeline.vision.transforms import Preprocess, normalize


@pytest.fixture(scope="module")
def cache(hymenoptera_demo):
    data = ImageData.from_folder(hymenoptera_demo)
    return presize(data.train.files[:12] + data.train.files[-12:],
                   data.train.labels[:12] + data.train.labels[-12:], short=146)


def test_presize_keeps_aspect_and_matches_validation_crop(cache, hymenoptera_demo):
    shapes = {tuple(img.shape[1:]) for img in cache.images}
    assert all(min(s) == 146 for s in shapes)
    assert any(s[0] != s[1] for s in shapes), "non-square photos stay non-square"
    assert all(max(s) <= 1.5 * 146 for s in shapes)
    data = ImageData.from_folder(hymenoptera_demo)
    files = data.train.files[:12] + data.train.files[-12:]
    direct = torch.stack([Preprocess(size=128)(f) for f in files])
    assert torch.equal(cache.center_crops(range(len(files)), 128), direct)


@pytest.mark.parametrize("aug", [side_on(), top_down()], ids=["side_on", "top_down"])
def test_augment_keeps_shapes_seeded_and_changes_pixels(cache, aug):
    images, sizes, labels = cache.batch(range(len(cache)))
    out1 = aug(images, sizes, 128, torch.Generator().manual_seed(1))
    out2 = aug(images, sizes, 128, torch.Generator().manual_seed(1))
    out3 = aug(images, sizes, 128, torch.Generator().manual_seed(2))
    assert out1.shape == (len(cache), 3, 128, 128) and out1.dtype == torch.float32
    assert out1.min() >= 0 and out1.max() <= 1
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, out3)
    plain = cache.center_crops(range(len(cache)), 128).float() / 255
    assert (out1 - plain).abs().mean() > 0.02
    assert torch.equal(labels, cache.labels)


def test_identity_augment_is_the_center_crop(cache):
    square = [i for i, img in enumerate(cache.images) if img.shape[1] == img.shape[2]]
    images, sizes, _ = cache.batch(square)
    still = Augment(flip=False, min_scale=1.0, ratio=(1.0, 1.0), max_rotate=0.0, max_lighting=0.0)
    out = still(images, sizes, 146)
    assert (out * 255 - images[:, :, :146, :146].float()).abs().max() < 0.01  # of 255


def test_augment_precompute_warns_and_switches_off(dogscats_demo):
    data = ImageData.from_folder(dogscats_demo, size=64)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False)
    with pytest.warns(UserWarning, match="precompute"):
        learn.augment = "side_on"
    assert not learn.precompute and learn.augment == side_on()
    with pytest.warns(UserWarning, match="precompute"):
        Learner.pretrained("efficientnet_lite0", data, precompute=True, augment="top_down",
                           progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.augment = None
        learn.precompute = True
    with pytest.raises(ValueError, match="side_on"):
        learn.augment = "sideways"


def test_training_batches_are_augmented_with_labels_kept(dogscats_demo):
    data = ImageData.from_folder(dogscats_demo, size=64, batch_size=80)
    learn = Learner.pretrained("efficientnet_lite0", data, augment="side_on", progress=False)
    (xb, yb), = list(batches.train_batches(learn))
    plain = Learner.pretrained("efficientnet_lite0", data, progress=False)
    (xp, yp), = list(batches.train_batches(plain))
    assert xb.shape == xp.shape == (80, 3, 64, 64)
    assert torch.equal(yb, yp)  # same seed, same order
    assert (xb - xp).abs().mean() > 0.05
    tta = learn.tta(n=2)
    assert tta.shape == (40, 2)
    assert abs(torch.tensor(tta).exp().sum(1) - 1).max() < 1e-4


def test_tta_first_copy_is_the_mirror_image(trained, tmp_path):
    """tta(n=1) averages the plain view and its left-right mirror image, nothing else."""
    files = trained.data.valid.files[:6]
    mirrored = []
    for path in files:
        target = tmp_path / f"{Path(path).stem}.png"  # lossless: the same decoded pixels
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)
        mirrored.append(target)
    plain = trained.predict(files).astype(np.float64)  # log-probabilities (N, C)
    flipped = trained.predict(mirrored).astype(np.float64)
    expected = np.logaddexp(plain, flipped) - np.log(2)  # log of the mean probability
    assert np.allclose(trained.tta(n=1, items=files), expected, rtol=1e-3, atol=1e-3)
    assert not np.allclose(plain, flipped, rtol=1e-2)  # the mirror image is a different input


def test_normalize_matches_the_formula_and_leaves_its_input_alone(dogscats_demo):
    """(x / 255 - mean) / std per channel, for uint8 and float batches, in either memory layout."""
    files = sorted((dogscats_demo / "train" / "cats").iterdir())[:4]
    batch = torch.stack([Preprocess(size=64)(f) for f in files])  # (4, 3, 64, 64) uint8
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(batch, mean, std), expected, rtol=0, atol=1e-5)
    floats = (batch.float() / 255).contiguous(memory_format=torch.channels_last)
    before = floats.clone()
    torch.testing.assert_close(normalize(floats, mean, std), expected, rtol=0, atol=1e-5)
    assert torch.equal(floats, before)
