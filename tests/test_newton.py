"""The GPU's head solver (Newton's method) against L-BFGS run to the end, on real activations.

Both minimize the same objective; Newton's method must reach it at least as low and give the
same predictions. Run here on the CPU (the library uses it on a GPU only).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from conftest import shared_dataset
from threeline import ImageData, Learner
from threeline.vision import newton, solve


def _activations(data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """(row-space coordinates of the standardized training activations, targets)."""
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                               progress=False)
    x, y = learn.features("train")
    z, _ = solve.row_space(solve.standardize(x.float())[0])
    return z, y


def _landcover(root: Path, n: int) -> ImageData:
    source = shared_dataset("landcover")
    lines = (source / "labels.csv").read_text().splitlines()[:n + 1]
    (root / "images").mkdir()
    for row in lines[1:]:
        name = row.split(",")[0]
        (root / "images" / f"{name}.jpg").symlink_to(source / "images" / f"{name}.jpg")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return ImageData.from_csv(root, "labels.csv", folder="images", label_delim=" ", size=128)


def _cifar(root: Path, per_class: int) -> ImageData:
    source = shared_dataset("cifar10") / "train"
    for folder in sorted(source.iterdir()):
        files = sorted(folder.glob("*.jpg"))[:per_class + 2]
        for split, chosen in (("train", files[:per_class]), ("valid", files[per_class:])):
            (root / split / folder.name).mkdir(parents=True)
            for file in chosen:
                (root / split / folder.name / file.name).symlink_to(file)
    return ImageData.from_folder(root, size=64)


def _objective(z, y, w, penalty, multi_label):
    squares = w[:-1].square().sum(0)  # (C,): one penalty per label, or one for the softmax
    return (solve.data_loss(z @ w[:-1] + w[-1], y, multi_label)
            + penalty * (squares if multi_label else squares.sum(0, keepdim=True)) / 2)


@pytest.mark.parametrize("kind", ["several labels", "ten classes"])
def test_newton_reaches_the_lbfgs_optimum_and_its_predictions(kind, tmp_path):
    multi_label = kind == "several labels"
    data = _landcover(tmp_path, 160) if multi_label else _cifar(tmp_path, 12)
    z, y = _activations(data)
    n_out = y.shape[1] if multi_label else 10
    assert newton.use_newton(z.cuda() if torch.cuda.is_available() else z, n_out,
                             multi_label) == torch.cuda.is_available()
    for times_n in (100.0, 1.0, 0.01):
        penalty = torch.tensor(times_n / len(z))
        fast = newton.newton(z, y, penalty, multi_label)
        slow = solve.solve(z, y, penalty, multi_label, max_iter=3000)  # L-BFGS on a CPU
        fast_loss, slow_loss = (_objective(z, y, w, penalty, multi_label) for w in (fast, slow))
        assert (fast_loss <= slow_loss * (1 + 1e-5)).all(), (times_n, fast_loss, slow_loss)
        logits = [z @ w[:-1] + w[-1] for w in (fast, slow)]
        agree = ((logits[0] > 0) == (logits[1] > 0)) if multi_label else \
            (logits[0].argmax(1) == logits[1].argmax(1))
        assert agree.float().mean() > 0.98, (times_n, agree.float().mean())


def test_each_newton_step_lowers_the_objective():
    z = torch.tensor([[3.0, 0.0], [2.0, 1.0], [-1.0, 2.0], [-2.0, -1.0], [0.5, 0.5]])
    y = torch.tensor([0, 0, 1, 2, 1])
    penalty = torch.tensor(0.01)
    w = torch.zeros(3, 3)
    losses = [float(_objective(z, y, w, penalty, False))]
    for _ in range(6):
        w = newton.newton(z, y, penalty, False, start=w, max_iter=1)
        losses.append(float(_objective(z, y, w, penalty, False)))
    assert all(b <= a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.5 * losses[0]
