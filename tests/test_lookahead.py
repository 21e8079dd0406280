"""Lookahead: the callback against the same arithmetic written out in a bare loop, on real
CIFAR-10 images; with no averaging it changes nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cifar_images
from threeline.batches import TensorData
from threeline.learner import Learner
from threeline.lookahead import Lookahead


@pytest.fixture(scope="module")
def data() -> TensorData:
    small = cifar_images.cifar_small()
    x, y = small.x["train"][0][:320].flatten(1), small.y["train"][:320]  # (320, 3072)
    xv, yv = small.x["valid"][0].flatten(1), small.y["valid"]
    return TensorData((x,), y, (xv,), yv, batch_size=32)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3072, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def fit(data: TensorData, callbacks: list) -> nn.Module:
    net = model()
    learn = Learner(net, data, device="cpu", progress=False)
    learn.checkpoint_dir, learn.optimizer = False, "sgd"
    learn.fit(0.05, 2, wd=1e-3, schedule="constant", callbacks=callbacks)
    return net


def test_matches_the_arithmetic_written_out(data):
    every, decay = 3, 0.6
    got = fit(data, [Lookahead(every=every, decay=decay)])
    net = model()
    decayed = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decayed, "weight_decay": 1e-3},
                           {"params": rest, "weight_decay": 0.0}], lr=0.05, momentum=0.9,
                          nesterov=True)
    fast = [t for t in net.state_dict().values() if t.is_floating_point()]
    slow = [t.clone() for t in fast]
    total, step = 2 * data.steps("train"), 0
    for epoch in range(2):
        net.train()
        for x, y in data.batches("train", torch.device("cpu"), True, epoch):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % every == 0 or step == total:
                d = decay * (step / total) ** 3
                with torch.no_grad():
                    for s, f in zip(slow, fast, strict=True):
                        s += (1 - d) * (f - s)
                        f.copy_(s)
    for (name, a), b in zip(got.state_dict().items(), net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_no_averaging_changes_nothing(data):
    plain, pulled = fit(data, []), fit(data, [Lookahead(every=2, decay=0.0)])
    for a, b in zip(plain.state_dict().values(), pulled.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    averaged = fit(data, [Lookahead(every=2, decay=0.9)])
    assert not torch.equal(averaged[0].weight, plain[0].weight)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"every": 0}, "every"), ({"decay": 1.0}, "decay"), ({"decay": -0.1}, "decay")])
def test_bad_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Lookahead(**kwargs)
