"""Small folders: the three lines against a well-regularized linear probe on the same activations.

The probe here is written out plainly (float64, L-BFGS, scikit-learn's grid of C and its
unshuffled stratified folds), apart from :mod:`threeline.vision.solve`, so the two can disagree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import shared_dataset
from threeline import ImageData, Learner


def _probe_accuracy(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor
                    ) -> float:
    """Multinomial logistic regression on standardized activations, C by 5-fold CV."""
    x, xv = x.double(), xv.double()
    n_classes = int(y.max()) + 1

    def fit(a: torch.Tensor, t: torch.Tensor, c: float) -> torch.Tensor:
        w = torch.zeros(a.shape[1] + 1, n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

        def objective():
            opt.zero_grad()
            loss = c * F.cross_entropy(a @ w[:-1] + w[-1], t, reduction="sum") \
                + (w[:-1] ** 2).sum() / 2
            loss.backward()
            return loss
        opt.step(objective)
        return w.detach()

    def scaled(a, ref):
        return (a - ref.mean(0)) / (ref.std(0) + 1e-6)

    folds = torch.zeros(len(y), dtype=torch.long)
    for c in range(n_classes):  # unshuffled stratified folds, as scikit-learn makes them
        rows = torch.nonzero(y == c).flatten()
        folds[rows] = torch.arange(len(rows)) * 5 // len(rows)
    grid = np.logspace(-4, 2, 7)
    losses = []
    for c in grid:
        total = 0.0
        for k in range(5):
            train, held = folds != k, folds == k
            w = fit(scaled(x[train], x[train]), y[train], c)
            out = scaled(x[held], x[train]) @ w[:-1] + w[-1]
            total += float(F.cross_entropy(out, y[held], reduction="sum"))
        losses.append(total)
    w = fit(scaled(x, x), y, float(grid[int(np.argmin(losses))]))
    return float(((scaled(xv, x) @ w[:-1] + w[-1]).argmax(1) == yv).double().mean())


@pytest.fixture(scope="module")
def ants_bees_small(tmp_path_factory):
    """30 ants and 30 bees to train on (the first of each, sorted), all 153 to validate."""
    source = shared_dataset("hymenoptera")
    root = tmp_path_factory.mktemp("ants-bees-small")
    for label in ("ants", "bees"):
        chosen = sorted((source / "train" / label).glob("*.jpg"))[:30]
        (root / "train" / label).mkdir(parents=True)
        for file in chosen:
            (root / "train" / label / file.name).symlink_to(file)
    (root / "valid").symlink_to(source / "val", target_is_directory=True)
    return root


def test_the_three_lines_reach_the_probe_on_a_small_folder(ants_bees_small):
    data = ImageData.from_folder(ants_bees_small, size=224, verbose=False)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                               progress=False)
    learn.checkpoint_dir = False
    assert learn.solves_head
    rows = learn.fit(0.01, 3)
    x, y = learn.features("train")
    xv, yv = learn.features("valid")
    probe = _probe_accuracy(x.cpu(), y.cpu(), xv.cpu(), yv.cpu())
    assert probe > 0.8  # the reference itself learned
    assert rows[-1]["accuracy"] >= probe - 1 / len(yv), (rows[-1], probe)  # one image at most
    stepped = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                                 progress=False, hidden=512)
    assert not stepped.solves_head  # an explicit width: the stepped two-layer head


def test_the_solved_head_never_sees_validation_labels(dogscats_demo):
    data = ImageData.from_folder(dogscats_demo, size=96, verbose=False)
    heads = []
    for shuffle in (False, True):
        learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                                   progress=False)
        learn.checkpoint_dir = False
        x, y = learn.features("valid")
        if shuffle:  # the same images under other labels: the head must not change
            learn._cached["valid"] = (x, y[torch.randperm(len(y), generator=torch.Generator()
                                                          .manual_seed(0))])
        learn.fit(0.01, 2)
        heads.append({k: v.clone() for k, v in learn.head.state_dict().items()})
    for key, value in heads[0].items():
        torch.testing.assert_close(heads[1][key], value, rtol=0, atol=0)


def test_a_linear_head_on_several_labels_is_solved_per_label(tmp_path):
    source = shared_dataset("landcover")
    lines = (source / "labels.csv").read_text().splitlines()[:161]  # 160 chips
    (tmp_path / "images").mkdir()
    for row in lines[1:]:
        name = row.split(",")[0]
        (tmp_path / "images" / f"{name}.jpg").symlink_to(source / "images" / f"{name}.jpg")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    data = ImageData.from_csv(tmp_path, "labels.csv", folder="images", label_delim=" ",
                              size=128)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                               progress=False)
    learn.checkpoint_dir = False
    assert learn.multi_label and learn.solves_head
    rows = learn.fit(0.01, 2)
    stepped = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                                 progress=False, hidden=512)
    stepped.checkpoint_dir = False
    before = stepped.fit(0.01, 3)[-1]
    assert rows[-1]["valid_loss"] < before["valid_loss"], (rows[-1], before)
    assert learn.head[0].running_mean.abs().sum() > 0  # the norm holds the training mean


def test_a_small_folder_is_seen_larger_and_reads_better(ants_bees_small):
    """Up to 1,000 training images the input is 1.3x the network's size (288 px for lite0):
    on 60 ants and bees the three lines read the 153 validation photos better so."""
    accuracy = {}
    for size in (None, 224):
        data = ImageData.from_folder(ants_bees_small, size=size, verbose=False)
        learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                                   progress=False)
        learn.checkpoint_dir = False
        accuracy[learn.preprocess.size] = learn.fit(0.01, 1)[-1]["accuracy"]
    assert set(accuracy) == {288, 224}
    assert accuracy[288] > accuracy[224], accuracy


def test_a_large_folder_keeps_the_networks_size():
    data = ImageData.from_folder(shared_dataset("dogscats"), verbose=False)
    assert len(data.train) > 1_000
    learn = Learner.pretrained("efficientnet_lite0", data, device="cpu", progress=False)
    assert learn.preprocess.size == 224
