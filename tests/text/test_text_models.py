"""The recurrent models of threeline.models.rnn: shapes, tying, state, dropout, pooling."""

from __future__ import annotations

import pytest
import torch

from threeline.models import rnn


@pytest.mark.parametrize("arch", ["rnn", "gru", "lstm"])
def test_language_models_shapes_and_tying(arch):
    model = rnn.RNNLanguageModel(40, arch, n_layers=2, hidden=24, emb_size=16)
    assert model.decoder.weight is model.embed.weight and model.project is not None
    x = torch.randint(0, 40, (3, 11))
    assert model(x).shape == (3, 11, 40)
    with pytest.raises(ValueError, match="arch='transformer' is not known"):
        rnn.RNNLanguageModel(40, "transformer")


def test_state_carries_over_and_keep_resets_it():
    torch.manual_seed(0)
    model = rnn.RNNLanguageModel(30, "lstm", n_layers=1, hidden=16, dropout=0.0).eval()
    a, b = torch.randint(0, 30, (2, 2, 8))
    fresh = model.run(b)[0]
    model(a)
    carried = model(b, torch.ones(1))
    assert not torch.allclose(carried, fresh)
    model(a)
    assert torch.allclose(model(b, torch.zeros(1)), fresh, atol=1e-6)
    whole = model.run(torch.cat([a, b], 1))[0][:, 8:]
    model(a, torch.zeros(1))
    assert torch.allclose(model(b, torch.ones(1)), whole, atol=1e-5)


def test_awd_dropouts_only_while_training():
    torch.manual_seed(0)
    lm = rnn.AWDLanguageModel(50, emb_size=8, hidden=16, n_layers=2, weight_p=0.5)
    x = torch.randint(0, 50, (2, 9))
    lm.train()
    assert not torch.allclose(lm.run(x)[0], lm.run(x)[0])
    lm.eval()
    assert torch.equal(lm.run(x)[0], lm.run(x)[0])
    out = lm.run(x)[0]
    out.sum().backward()
    assert lm.encoder.layers[0].weight_hh_l0.grad is not None
    assert lm.decoder.weight is lm.encoder.embed.weight


def test_classifier_ignores_padding():
    torch.manual_seed(0)
    clf = rnn.RNNClassifier(60, 3, emb_size=8, hidden=16, n_layers=2).eval()
    doc = torch.randint(3, 60, (1, 7))
    padded = torch.cat([doc, torch.full((1, 5), 1)], 1)
    alone = clf(doc, torch.tensor([7]))
    assert torch.allclose(clf(padded, torch.tensor([7])), alone, atol=1e-6)
    assert len(clf.groups()) == 4
