"""The CUDA-graph training step: same training as the eager step, nothing trained by warm-up."""

import warnings

import pytest
import torch
from torch import nn

import threeline.learner
from threeline import ImageData, Learner, optim
from threeline.graph_step import GraphStep
from threeline.losses import CrossEntropy
from threeline.optim import set_lr

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_set_lr_assigns_numbers_and_fills_tensors():
    group = {"lr": 0.1}
    set_lr(group, 0.02)
    assert group["lr"] == 0.02
    tensor = torch.tensor(0.1)
    group = {"lr": tensor}
    set_lr(group, 0.03)
    assert group["lr"] is tensor and tensor.item() == pytest.approx(0.03)


def _learner(folder, cuda_graphs: bool, dropout: float) -> Learner:
    data = ImageData.from_folder(folder, size=128, batch_size=16)
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True, device="cuda",
                               dropout=dropout, progress=False, hidden=512)  # a stepped head
    learn.cuda_graphs = cuda_graphs
    learn.checkpoint_dir = False
    return learn


_made: list[GraphStep] = []  # what fit built, to check that it really replayed a graph


class _Recorded(GraphStep):
    def __init__(self, *args):
        super().__init__(*args)
        _made.append(self)


@needs_cuda
def test_graphed_fit_trains_like_the_eager_fit(dogscats_demo, monkeypatch):
    monkeypatch.setattr(threeline.learner, "GraphStep", _Recorded)
    _made.clear()
    eager = _learner(dogscats_demo, cuda_graphs=False, dropout=0.0)
    graphed = _learner(dogscats_demo, cuda_graphs=True, dropout=0.0)
    eager_rows = eager.fit(0.01, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture would warn and train eagerly
        graphed_rows = graphed.fit(0.01, 2)
    assert len(_made) == 1 and _made[0].graph is not None
    for a, b in zip(eager_rows, graphed_rows, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-4)
    for p, q in zip(eager.head.parameters(), graphed.head.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    assert graphed_rows[-1]["train_loss"] < graphed_rows[0]["train_loss"]


@needs_cuda
def test_graphed_fit_with_dropout_repeats_under_a_seed(dogscats_demo):
    first = _learner(dogscats_demo, cuda_graphs=True, dropout=0.25).fit(0.01, 2)
    second = _learner(dogscats_demo, cuda_graphs=True, dropout=0.25).fit(0.01, 2)
    assert [r["train_loss"] for r in first] == [r["train_loss"] for r in second]


@needs_cuda
def test_capture_trains_nothing():
    torch.manual_seed(0)
    head = nn.Sequential(nn.BatchNorm1d(32), nn.Linear(32, 3)).cuda().train()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    optimizer = optim.adamw([list(head.parameters())], [0.1], 0.01, torch.device("cuda"),
                            capturable=True)
    step = GraphStep(head, CrossEntropy(), optimizer)
    x, y = torch.randn(8, 32, device="cuda"), torch.randint(0, 3, (8,), device="cuda")
    step._capture((x,), y)
    assert step.graph is not None
    for name, value in head.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    for state in optimizer.state.values():
        assert all(float(v.abs().max()) == 0 for v in state.values())
    step(x, y)
    assert not torch.equal(head[1].weight, before["1.weight"])
