"""TextData, tokenizers and batches on real IMDB reviews and Nietzsche."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from conftest import shared_dataset
from threeline.text import TextData
from threeline.text import tokens as T
from threeline.text.batches import DocBatches, StreamBatches, head_tail

CPU = torch.device("cpu")


def small_imdb(tmp_path, per_class=40, unsup=30):
    """A real IMDB subset laid out like the original: train/{neg,pos}/*.txt + unsup.txt.gz."""
    imdb = shared_dataset("imdb")
    root = tmp_path / "imdb"
    for c in ("neg", "pos"):
        (root / "train" / c).mkdir(parents=True)
        for f in sorted((imdb / "train" / c).iterdir())[:per_class]:
            shutil.copy(f, root / "train" / c / f.name)
    with gzip.open(imdb / "unsup.txt.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(unsup)]
    with gzip.open(root / "unsup.txt.gz", "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return root


def test_from_folder_split_and_unlabelled(tmp_path):
    root = small_imdb(tmp_path)
    data = TextData.from_folder(root, valid_pct=0.25, seed=1, verbose=False)
    assert data.classes == ["neg", "pos"]
    assert len(data.train_texts) == 60 and len(data.valid_texts) == 20
    assert np.bincount(data.valid_labels).tolist() == [10, 10]
    assert len(data.unlabelled) == 30
    lengths = [len(t) for t in data.valid_texts]
    assert lengths == sorted(lengths)
    again = TextData.from_folder(root, valid_pct=0.25, seed=1, verbose=False)
    assert again.valid_texts == data.valid_texts
    other = TextData.from_folder(root, valid_pct=0.25, seed=2, verbose=False)
    assert other.valid_texts != data.valid_texts
    assert "60 train" in repr(data)


def test_bad_inputs_one_line_each(tmp_path, capsys):
    root = small_imdb(tmp_path, per_class=10, unsup=0)
    review = (root / "train" / "pos").iterdir().__next__().read_text("utf-8")
    (root / "train" / "pos" / "empty.txt").write_text("  \n")
    (root / "train" / "neg" / "latin1.txt").write_bytes("Café crème, très mauvais".encode(
        "latin-1"))
    (root / "train" / "neg" / "huge.txt").write_text(review * (10_000_000 // len(review) + 1))
    data = TextData.from_folder(root, valid_pct=0.2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert "1 file(s) were not valid UTF-8" in lines[0]
    assert "Skipped 1 empty text" in lines[1]
    assert "Cut 1 text(s) longer than 1,000,000" in lines[2]
    texts = data.train_texts + data.valid_texts
    assert any("Caf\ufffd" in t for t in texts)
    assert max(len(t) for t in texts) == 1_000_000
    shutil.rmtree(root / "train" / "neg")
    with pytest.raises(ValueError, match="single class"):
        TextData.from_folder(root / "train", verbose=False)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        TextData.from_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="valid_pct"):
        TextData.from_folder(root, valid_pct=1.5)


def test_from_csv_and_df(tmp_path):
    import pandas as pd

    root = small_imdb(tmp_path, per_class=15, unsup=0)
    rows = [{"review": f.read_text("utf-8"), "sentiment": c}
            for c in ("neg", "pos") for f in sorted((root / "train" / c).iterdir())]
    rows.append({"review": "no label here", "sentiment": None})
    pd.DataFrame(rows).to_csv(tmp_path / "r.csv", index=False)
    data = TextData.from_csv(tmp_path / "r.csv", text="review", label="sentiment",
                             valid_pct=0.2, verbose=False)
    assert data.classes == ["neg", "pos"]
    assert len(data.train_texts) + len(data.valid_texts) == 30
    assert data.unlabelled == ["no label here"]
    with pytest.raises(ValueError, match="No column 'text'"):
        TextData.from_csv(tmp_path / "r.csv", verbose=False)


def test_from_file_char_level():
    path = shared_dataset("nietzsche") / "nietzsche.txt"
    text = TextData.from_file(path, level="char", valid_pct=0.1, lower=True, verbose=False)
    whole = path.read_text("utf-8").lower()
    assert text.train_texts[0] + text.valid_texts[0] == whole
    assert len(text.valid_texts[0]) == len(whole) - int(len(whole) * 0.9)
    tok = T.train_tokenizer(text.train_texts, "char", lower=True)
    ids = tok.encode(["preface"])[0]
    assert tok.decode(ids) == "preface" and ids.min() >= len(T.SPECIALS)
    assert tok.unknown("PREFACE\u2603") == ["\u2603"]


def test_word_tokenizer_and_cached_ids(tmp_path):
    data = TextData.from_folder(small_imdb(tmp_path), verbose=False)
    texts = data.lm_texts("train")
    tok = T.train_tokenizer(texts, "word", vocab_size=2000, min_freq=2)
    assert tok.vocab_size <= 2000 and tok.pad_id == T.PAD
    ids, offsets = T.encode(tok, texts)
    assert len(offsets) == len(texts) + 1 and offsets[-1] == len(ids)
    first = tok.decode(ids[offsets[0]:offsets[1]])
    assert first.split()[:3] == [w.lower() for w in texts[0].replace(".", " .").split()[:3]]
    files = sorted(T.text_cache().glob("ids-*.npz"))
    stamp = {f: f.stat().st_mtime_ns for f in files}
    ids2, offsets2 = T.encode(tok, texts)
    assert np.array_equal(ids, ids2) and np.array_equal(offsets, offsets2)
    assert {f: f.stat().st_mtime_ns for f in files} == stamp
    assert T.train_tokenizer(texts, "word", vocab_size=2000, min_freq=2).hf_json == tok.hf_json
    bpe = T.train_tokenizer(texts, "bpe", vocab_size=500, min_freq=2)
    assert bpe.decode(bpe.encode(["A fine film"])[0]) == "a fine film"


def test_stream_batches_follow_the_text():
    ids = np.arange(1000)
    lm = StreamBatches(ids, ids[:300], batch_size=4, bptt=10)
    batches = list(lm.batches("train", CPU, True, seed=3))
    assert len(batches) == lm.steps("train")
    (x, keep), y = batches[0]
    assert keep.item() == 0 and batches[1][0][1].item() == 1
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(batches[1][0][0][:, 0], x[:, -1] + 1)  # rows continue across batches


def test_doc_batches_cover_every_text_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 400, size=500)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(3, 100, size=offsets[-1]).astype(np.int32)
    docs = DocBatches({"train": (ids, offsets, np.arange(500))}, pad_id=1, batch_size=16,
                      max_len=256, start=[2], bucket=8)
    seen, real, padded = [], 0, 0
    for (x, n), y in docs.batches("train", CPU, True, seed=0):
        seen += y.tolist()
        real, padded = real + int(n.sum()), padded + x.numel()
        assert x.shape[1] == int(n.max()) <= 256 and (x[:, 0] == 2).all()
    assert sorted(seen) == list(range(500))
    assert real / padded > 0.9
    assert head_tail(np.arange(100), 8).tolist() == [0, 1, 94, 95, 96, 97, 98, 99]
