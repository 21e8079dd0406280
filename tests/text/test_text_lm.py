"""A character-level language model of Nietzsche learns, generates, saves and loads; the
word-level AWD-LSTM language model learns more than word frequencies from real reviews."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from conftest import shared_dataset
from threeline.learner import Learner
from threeline.text import TextData, language_model


def test_char_lm_learns_generates_and_loads(tmp_path):
    whole = (shared_dataset("nietzsche") / "nietzsche.txt").read_text("utf-8")
    (tmp_path / "part.txt").write_text(whole[:46_000], "utf-8")
    text = TextData.from_file(tmp_path / "part.txt", level="char", valid_pct=0.13, lower=True,
                              verbose=False)
    lm = language_model(text, arch="lstm", n_layers=1, hidden=128, batch_size=16, bptt=64,
                        device="cpu", progress=False)
    lm.checkpoint_dir = False
    uniform = math.log(lm.tokenizer.vocab_size)
    rows = lm.fit(1e-2, 2)
    last = rows[-1]
    assert last["valid_loss"] < 0.7 * uniform, (last, uniform)
    assert last["bits_per_char"] == pytest.approx(last["valid_loss"] / math.log(2))
    sample = lm.generate("PREFACE", n=120, temperature=0.8, top_k=10, seed=1)
    assert sample.startswith("PREFACE") and len(sample) == len("PREFACE") + 120
    assert len(set(sample[7:])) > 8  # not one character repeated
    with pytest.raises(ValueError, match="never saw"):
        lm.generate("\u2603", n=5)
    lm.save(tmp_path / "lm")
    loaded = Learner.load(tmp_path / "lm", device="cpu")
    assert loaded.generate("PREFACE", n=50, seed=3) == lm.generate("PREFACE", n=50, seed=3)
    loaded.data = lm.data
    assert loaded.validate()["valid_loss"] == pytest.approx(lm.validate()["valid_loss"],
                                                            rel=1e-5)


def test_awd_lstm_lm_beats_the_unigram_guess_on_reviews(tmp_path):
    """From its first epochs the AWD-LSTM must predict better than word frequencies alone (its
    old uniform(-0.1, 0.1) embedding start stayed at the unigram loss here, and on a GPU)."""
    imdb = shared_dataset("imdb")
    for label in ("neg", "pos"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for file in sorted((imdb / "train" / label).iterdir())[:200]:
            shutil.copy(file, tmp_path / "train" / label / file.name)
    data = TextData.from_folder(tmp_path, valid_pct=0.2, unlabelled=[], verbose=False)
    torch.manual_seed(0)
    lm = language_model(data, emb_size=64, hidden=128, n_layers=2, batch_size=16, device="cpu",
                        progress=False)
    lm.checkpoint_dir = False
    train, valid = lm.data.ids["train"].numpy(), lm.data.ids["valid"].numpy()
    counts = np.bincount(train, minlength=lm.tokenizer.vocab_size) + 1.0  # add-one
    unigram = float(-np.log(counts[valid] / counts.sum()).mean())  # nats per token
    rows = lm.fit(5e-3, 3)
    assert rows[-1]["valid_loss"] < unigram - 0.2, (rows[-1], unigram)
