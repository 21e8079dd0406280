"""Tokenizers (characters, words, BPE, a Hugging Face tokenizer.json) and cached token ids.

Word and BPE tokenizers are trained with Hugging Face's Rust ``tokenizers`` on the texts
themselves; encoding runs in Rust threads. Both the trained tokenizer and the token ids are
cached under ``threeline.saving.cache_dir()/text``, keyed by the content of the texts and the
tokenizer's settings, and written atomically, so a second run skips the work.

    tok = train_tokenizer(texts, "word", vocab_size=30000)
    ids, offsets = encode(tok, texts)    # flat int32 ids; text i: ids[offsets[i]:offsets[i+1]]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPECIALS = ["xxunk", "xxpad", "xxbos"]
UNK, PAD, BOS = 0, 1, 2


def text_cache() -> Path:
    from threeline.saving import cache_dir

    return cache_dir() / "text"


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 over every text and its length (so ["ab", "c"] differs from ["a", "bc"])."""
    digest = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", errors="surrogatepass")
        digest.update(len(b).to_bytes(8, "little"))
        digest.update(b)
    return digest.hexdigest()


class Tokenizer:
    """Text <-> token ids. ``kind``: "char", "word", "bpe" or "wordpiece".

    Example:
        >>> tok = Tokenizer.chars("hello world")
        >>> tok.decode(tok.encode(["hello"])[0])
        'hello'
    """

    def __init__(self, kind: str, chars: str | None = None, hf_json: str | None = None,
                 lower: bool = False):
        self.kind, self.chars, self.hf_json, self.lower = kind, chars, hf_json, lower
        self._hf = None
        if kind == "char":
            self.codes = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted
            self.vocab_size = len(SPECIALS) + len(chars)
            self.pad_id, self.bos_id, self.unk_id = PAD, BOS, UNK
        else:
            from tokenizers import Tokenizer as HFTokenizer

            self._hf = HFTokenizer.from_str(hf_json)
            self._hf.no_padding()
            self._hf.no_truncation()
            self.vocab_size = self._hf.get_vocab_size()
            if kind == "wordpiece":
                self.pad_id = self._hf.token_to_id("[PAD]")
                self.bos_id, self.unk_id = self._hf.token_to_id("[CLS]"), self._hf.token_to_id(
                    "[UNK]")
                self.sep_id = self._hf.token_to_id("[SEP]")
            else:
                self.pad_id, self.bos_id, self.unk_id = PAD, BOS, UNK

    @classmethod
    def chars(cls, text: str, lower: bool = False) -> Tokenizer:
        """A character vocabulary: every distinct character of ``text``, in code-point order."""
        return cls("char", "".join(sorted(set(text))), lower=lower)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> Tokenizer:
        """The ``tokenizer.json`` of a Hugging Face model folder, padding and truncation off."""
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"No tokenizer.json in {folder}; a Hugging Face model folder "
                                    f"needs one (save it with tokenizer.save_pretrained).")
        return cls("wordpiece", hf_json=path.read_text("utf-8"))

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text -> int32 ids (no begin/end markers; the callers add them)."""
        if self.kind == "char":
            return [self._encode_chars(t) for t in texts]
        fast = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
        out = fast(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in out]

    def _encode_chars(self, text: str) -> np.ndarray:
        if self.lower:
            text = text.lower()
        codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
        pos = np.searchsorted(self.codes, codes).clip(max=len(self.codes) - 1)
        known = self.codes[pos] == codes
        return np.where(known, pos + len(SPECIALS), UNK).astype(np.int32)

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` outside a character vocabulary."""
        if self.kind != "char":
            return []
        return sorted({c for c in (text.lower() if self.lower else text) if c not in self.chars})

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "char":
            n = len(SPECIALS)
            return "".join(self.chars[i - n] if i >= n else "" for i in ids)
        return self._hf.decode(ids)

    def tokens(self, ids) -> list[str]:
        """Each id as its token's text (for showing which words mattered)."""
        if self.kind == "char":
            n = len(SPECIALS)
            return [self.chars[i - n] if i >= n else SPECIALS[i] for i in ids]
        return [self._hf.id_to_token(int(i)) or "" for i in ids]

    def describe(self) -> dict:
        return {"kind": self.kind, "chars": self.chars, "hf_json": self.hf_json,
                "lower": self.lower}

    @classmethod
    def from_description(cls, d: dict) -> Tokenizer:
        return cls(d["kind"], d.get("chars"), d.get("hf_json"), d.get("lower", False))

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind!r}, {self.vocab_size:,} tokens)"


