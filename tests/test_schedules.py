"""Schedules, layer groups, differential learning rates, freezing."""

from __future__ import annotations

import itertools

import pytest
import torch

from threeline import ImageData, Learner, optim, schedules


def test_sgdr_restarts_on_epoch_boundaries():
    lengths = schedules.cycle_lengths(3, cycle_len=1, cycle_mult=2)
    assert lengths == [1, 2, 4]
    s = schedules.sgdr(lengths)
    restarts = [1 / 7, 3 / 7]
    for r in restarts:
        assert s(r - 1e-9) < 0.01 and s(r) == pytest.approx(1.0)
    values = [s(i / 700) for i in range(100, 300)]  # inside the second cycle: only falls
    assert all(a >= b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="cycle_mult"):
        schedules.cycle_lengths(2, cycle_len=1, cycle_mult=0)


def test_one_cycle_warms_up_then_anneals():
    s = schedules.one_cycle()
    assert s(0) < s(0.1) < s(0.25) == 1.0 > s(0.6) > s(1.0)


@pytest.fixture(scope="module")
def learn(dogscats_demo) -> Learner:
    data = ImageData.from_folder(dogscats_demo, size=64, batch_size=32)
    return Learner.pretrained("efficientnet_lite0", data, progress=False)


def test_layer_groups_cover_every_parameter_once(learn):
    groups = learn.layer_groups()
    assert len(groups) == 3
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(learn.body.parameters())) + len(
        list(learn.head.parameters()))
    assert {id(p) for p in groups[2]} == {id(p) for p in learn.head.parameters()}
    first = {id(p) for p in groups[0]}
    assert id(learn.body.features.conv_stem.weight) in first
    assert id(learn.body.features.conv_head.weight) in {id(p) for p in groups[1]}


def test_unfreeze_and_freeze_to_change_trainable_params(learn):
    def trainable() -> int:
        return sum(p.numel() for p in learn.body.parameters() if p.requires_grad)

    learn.freeze()
    assert trainable() == 0
    learn.freeze_to(1)
    late = sum(p.numel() for p in learn.layer_groups()[1])
    assert trainable() == late
    learn.unfreeze()
    assert trainable() == sum(p.numel() for p in learn.body.parameters())
    assert not learn.precompute
    learn.freeze()
    with pytest.raises(ValueError, match="group index"):
        learn.freeze_to(3)


def test_differential_rates_reach_the_groups(learn):
    learn.unfreeze()
    groups = learn.layer_groups()
    learn.fit(slice(1e-5, 1e-3), 1, schedule="constant")
    seen = {}
    for group in learn.opt.param_groups:
        index = group["layer_group"]
        assert {id(p) for p in group["params"]} <= {id(p) for p in groups[index]}
        seen[index] = group["lr"]
        # weight decay skips norms and biases
        assert group["weight_decay"] == (0.0 if group["params"][0].ndim <= 1 else 0.01)
    assert seen[0] == pytest.approx(1e-5) and seen[1] == pytest.approx(1e-4)
    assert seen[2] == pytest.approx(1e-3)
    def optimizer_for(lr):
        return optim.adamw(learn.layer_groups(), optim.group_lrs(lr, 3), 0.01, learn.device)

    optimizer = optimizer_for([1e-4, 2e-4, 3e-4])
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([1e-4, 2e-4, 3e-4])
    learn.freeze_to(2)  # only the head trains: the optimizer holds only its groups
    optimizer = optimizer_for(slice(1e-3))
    assert {g["layer_group"] for g in optimizer.param_groups} == {2}
    with pytest.raises(ValueError, match="3 layer groups"):
        learn.fit([1e-3, 1e-2], 1)
    learn.freeze()


def test_frozen_groups_keep_batchnorm_statistics(learn):
    learn.freeze_to(1)
    early_bn = learn.body.features.bn1
    late_bn = learn.body.features.bn2
    early, late = early_bn.running_mean.clone(), late_bn.running_mean.clone()
    learn.fit(1e-4, 1, cycle_len=1)  # by default no BatchNorm statistics move
    assert torch.equal(early, early_bn.running_mean)
    assert torch.equal(late, late_bn.running_mean)
    learn.train_bn = True  # now the trained groups' statistics follow the data
    learn.fit(1e-4, 1, cycle_len=1)
    assert torch.equal(early, early_bn.running_mean)
    assert not torch.equal(late, late_bn.running_mean)
    learn.train_bn = False
    learn.freeze()


def test_sgdr_fit_runs_the_cycles(learn):
    before = len(learn.history)
    rows = learn.fit(1e-4, 2, cycle_len=1, cycle_mult=1)
    assert len(rows) == 2 and len(learn.history) == before + 2
    with pytest.raises(ValueError, match="not both"):
        learn.fit(1e-3, 1, schedule="one_cycle", cycle_len=1)
