"""Conv -> BatchNorm pairs fused for training: the same outputs and gradients, shared weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from threeline import ImageData, Learner
from threeline.vision.batches import model_input
from threeline.vision.fused import FusedConv, fused
from threeline.vision.weights import REGISTRY


def photos(learn: Learner, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """n validation photos, normalized, in float64 (rounding would hide a wrong formula)."""
    files, labels = learn.data.valid.files[:n], learn.data.valid.labels[:n]
    images = torch.stack([learn.preprocess(f) for f in files]).to(learn.device)
    return model_input(learn, images).double(), torch.tensor(labels, device=learn.device)


def gradients(learn: Learner, body: nn.Module, x, y) -> dict[str, torch.Tensor]:
    learn.model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the head's dropout draws the same mask
    F.cross_entropy(learn.head(body(x)), y).backward()
    return {n: p.grad.clone() for n, p in learn.model.named_parameters() if p.grad is not None}


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_fused_body_trains_exactly_like_the_body(arch, device, dogscats_demo):
    learn = Learner.pretrained(arch, ImageData.from_folder(dogscats_demo, size=96),
                               device=device, progress=False)
    learn.model.double()
    x, y = photos(learn)
    view = fused(learn.body, x[:1])
    pairs = [m for m in view.modules() if isinstance(m, FusedConv)]
    assert len(pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in learn.body.modules()) > 10
    assert {id(p) for p in view.parameters()} == {id(p) for p in learn.body.parameters()}
    learn.unfreeze()
    learn.set_train_mode(learn.model)  # as fit sets it: norms keep their statistics
    expected, got = gradients(learn, learn.body, x, y), gradients(learn, view, x, y)
    assert expected.keys() == got.keys() and len(got) == len(list(learn.model.parameters()))
    for name, grad in expected.items():  # float64 rounding: about 1e-12 of the largest
        scale = float(grad.abs().max())
        torch.testing.assert_close(got[name], grad, rtol=1e-7, atol=1e-9 * scale, msg=name)
    learn.freeze_to(1)  # frozen parameters get no gradient through the view either
    assert gradients(learn, view, x, y).keys() == gradients(learn, learn.body, x, y).keys()
    learn.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(view(x), learn.body(x), rtol=1e-9, atol=1e-9)


def test_a_norm_that_trains_is_run_as_it_is():
    """train_bn: the norm normalizes with the batch's statistics and updates its own."""
    chain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    view = fused(chain, x[:1])  # its trial run neither changes modes nor updates statistics
    assert chain.training and chain[1].training and int(chain[1].num_batches_tracked) == 0
    expected = chain(x)
    stats = chain[1].running_mean.clone()
    chain[1].running_mean.zero_()
    chain[1].running_var.fill_(1.0)
    chain[1].num_batches_tracked.zero_()
    torch.testing.assert_close(view(x), expected)
    torch.testing.assert_close(chain[1].running_mean, stats)
    assert view.network[0].conv is chain[0] and view.network[1].norm is chain[1]  # shared


def test_learner_trains_and_predicts_through_the_fused_body(dogscats_demo):
    learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(dogscats_demo,
                               size=96), device="cpu", progress=False)
    learn.checkpoint_dir = False
    before = learn.predict()
    assert any(isinstance(m, FusedConv) for m in learn.fast_body().modules())
    with torch.inference_mode():  # the plain body agrees with what predict ran
        plain = F.log_softmax(learn.head(learn.body.eval()(model_input(learn, torch.stack(
            [learn.preprocess(f) for f in learn.data.valid.files[:4]])))), 1)
    torch.testing.assert_close(torch.from_numpy(before[:4]), plain, rtol=1e-4, atol=1e-4)
    weights = learn.body.features.conv_stem.weight.clone()
    learn.unfreeze()
    learn.fit(1e-4, 1)
    assert not torch.equal(learn.body.features.conv_stem.weight, weights)  # the body trained

