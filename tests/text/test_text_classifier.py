"""Text classifiers on real IMDB reviews: the AWD-LSTM route end to end, the MiniLM route
learns, predictions keep the input order, save/load, save_encoder, interpretation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import shared_dataset
from threeline.learner import Learner
from threeline.text import TextData, text_classifier

TINY = dict(emb_size=24, hidden=48, n_layers=2)


def reviews(tmp_path, per_class, skip=0):
    imdb = shared_dataset("imdb")
    root = tmp_path / f"imdb{per_class}"
    for c in ("neg", "pos"):
        (root / "train" / c).mkdir(parents=True)
        for f in sorted((imdb / "train" / c).iterdir())[skip:skip + per_class]:
            shutil.copy(f, root / "train" / c / f.name)
    return root


def test_awd_lstm_route_end_to_end(tmp_path):
    data = TextData.from_folder(reviews(tmp_path, 60), valid_pct=0.2, verbose=False)
    learn = text_classifier(data, encoder="awd_lstm", lm_config=TINY, max_len=200,
                            batch_size=16, device="cpu", progress=False)
    learn.checkpoint_dir = False
    rows = learn.fine_tune(3, lm_epochs=1)
    assert len(rows) == 3 and learn.lm.history
    lm_encoder = learn.lm.model.encoder
    assert not torch.equal(lm_encoder.embed.weight, learn.model.encoder.embed.weight)  # tuned
    texts = ["A masterpiece.", "Two hours I will never get back.", data.valid_texts[-1]]
    preds = learn.predict(texts)
    assert preds.shape == (3, 2) and np.allclose(np.exp(preds).sum(1), 1, atol=1e-5)
    assert np.allclose(learn.predict(texts[::-1]), preds[::-1], atol=1e-5)
    # on a CPU predict runs an int8 copy of the recurrent model: close to the float model
    fast = learn.predict(data.valid_texts)
    assert "quantized" in type(learn._int8.module.encoder.layers[0]).__module__
    learn.cpu_int8 = False
    exact = learn.predict(data.valid_texts)
    learn.cpu_int8 = True
    assert np.abs(np.exp(fast) - np.exp(exact)).max() < 0.02
    assert (fast.argmax(1) == exact.argmax(1)).mean() >= 0.95
    learn.save(tmp_path / "clf")
    loaded = Learner.load(tmp_path / "clf", device="cpu")
    assert np.allclose(loaded.predict(texts), preds, atol=1e-5)
    assert loaded.classes == ["neg", "pos"]
    learn.lm.save_encoder(tmp_path / "enc")
    again = text_classifier(data, encoder=tmp_path / "enc", device="cpu", progress=False)
    assert torch.equal(again.model.encoder.embed.weight, lm_encoder.embed.weight)
    assert again.lm_trained
    with pytest.raises(ValueError, match="neither 'awd_lstm', 'minilm' nor"):
        text_classifier(data, encoder=tmp_path / "nothing")
    before = learn._int8.module
    learn.fit(1e-3, 1)  # new weights: the next predict makes a new int8 copy
    assert not np.allclose(learn.predict(texts), preds, atol=1e-5)
    assert learn._int8.module is not before


def test_minilm_route_learns_and_explains(tmp_path):
    data = TextData.from_folder(reviews(tmp_path, 70, skip=200), valid_pct=0.3, seed=0,
                                verbose=False)
    learn = text_classifier(data, encoder="minilm", max_len=96, batch_size=14, device="cpu",
                            progress=False)
    learn.checkpoint_dir = False
    learn.freeze_to(-1)  # the pretrained body frozen: its features already separate reviews
    rows = learn.fit(2e-2, 2)
    assert rows[-1]["accuracy"] >= 0.7, rows  # 42 valid reviews, chance is 0.5
    interp = learn.interpret()
    wrong = interp.most_incorrect(3)
    assert all(w["actual"] != w["predicted"] for w in wrong)
    probs = [w["probability"] for w in wrong]
    assert probs == sorted(probs, reverse=True)
    assert interp.confusion_matrix().sum() == len(data.valid_texts)
    attr = interp.attribution("A wonderful film, but the ending was awful.")
    assert attr.words[1] == "wonderful" and len(attr.scores) == len(attr.words)
    assert "<span" in attr._repr_html_()
    png = attr.save_png(tmp_path / "words.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
