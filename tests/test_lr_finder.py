"""The learning-rate finder on real photos: restoration, divergence stop, the suggestion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from threeline import ImageData, Learner, lr_finder


@pytest.fixture(scope="module")
def head_learner(dogscats_demo) -> Learner:
    data = ImageData.from_folder(dogscats_demo, size=128, batch_size=16)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False)
    learn.fit(1e-4, 1)  # an optimizer whose state must survive lr_find; the loss stays high
    return learn


def _state(learn: Learner) -> dict[str, torch.Tensor]:
    out = {f"body.{k}": v.clone() for k, v in learn.body.state_dict().items()}
    out.update({f"head.{k}": v.clone() for k, v in learn.head.state_dict().items()})
    return out


def test_restores_model_and_optimizer_bit_for_bit(head_learner):
    before = _state(head_learner)
    opt_state = head_learner.opt.state_dict()["state"]
    opt_before = {k: v["exp_avg"].clone() for k, v in opt_state.items()}
    rng_before = torch.get_rng_state()
    result = head_learner.lr_find(start_lr=1e-6, end_lr=1.0, num_it=40)
    assert len(result.lrs) > 20  # many real steps changed the weights before the restore
    after = _state(head_learner)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    opt_after = head_learner.opt.state_dict()["state"]
    for k, v in opt_before.items():
        assert torch.equal(v, opt_after[k]["exp_avg"])
    assert torch.equal(rng_before, torch.get_rng_state())
    assert head_learner.precompute


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_stops_on_divergence(head_learner, mode):
    result = head_learner.lr_find(start_lr=1e-3, end_lr=1e3, num_it=60, mode=mode)
    assert result.stopped_early
    assert len(result.lrs) < 60
    last, best = result.losses[-1], min(result.losses[:-1])
    assert not math.isfinite(last) or last > 4 * best
    steps = np.diff(result.lrs)
    assert (steps > 0).all()
    if mode == "linear":
        assert np.allclose(steps, steps[0], rtol=1e-6)
    else:
        assert np.allclose(np.diff(np.log(result.lrs)), np.log(1e6) / 59, rtol=1e-6)


def test_steepest_is_where_the_loss_falls_fastest(hymenoptera_demo):
    data = ImageData.from_folder(hymenoptera_demo, size=128, batch_size=8)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False)
    result = learn.lr_find(start_lr=1e-5, end_lr=10, num_it=80)
    lrs, losses = np.log(result.lrs), np.asarray(result.losses)
    i = lr_finder.steepest(result.lrs, result.losses)
    minimum = int(np.argmin(losses))
    assert i < minimum, "the steepest fall must come before the loss bottoms out"
    # the fall per unit of log(lr) across a window around the suggestion, on the recorded curve,
    # is at least half the steepest fall of any such window before the minimum
    w = max(2, minimum // 8)

    def fall(j: int) -> float:
        a, b = max(0, j - w), min(minimum, j + w)
        return (losses[a] - losses[b]) / (lrs[b] - lrs[a])

    steepest = max(fall(j) for j in range(minimum))
    assert fall(i) > 0.5 * steepest
    assert "steepest" in result.rule


def test_plots_return_figures_and_save(head_learner, tmp_path):
    result = head_learner.lr_find(start_lr=1e-4, end_lr=1e2, num_it=20)
    fig = result.plot(save=tmp_path / "lr_find.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.lines) == 3  # the curve, the suggestion's dot and its line
    assert list(ax.lines[1].get_xdata()) == [result.suggestion]
    assert (tmp_path / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    fig = result.plot_lr(save=tmp_path / "lr.png")
    assert list(fig.axes[0].lines[0].get_ydata()) == result.lrs
    assert (tmp_path / "lr.png").stat().st_size > 1000


def test_whole_network_restores_and_unfrozen_flags(dogscats_demo):
    data = ImageData.from_folder(dogscats_demo, size=64, batch_size=16)
    learn = Learner.pretrained("efficientnet_lite0", data, progress=False)
    learn.unfreeze()
    before = _state(learn)
    result = learn.lr_find(start_lr=1e-4, end_lr=1.0, num_it=6)
    assert len(result.lrs) >= 2
    for key, value in _state(learn).items():
        assert torch.equal(before[key], value), key  # includes BatchNorm running statistics
    assert all(p.requires_grad for p in learn.body.parameters())
    assert all(p.grad is None for p in learn.body.parameters())


def test_bad_arguments(head_learner):
    with pytest.raises(ValueError, match="mode"):
        head_learner.lr_find(mode="log")
    with pytest.raises(ValueError, match="start_lr"):
        head_learner.lr_find(start_lr=1.0, end_lr=0.1)
