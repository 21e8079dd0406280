"""The collaborative-filtering learner trained for real on MovieLens 100k (split u1)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import shared_dataset
from threeline.collab import CollabData, collab_learner
from threeline.collab import learner as learner_module
from threeline.collab.implicit import IMPLICIT_WD, Implicit
from threeline.collab.models import DotProductBias, MemberMean, RowDecay
from threeline.learner import Learner


@pytest.fixture(scope="module")
def ml100k():
    return shared_dataset("ml-100k")


@pytest.fixture(scope="module")
def u1(ml100k):
    from threeline.collab.movielens import movielens_split

    return movielens_split(ml100k, 1, batch_size=2048)


@pytest.fixture(scope="module")
def learn(u1):
    """Dot product + biases, 3 epochs on u1.base, on the CPU. Do not train it further."""
    learn = collab_learner(u1, n_factors=32, device="cpu", progress=False)
    learn.checkpoint_dir = False
    learn.fit(2e-2, 3)
    return learn


def test_fit_beats_the_global_mean(learn, u1):
    valid = u1.ratings[u1.valid_idx]
    mean_rmse = float(np.sqrt(((valid - u1.ratings[u1.train_idx].mean()) ** 2).mean()))
    rows = learn.history
    assert len(rows) == 3 and {"train_loss", "valid_loss", "rmse"} <= set(rows[-1])
    assert rows[-1]["rmse"] < mean_rmse - 0.12, (rows[-1]["rmse"], mean_rmse)
    # the table's RMSE is the RMSE of predict() on the same pairs
    u, i = u1.raw_ids("user", u1.valid_idx), u1.raw_ids("item", u1.valid_idx)
    with pytest.warns(UserWarning, match="not in the training ratings"):  # u1.test has a few
        pred = learn.predict(pd.DataFrame({"user": u, "item": i}))
    assert math.isclose(float(np.sqrt(((pred - valid) ** 2).mean())), rows[-1]["rmse"],
                        rel_tol=1e-4)


def test_recommend_skips_rated_items_and_sorts(learn, u1):
    top = learn.recommend(user=196, k=10)
    assert list(top.columns) == ["item", "title", "predicted"] and len(top) == 10
    rated = set(u1.raw_ids("item", np.flatnonzero(u1.raw_ids("user", np.arange(100_000)) == 196)))
    assert rated and not rated & set(top["item"])
    assert (np.diff(top["predicted"].to_numpy()) <= 0).all()
    # the best unrated item by predict() over every item is the first recommendation
    items = [i for i in learn.catalog.item_ids[1:] if i not in rated]
    scores = learn.predict([(196, i) for i in items])
    assert top["item"].iloc[0] == items[int(np.argmax(scores))]
    assert top["title"].iloc[0] == u1.title(top["item"].iloc[0])


def test_similar_is_embedding_cosine(learn):
    sims = learn.similar(50, k=5)  # Star Wars
    vectors = learn.model.item_vectors().detach().numpy()  # q_i with the implicit sums
    code = learn.catalog.item_codes([50])[0]
    cos = vectors @ vectors[code] / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(
        vectors[code]) + 1e-12)
    cos[[0, code]] = -np.inf
    assert list(sims["item"]) == list(learn.catalog.item_ids[np.argsort(-cos)[:5]])
    assert 50 not in set(sims["item"])
    np.testing.assert_allclose(sims["similarity"], np.sort(cos)[::-1][:5], rtol=1e-4)


def test_unknown_ids_get_the_bias_only_prediction(learn):
    m = learn.model
    code = learn.catalog.item_codes([50])[0]
    with pytest.warns(UserWarning, match=r"1 of 2 pairs .* user 'stranger'.*bias-only"):
        pred = learn.predict([("stranger", 50), (196, 50)])
    expected = (m.y_lo + (m.y_hi - m.y_lo) * torch.sigmoid(
        m.global_bias + m.item_bias.weight[code])).mean().clamp(1, 5).detach()  # members' mean
    assert math.isclose(pred[0], float(expected), rel_tol=1e-5)
    with pytest.warns(UserWarning, match="recommending by item bias only"):
        assert len(learn.recommend("stranger", k=3)) == 3
    with pytest.raises(ValueError, match="not in the training ratings"):
        learn.similar("no such film")


def test_save_and_load_give_the_same_answers(learn, tmp_path):
    learn.save(tmp_path / "model")
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["application"] == "threeline.collab"
    loaded = Learner.load(tmp_path / "model", device="cpu")
    assert loaded.data is None and loaded.history == learn.history
    pairs = [(196, 242), (1, 1), (943, 1330)]
    np.testing.assert_array_equal(loaded.predict(pairs), learn.predict(pairs))
    pd.testing.assert_frame_equal(loaded.recommend(196, k=5), learn.recommend(196, k=5))
    assert loaded.recommend(196, k=1)["title"].iloc[0] != "", "titles travel with the model"


def test_default_model_trains_saves_and_loads(u1, tmp_path):
    """collab_learner(data) as it comes: 2 dot products with implicit feedback on both sides."""
    learn = collab_learner(u1, device="cpu", progress=False)
    learn.checkpoint_dir = False
    assert learn.config["implicit"] and learn.config["members"] == 2
    learn.fit(2e-2, 2)
    assert learn.history[-1]["rmse"] < 0.97, learn.history
    model = learn.model
    # who rated what comes from the training rows only (u1.test's pairs stay unseen)
    assert len(model.user_implicit.cols) == len(model.item_implicit.cols) == len(u1.train_idx)
    assert model.user_implicit.factors.weight.abs().sum() > 0  # the sums were trained
    learn.save(tmp_path / "default")
    loaded = Learner.load(tmp_path / "default", device="cpu")
    assert loaded.config == learn.config and loaded.model.implicit
    for name in ("user_implicit", "item_implicit"):
        torch.testing.assert_close(getattr(loaded.model, name).t_weights,
                                   getattr(model, name).t_weights)  # rebuilt, not saved
    pairs = [(196, 242), (1, 1), (943, 1330), ("stranger", 50)]
    with pytest.warns(UserWarning, match="not in the training ratings"):
        np.testing.assert_array_equal(loaded.predict(pairs), learn.predict(pairs))
    pd.testing.assert_frame_equal(loaded.recommend(196, k=5), learn.recommend(196, k=5))
    pd.testing.assert_frame_equal(loaded.similar(50, k=5), learn.similar(50, k=5))


def test_implicit_is_the_normalised_sum_of_rated_vectors():
    torch.manual_seed(0)
    rows, cols = torch.tensor([1, 1, 1, 3, 2]), torch.tensor([2, 4, 1, 4, 3])
    imp = Implicit(n_rows=3, n_cols=4, width=3).double()
    imp.set_pairs(rows, cols)
    with torch.no_grad():
        imp.factors.weight.normal_()
    codes = torch.tensor([3, 1, 0, 1, 2])
    weight = imp.factors.weight
    out = imp(codes, wd=0.5, training=True)
    y = weight.detach().clone().requires_grad_()
    by_hand = torch.stack([y[cols[rows == r]].sum(0) / max(int((rows == r).sum()), 1) ** 0.5
                           for r in codes.tolist()])  # unknown row 0: an empty sum
    torch.testing.assert_close(out, by_hand)
    grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    ((by_hand * grad_out).sum() + IMPLICIT_WD * 0.5 * (y ** 2).sum() / len(codes)).backward()
    torch.testing.assert_close(weight.grad, y.grad)  # the sum's gradient + the table's L2


def test_implicit_false_is_the_plain_dot_product(u1, monkeypatch):
    learn = collab_learner(u1, implicit=False, device="cpu", progress=False)
    assert not learn.config["implicit"] and learn.config["members"] == 4
    assert not any("implicit" in key for key in learn.model.state_dict())
    assert not collab_learner(u1, kind="nn", device="cpu").config["implicit"]
    monkeypatch.setattr(learner_module, "IMPLICIT_MAX_RATINGS", len(u1.train_idx) - 1)
    assert not collab_learner(u1, device="cpu").config["implicit"]  # a table too large for it


def test_row_decay_is_the_gradient_of_the_l2_penalty():
    rows = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(6, 4, dtype=torch.float64)
    ((RowDecay.apply(rows, 0.3) - target) ** 2).mean().backward()
    by_hand = rows.detach().clone().requires_grad_()
    (((by_hand - target) ** 2).mean() + 0.3 * (by_hand ** 2).sum(1).mean()).backward()
    torch.testing.assert_close(rows.grad, by_hand.grad)


def test_row_decay_touches_only_the_rows_of_the_batch():
    model = DotProductBias(5, 5, n_factors=3, wd=1.0)
    model(torch.tensor([1, 2]), torch.tensor([1, 1])).sum().backward()
    grad = model.user_factors.weight.grad
    assert grad[[0, 3, 4, 5]].abs().sum() == 0 and grad[[1, 2]].abs().sum() > 0


def test_members_train_as_if_alone_and_predict_their_mean():
    torch.manual_seed(0)
    members = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(8, dtype=torch.float64)
    mean = MemberMean.apply(members)
    torch.testing.assert_close(mean, members.mean(-1))
    ((mean - target) ** 2).mean().backward()
    alone = members.detach().clone().requires_grad_()
    ((alone - target.unsqueeze(-1)) ** 2).mean(0).sum().backward()  # each member's own MSE
    torch.testing.assert_close(members.grad, alone.grad)


def test_members_model_is_the_mean_of_its_dot_products():
    model = DotProductBias(4, 5, n_factors=3, members=2).eval()
    with torch.no_grad():
        model.user_bias.weight.normal_()
        model.item_bias.weight[1:].normal_()
    users, items = torch.tensor([1, 2, 4, 0]), torch.tensor([3, 5, 1, 2])
    p = model.user_factors(users).view(4, 2, 3)
    q = model.item_factors(items).view(4, 2, 3)
    raw = (model.global_bias + model.user_bias(users) * (users > 0).unsqueeze(-1)
           + model.item_bias(items) + (p * q).sum(-1) * (users > 0).unsqueeze(-1))
    torch.testing.assert_close(model(users, items), model.squash(raw).mean(-1))


def test_row_counts_spread_the_decay_evenly(learn, u1):
    """After fit, each row's decay weight is mean count / count of the training rows."""
    counts = np.bincount(u1.items[u1.train_idx], minlength=u1.n_items + 1)
    weights = learn.model.item_decay[:, 0].numpy()
    seen = counts[1:] > 0
    np.testing.assert_allclose(weights[1:][seen] * counts[1:][seen],
                               counts[1:][seen].mean(), rtol=1e-5)
    rows = torch.ones(2, 3, requires_grad=True)
    RowDecay.apply(rows, 0.5, torch.tensor([[1.0], [3.0]])).sum().backward()
    assert rows.grad[:, 0].tolist() == [1.5, 2.5]  # 1 + 2 * 0.5 * w / 2