def _hf_word_tokenizer(level: str, lower: bool):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    steps = [normalizers.Replace("<br />", "\n")]
    if lower:
        steps.append(normalizers.Lowercase())
    if level == "word":
        tok = HFTokenizer(models.WordLevel(unk_token=SPECIALS[UNK]))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    else:
        tok = HFTokenizer(models.BPE(unk_token=SPECIALS[UNK]))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
    tok.normalizer = normalizers.Sequence(steps)
    return tok


def train_tokenizer(texts: Sequence[str], level: str = "word", vocab_size: int = 30000,
                    min_freq: int = 3, lower: bool = True, cache: bool = True) -> Tokenizer:
    """A character, word or BPE tokenizer learned from ``texts`` (cached by content).

    Example:
        >>> tok = train_tokenizer(["a cat", "a dog"] * 3, "word", min_freq=1, cache=False)
        >>> tok.decode(tok.encode(["a dog"])[0])
        'a dog'
    """
    if level == "char":
        return Tokenizer.chars("".join(texts), lower)
    if level not in ("word", "bpe"):
        raise ValueError(f"level={level!r} is not known; use 'char', 'word' or 'bpe'.")
    if not isinstance(vocab_size, int) or vocab_size < len(SPECIALS) + 1:
        raise ValueError(f"vocab_size={vocab_size!r} must be an integer above {len(SPECIALS)}.")
    key = hashlib.sha256(json.dumps([level, vocab_size, min_freq, lower, texts_digest(texts),
                                     1]).encode()).hexdigest()[:32]
    path = text_cache() / f"tokenizer-{key}.json"
    if cache and path.is_file():
        return Tokenizer(level, hf_json=path.read_text("utf-8"), lower=lower)
    from tokenizers import trainers

    tok = _hf_word_tokenizer(level, lower)
    trainer_cls = trainers.WordLevelTrainer if level == "word" else trainers.BpeTrainer
    trainer = trainer_cls(vocab_size=vocab_size, min_frequency=min_freq,
                          special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(texts, trainer, length=len(texts))
    hf_json = tok.to_str()
    if cache:
        from threeline.saving import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(hf_json, "utf-8"))
    return Tokenizer(level, hf_json=hf_json, lower=lower)


def encode(tok: Tokenizer, texts: Sequence[str], cache: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """All texts' ids as one flat int32 array and int64 offsets (N + 1,), cached by content.

    Example:
        >>> ids, offsets = encode(Tokenizer.chars("abc"), ["ab", "c"], cache=False)
        >>> ids.tolist(), offsets.tolist()
        ([3, 4, 5], [0, 2, 3])
    """
    key = hashlib.sha256(json.dumps([tok.describe(), texts_digest(texts), 1]).encode()
                         ).hexdigest()[:32]
    path = text_cache() / f"ids-{key}.npz"
    if cache and path.is_file():
        with np.load(path) as f:
            return f["ids"], f["offsets"]
    parts = tok.encode(texts)
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    if cache:
        from threeline.saving import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: _save_npz(tmp, ids, offsets))
    return ids, offsets


def _save_npz(tmp: Path, ids: np.ndarray, offsets: np.ndarray) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, ids=ids, offsets=offsets)


def stream(tok: Tokenizer, texts: list[str], single: bool) -> np.ndarray:
    """Texts as one id stream, each text after a begin marker (none for one long text)."""
    ids, offsets = encode(tok, texts)
    if single:
        return ids
    out = np.empty(len(ids) + len(texts), dtype=np.int32)
    starts = offsets[:-1] + np.arange(len(texts))
    out[starts] = tok.bos_id
    keep = np.ones(len(out), dtype=bool)
    keep[starts] = False
    out[keep] = ids
    return out
