"""A short fine-tune on real photos improves on the frozen model it starts from."""

from __future__ import annotations

import torch

from threeline import ImageData, Learner


def test_fine_tune_improves_validation_loss_over_frozen_model(hymenoptera_demo):
    data = ImageData.from_folder(hymenoptera_demo, size=128, batch_size=40)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False, seed=1)
    frozen_loss, _ = learn.validate()  # the frozen pretrained body with its new head
    stem = learn.body.features.conv_stem.weight.detach().clone()
    rows = learn.fine_tune(1, base_lr=2e-3, freeze_epochs=1)
    assert len(rows) == 2  # one head-only epoch, one whole-network epoch
    assert all(p.requires_grad for p in learn.body.parameters())
    assert not learn.precompute
    assert not torch.equal(stem, learn.body.features.conv_stem.weight)  # early layers trained
    tuned_loss, accuracy = learn.validate()
    assert tuned_loss < frozen_loss
    assert accuracy > 0.7