def test_nn_kind_trains_and_lr_find_restores(u1):
    learn = collab_learner(u1, kind="nn", n_factors=16, layers=(32,), device="cpu",
                           progress=False)
    learn.checkpoint_dir = False
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    finder = learn.lr_find(num_it=10)
    assert len(finder.losses) > 0
    for key, value in learn.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    learn.fit(3e-2, 2)
    assert learn.history[-1]["rmse"] < 1.0


def test_interpret(learn, u1, tmp_path):
    from matplotlib.figure import Figure

    interp = learn.interpret()
    biases = interp.item_biases(5)
    best, worst = biases["best"], biases["worst"]
    assert (best["bias"].min() > worst["bias"].max()) and (best["ratings"] >= 20).all()
    assert best["title"].iloc[0] == u1.title(best["item"].iloc[0])
    fig = interp.plot_items(n=20, save=tmp_path / "items.png")
    assert isinstance(fig, Figure) and (tmp_path / "items.png").stat().st_size > 10_000
    assert len(fig.axes[0].texts) == 20
    worst_rows = interp.worst_predictions(5)
    errors = worst_rows["error"].abs().to_numpy()
    assert (np.diff(errors) <= 0).all() and errors[0] > 2.5
    np.testing.assert_allclose(worst_rows["predicted"] - worst_rows["rating"],
                               worst_rows["error"], atol=1e-6)


def test_bad_arguments(u1, learn):
    with pytest.raises(ValueError, match="kind must be one of"):
        collab_learner(u1, kind="svd")
    with pytest.raises(TypeError, match="data must be a CollabData"):
        collab_learner(pd.DataFrame())
    with pytest.raises(ValueError, match="k must be a positive int"):
        learn.recommend(196, k=0)
    with pytest.raises(TypeError, match="list of"):
        learn.predict(42)
    with pytest.raises(ValueError, match="y_range"):
        collab_learner(CollabData.from_df(pd.DataFrame(
            {"u": [1, 2, 3], "i": [1, 2, 1], "r": [1, 2, 3]}), valid_idx=[2]), y_range=(5, 1))
