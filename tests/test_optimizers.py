"""``learn.optimizer``: AdamW (the default) or SGD with Nesterov momentum, for fit and lr_find.

Real data: 1,000 CIFAR-10 JPEGs (100 per class) from ../shared/data/cifar10, a tiny from-scratch
ResNet (width 8) on the CPU, as in ``tests/models/test_resnet.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_dataset
from threeline.batches import TensorData
from threeline.learner import Learner
from threeline.models.resnet import fast_resnet

PER_CLASS = 100  # 1,000 images: 800 to train, 200 to validate


@pytest.fixture(scope="module")
def cifar() -> TensorData:
    root = shared_dataset("cifar10") / "train"
    images, labels = [], []
    for index, name in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        for path in sorted((root / name).glob("*.jpg"))[:PER_CLASS]:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(index)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    y = torch.tensor(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, valid = order[:800], order[800:]
    return TensorData((x[train],), y[train], (x[valid],), y[valid], batch_size=32)


def sgd_learner(data: TensorData) -> Learner:
    torch.manual_seed(0)
    learn = Learner(fast_resnet(n_classes=10, width=8), data, device="cpu", progress=False)
    learn.checkpoint_dir = False
    learn.optimizer = "sgd"
    return learn


def test_sgd_trains_a_resnet_with_nesterov_momentum(cifar):
    learn = sgd_learner(cifar)
    before = learn.validate()["valid_loss"]
    learn.fit(0.1, 5, wd=5e-4)
    assert isinstance(learn.opt, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in learn.opt.param_groups)
    assert sorted({g["weight_decay"] for g in learn.opt.param_groups}) == [0.0, 5e-4]
    after = learn.history[-1]["valid_loss"]
    # chance is ln(10) = 2.30; an untrained network starts near or above it
    assert after < before - 0.3, f"valid loss {before:.3f} -> {after:.3f}"
    assert learn.history[-1]["accuracy"] >= 0.25  # chance: 10 %


def test_unknown_optimizer_is_explained(cifar):
    learn = sgd_learner(cifar)
    learn.optimizer = "adam"
    with pytest.raises(ValueError, match="'adam'.*sgd"):
        learn.fit(0.1, 1)
    with pytest.raises(ValueError, match="sgd"):
        learn.lr_find(num_it=10)
    assert learn.opt is None and not learn.history


def test_lr_find_uses_sgd_and_restores_the_model(cifar):
    learn = sgd_learner(cifar)
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    seen = []
    real_run_fit = learn.run_fit

    def run_fit(*args, **kwargs):  # records the optimizer the finder trained with
        rows = real_run_fit(*args, **kwargs)
        seen.append(learn.opt)
        return rows

    learn.run_fit = run_fit
    result = learn.lr_find(num_it=30, end_lr=10.0)
    assert isinstance(seen[0], torch.optim.SGD) and seen[0].defaults["nesterov"]
    assert 1e-7 <= result.suggestion <= 10.0 and len(result.lrs) >= 10
    assert min(result.losses) < result.losses[0]
    for key, value in learn.model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_threeline_optimizers_update_exactly_as_torchs(cifar, name):
    """threeline.optim's AdamW and SGD only drop torch.optim's compile guards: five steps on
    real images leave the same weights and an optimizer state torch's own class loads."""
    from threeline import optim

    def five_steps(make):
        torch.manual_seed(0)
        model = fast_resnet(n_classes=10, width=8)
        groups = [list(model.parameters())]
        opt = make(groups)
        x, y = cifar.x["train"][0][:32], cifar.y["train"][:32]
        for _ in range(5):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        return model, opt

    cpu = torch.device("cpu")
    ours, ours_opt = five_steps(lambda g: optim.make(name, g, [0.01], 0.01, cpu))
    torch_class = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"betas": optim.BETAS} if name == "adamw" else {"momentum": 0.9, "nesterov": True}
    theirs, theirs_opt = five_steps(lambda g: torch_class(
        optim.optimizer_groups(g, [0.01], 0.01), lr=0.01, **extra))
    assert type(ours_opt) is not torch_class and isinstance(ours_opt, torch_class)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    start = fast_resnet(n_classes=10, width=8)  # where both began
    assert not torch.equal(next(start.parameters()), next(ours.parameters()))  # it trained
    theirs_opt.load_state_dict(ours_opt.state_dict())
    state = next(iter(theirs_opt.state.values()))
    assert state and all(torch.isfinite(v).all() for v in state.values()
                         if isinstance(v, torch.Tensor))
