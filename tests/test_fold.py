"""BatchNorm folded into convolutions: the same outputs on real photos, the network untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from threeline import ImageData, Learner
from threeline.vision.batches import model_input
from threeline.vision.features import inference_body
from threeline.vision.fold import folded
from threeline.vision.fused import fused
from threeline.vision.weights import REGISTRY


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_folded_body_gives_the_same_activations_on_photos(arch, dogscats_demo):
    data = ImageData.from_folder(dogscats_demo, size=128)
    learn = Learner.pretrained(arch, data, device="cpu", progress=False)
    before = {k: v.clone() for k, v in learn.body.state_dict().items()}
    images = torch.stack([learn.preprocess(f) for f in data.valid.files[:8]])
    x = model_input(learn, images)  # normalized, in the learner's memory layout
    fast = inference_body(learn)
    with torch.inference_mode():
        expected, got = learn.body.eval()(x), fast(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in learn.body.modules()) > 10
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, before[k]) for k, v in learn.body.state_dict().items())


class Residual(nn.Module):
    """conv -> BatchNorm, with the conv's output also added back: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) + y


def test_a_conv_output_used_twice_is_left_unfolded_and_unfused():
    net = Residual().eval()
    with torch.no_grad():  # statistics far from the identity, so a wrong fold shows
        net.norm.running_mean.uniform_(-2, 2)
        net.norm.running_var.uniform_(0.1, 4)
        net.norm.weight.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    out = folded(net, x)
    assert isinstance(out.norm, nn.BatchNorm2d)
    torch.testing.assert_close(out(x), net(x))
    assert fused(net, x) is None  # nor is there a training view that fuses it
    chain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        chain[1].running_mean.fill_(1.0)
        chain[1].running_var.fill_(2.0)
        chain[1].weight.fill_(3.0)
    fast = folded(chain, x)
    assert isinstance(fast[1], nn.Identity)
    torch.testing.assert_close(fast(x), chain(x), rtol=1e-5, atol=1e-5)
