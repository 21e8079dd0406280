"""A short fine-tune on real photos improves on the frozen model it starts from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threeline import ImageData, Learner


def test_fine_tune_improves_validation_loss_over_frozen_model(hymenoptera_demo):
    data = ImageData.from_folder(hymenoptera_demo, size=128, batch_size=40)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False, seed=1)
    frozen_loss = learn.validate()["valid_loss"]  # the frozen pretrained body with its new head
    stem = learn.body.features.conv_stem.weight.detach().clone()
    rows = learn.fine_tune(1, base_lr=2e-3, freeze_epochs=1)
    assert len(rows) == 2  # one head-only epoch, one whole-network epoch
    assert all(p.requires_grad for p in learn.body.parameters())
    assert not learn.precompute
    assert not torch.equal(stem, learn.body.features.conv_stem.weight)  # early layers trained
    result = learn.validate()
    tuned_loss, accuracy = result["valid_loss"], result["accuracy"]
    assert tuned_loss < frozen_loss
    assert accuracy > 0.7


def test_fine_tune_trains_the_head_on_cached_activations_then_augments(hymenoptera_demo,
                                                                        tmp_path):
    data = ImageData.from_folder(hymenoptera_demo, size=96, batch_size=40)
    learn = Learner.pretrained("efficientnet_lite0", data, augment="side_on", progress=False,
                               cache_dir=tmp_path)
    rows = learn.fine_tune(1, freeze_epochs=2)
    assert len(rows) == 3
    assert len(list((tmp_path / "features").iterdir())) == 2  # train and valid activations
    assert learn.augment is not None and not learn.precompute  # the user's settings are back
    assert learn.history[-1]["accuracy"] > 0.7


def test_fine_tune_on_a_small_folder_predicts_with_tta(hymenoptera_demo, tmp_path, capsys):
    data = ImageData.from_folder(hymenoptera_demo, size=96, batch_size=40)
    learn = Learner.pretrained("efficientnet_lite0", data, augment="side_on", progress=False,
                               cache_dir=tmp_path / "cache")
    learn.checkpoint_dir = False
    learn.fine_tune(1, freeze_epochs=1)
    assert learn.tta_views == 4  # a small folder: predictions average 5 views
    assert capsys.readouterr().out.splitlines()[-1].startswith("tta")  # the table's last row
    last = learn.history[-1]
    by_hand = learn.tta(4)  # (N, C) log-probabilities, the same seeded copies
    labels = np.asarray(data.valid.labels)
    assert last["tta_accuracy"] == pytest.approx((by_hand.argmax(1) == labels).mean())
    assert last["tta_valid_loss"] == pytest.approx(
        -by_hand[np.arange(len(labels)), labels].mean(), rel=1e-4)
    assert np.allclose(learn.predict(), by_hand, atol=1e-5)  # predict is the TTA now
    plain = learn.validate()["accuracy"]
    assert last["accuracy"] == pytest.approx(plain)  # the epoch rows score the plain view
    files = data.valid.files[:6]
    learn.save(tmp_path / "model")
    loaded = Learner.load(tmp_path / "model", device="cpu", progress=False)
    assert loaded.tta_views == 4 and loaded.tta_augment == learn.augment
    assert np.allclose(loaded.predict(files), learn.predict(files), atol=1e-4)
    loaded.tta_views = 0  # the plain view alone again
    assert not np.allclose(loaded.predict(files), learn.predict(files), atol=1e-4)


def test_fine_tune_without_tta_and_bad_tta(hymenoptera_demo, tmp_path):
    data = ImageData.from_folder(hymenoptera_demo, size=64, batch_size=40)
    learn = Learner.pretrained("efficientnet_lite0", data, progress=False, cache_dir=tmp_path)
    learn.checkpoint_dir = False
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="tta must be None or a whole number"):
            learn.fine_tune(1, tta=bad)
    learn.fine_tune(1, freeze_epochs=0, tta=0)
    assert learn.tta_views == 0 and not any(k.startswith("tta_") for k in learn.history[-1])
