"""A short fine-tune on real photos improves on the frozen model it starts from."""

from __future__ import annotations

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
