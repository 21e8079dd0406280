"""The network's embeddings grouped by width give the numbers of one nn.Embedding per column,
start from the same seeded weights, and load states saved per column; the bin budget keeps
Adult's 32 bins per column. Real UCI Adult rows."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import shared_dataset
from threeline.tabular import TabularData
from threeline.tabular.embedding import GroupedEmbedding, emb_size
from threeline.tabular.model import TabularModel
from threeline.tabular.preprocess import N_BINS


@pytest.fixture(scope="module")
def data() -> TabularData:
    adult = pd.read_csv(shared_dataset("adult") / "adult.csv", na_values=["?"])
    return TabularData.from_df(adult.iloc[:3000], y="target", seed=0)


def per_column(cardinalities: list[int]) -> nn.ModuleList:
    """The layout before grouping: one nn.Embedding per column, trunc_normal_(std=0.01)."""
    embeds = nn.ModuleList(nn.Embedding(n, emb_size(n)) for n in cardinalities)
    for e in embeds:
        nn.init.trunc_normal_(e.weight, std=0.01)
    return embeds


def test_grouped_embedding_equals_one_embedding_per_column(data):
    cards = data.prep.cardinalities
    torch.manual_seed(0)
    reference = per_column(cards)
    torch.manual_seed(0)
    grouped = GroupedEmbedding(cards)
    assert len(grouped.tables) < len(cards)  # Adult's 10 columns share fewer widths
    for j, e in enumerate(reference):
        assert torch.equal(grouped.weight(j), e.weight)  # same seeded start
    with torch.no_grad():  # train-like change so equality is not only at init
        for table in grouped.tables:
            table.add_(torch.randn_like(table))
        for j, e in enumerate(reference):
            e.weight.copy_(grouped.weight(j))
    cats = torch.as_tensor(data.cats)  # (N, C) int32, every Adult row
    expected = torch.cat([e(cats[:, j]) for j, e in enumerate(reference)], dim=1)
    assert torch.equal(grouped(cats), expected)


def test_grouped_embedding_gradients_match(data):
    cards = data.prep.cardinalities
    torch.manual_seed(1)
    reference, grouped = per_column(cards), GroupedEmbedding(cards)
    with torch.no_grad():
        for j, e in enumerate(reference):
            e.weight.copy_(grouped.weight(j))
    cats = torch.as_tensor(data.cats[:512])
    w = torch.randn(512, grouped.embedding_dim)
    (torch.cat([e(cats[:, j]) for j, e in enumerate(reference)], 1) * w).sum().backward()
    (grouped(cats) * w).sum().backward()
    for j, e in enumerate(reference):
        g, start = grouped.place[j]
        grad = grouped.tables[g].grad[start:start + cards[j]]
        torch.testing.assert_close(grad, e.weight.grad)


def test_a_state_saved_per_column_loads_into_the_grouped_model(data):
    config = {"cardinalities": data.prep.cardinalities, "n_cont": len(data.cont_names),
              "n_out": 2, "cont_edges": [c.edges for c in data.prep.conts]}
    model = TabularModel(**config).eval()
    state = model.state_dict()
    for j in range(len(config["cardinalities"])):  # the old keys: embeds.<j>.weight
        state[f"embeds.{j}.weight"] = model.embedding(j).clone() + 1
    state = {k: v for k, v in state.items() if not k.startswith("embeds.tables.")}
    loaded = TabularModel(**config).eval()
    loaded.load_state_dict(state)
    for j in range(len(config["cardinalities"])):
        assert torch.equal(loaded.embedding(j), model.embedding(j) + 1)
    cats, conts = torch.as_tensor(data.cats[:64]), torch.as_tensor(data.conts[:64])
    assert loaded(cats, conts).shape == (64, 2)


def test_adult_keeps_every_bin(data):
    assert data.prep.n_bins == N_BINS
    model = TabularModel(data.prep.cardinalities, len(data.cont_names), 2,
                         cont_edges=[c.edges for c in data.prep.conts])
    assert model.ple is not None and model.ple.out_features > 4 * N_BINS
