"""Language models and text classifiers on the core's Learner.

    text = TextData.from_file("nietzsche.txt", level="char")
    lm = language_model(text, arch="lstm", n_layers=2, hidden=512)
    lm.fit(3e-3, 15); lm.generate("PREFACE", n=400, temperature=0.8)

    data = TextData.from_folder("imdb")
    learn = text_classifier(data, encoder="awd_lstm")      # or "minilm", or a model folder
    learn.fine_tune(4); learn.predict(["A masterpiece."])

The learner adds to the core what text needs: sampling, predicting raw texts (batched by
length, answered in input order), ULMFiT-style fine-tuning, saving the encoder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from threeline import saving
from threeline.learner import Learner
from threeline.losses import CrossEntropy, NextToken
from threeline.models import rnn
from threeline.text import tokens as T
from threeline.text.batches import DocBatches, StreamBatches
from threeline.text.data import TextData
from threeline.text.generate import sample
from threeline.text.int8 import Int8Copy

APPLICATION = "threeline.text"
CHAR_DEFAULTS = dict(n_layers=2, hidden=512, dropout=0.2)
AWD_DEFAULTS = dict(emb_size=400, hidden=1152, n_layers=3)


class TextLearner(Learner):
    """A :class:`threeline.learner.Learner` for text: see the module's docstring."""

    def __init__(self, model: nn.Module, data, tokenizer: T.Tokenizer, kind: str,
                 classes: list[str] | None = None, max_len: int = 1024, clip: float | None = 0.1,
                 lm_config: dict | None = None, **kwargs):
        super().__init__(model, data, **kwargs)
        self.tokenizer, self.kind, self.classes = tokenizer, kind, classes
        self.max_len, self.clip, self.lm_config = max_len, clip, lm_config
        self.name = "language_model" if kind == "lm" else "text_classifier"
        self.lm_trained = kind == "lm" or lm_config is None
        self.lm: TextLearner | None = None  # the language model fine_tune trained, if any
        self.cpu_int8 = True  # predict on a CPU with int8 weights (recurrent models; int8.py)
        self._int8 = Int8Copy()

    # ---- training ----------------------------------------------------------------------

    def fine_tune(self, epochs: int = 4, lr: float | None = None, lm_epochs: int | None = None,
                  lm_lr: float = 5e-3) -> list[dict]:
        """The whole recipe. AWD-LSTM route: first a language model on the data's own texts
        (``lm_epochs``, unless the encoder came trained), then the classifier by gradual
        unfreezing (the head, then one more layer group per epoch, then everything) with
        discriminative rates (each group 2.6 times slower than the next). Transformer route:
        one epoch of the head, then everything with rates rising towards the head.

        Example:
            >>> learn.fine_tune(4)  # doctest: +SKIP
        """
        if self.kind != "classifier":
            raise ValueError("fine_tune is for classifiers; train a language model with fit.")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}.")
        if not self.lm_trained:
            self.train_language_model(lm_epochs, lm_lr)
        transformer = not isinstance(self.model, rnn.RNNClassifier)
        lr = lr or (1e-4 if transformer else 2e-2)
        n = len(self.layer_groups())
        rows = []
        self.freeze_to(-1)
        rows += self.fit(lr * 10 if transformer else lr, 1)
        if transformer:
            if epochs > 1:
                self.unfreeze()
                rows += self.fit(slice(lr / 2.6 ** (n - 1), lr * 3), epochs - 1)
            return rows
        stages = [-2, -3][: max(0, epochs - 2)]
        for i, stage in enumerate(stages):
            self.freeze_to(max(stage, -n))
            rate = lr / 2 ** (i + 1)
            rows += self.fit(slice(rate / 2.6 ** 4, rate), 1)
        if epochs - 1 - len(stages) > 0:
            self.unfreeze()
            rate = lr / 10
            rows += self.fit(slice(rate / 2.6 ** 4, rate), epochs - 1 - len(stages))
        return rows

    def train_language_model(self, epochs: int | None = None, lr: float = 5e-3) -> TextLearner:
        """Train the AWD-LSTM language model on train + unlabelled texts and take its encoder."""
        lm = language_model(self.text_data, arch="awd_lstm", tokenizer=self.tokenizer,
                            device=self.device, seed=self.seed, progress=self.progress,
                            **self.lm_config)
        if self.progress:
            print(f"Language model: {lm.data.steps('train') * lm.data.bptt * lm.data.batch_size:,}"
                  f" training tokens, vocabulary {self.tokenizer.vocab_size:,}")
        if not self._checkpoints.enabled:
            lm.checkpoint_dir = False
        lm.fit(lr, epochs or default_lm_epochs(lm))
        self.model.encoder.load_state_dict(lm.model.encoder.state_dict())
        self.lm_trained, self.lm = True, lm
        return lm

    # ---- using it ----------------------------------------------------------------------

    def encode(self, texts: list[str]) -> DocBatches:
        """Raw texts as validation-style batches of this learner's documents."""
        ids, offsets = T.encode(self.tokenizer, texts, cache=False)
        labels = np.zeros(len(texts), dtype=np.int64)
        return DocBatches({"valid": (ids, offsets, labels)}, self.tokenizer.pad_id,
                          self.batch_size(), self.max_len, *self.markers())

    def markers(self) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        if tok.kind == "wordpiece":
            return [tok.bos_id], [tok.sep_id]
        return [tok.bos_id], []

    def batch_size(self) -> int:
        return getattr(self.data, "batch_size", 64)

    @torch.inference_mode()
    def predict(self, texts: list[str] | str | None = None) -> np.ndarray:
        """Log-probabilities (N, C) of each text, in the order given (``None``: validation).

        Example:
            >>> learn.predict(["A masterpiece.", "Not again."])  # doctest: +SKIP
        """
        if self.kind != "classifier":
            raise ValueError("predict is for classifiers; a language model has generate().")
        if texts is None:
            out, _ = self.get_preds()
            return torch.log_softmax(out.float(), -1).cpu().numpy()
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("predict got no texts; pass a list of strings.")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"predict needs strings; item {bad[0]} is a "
                            f"{type(texts[bad[0]]).__name__}.")
        order = np.argsort([len(t) for t in texts], kind="stable")
        docs = self.encode([texts[i] or " " for i in order])
        int8 = (self._int8.of(self.model) if self.cpu_int8 and self.device.type == "cpu"
                and isinstance(self.model, rnn.RNNClassifier) else None)
        out, _ = self.get_preds(docs.batches("valid", self.device, False, 0), module=int8)
        logp = torch.log_softmax(out.float(), -1).cpu().numpy()
        result = np.empty_like(logp)
        result[order] = logp
        return result

    def predict_labels(self, texts: list[str]) -> list[str]:
        """The most likely class name of each text."""
        return [self.classes[i] for i in self.predict(texts).argmax(1)]

    @torch.inference_mode()
    def generate(self, prompt: str, n: int | None = None, temperature: float = 1.0,
                 top_k: int | None = None, n_words: int | None = None,
                 seed: int | None = None) -> str:
        """Continue ``prompt`` by ``n`` tokens (characters or words; ``n_words`` is the same),
        sampling from softmax(logits / temperature), among the ``top_k`` likeliest if given.

        Example:
            >>> lm.generate("PREFACE", n=400, temperature=0.8)  # doctest: +SKIP
        """
        if self.kind != "lm":
            raise ValueError("generate needs a language model (Learner.language_model).")
        n = n if n is not None else (n_words if n_words is not None else 100)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a whole number >= 1.")
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} must be above 0 (1 = as learned).")
        missing = self.tokenizer.unknown(prompt)
        if missing:
            raise ValueError(f"The prompt has characters the model never saw: {missing[:10]}.")
        ids = [self.tokenizer.bos_id, *self.tokenizer.encode([prompt])[0].tolist()]
        if self.tokenizer.kind == "char" and getattr(self.model, "config", {}).get("stream"):
            ids = ids[1:]
        gen = torch.Generator(device=self.device).manual_seed(self.seed if seed is None else seed)
        never = [self.tokenizer.pad_id, self.tokenizer.unk_id]
        out = sample(self.model.eval(), ids, n, temperature, top_k, never, gen)
        joiner = "" if self.tokenizer.kind == "char" else " "
        return prompt + joiner + self.tokenizer.decode(out)

    def save_encoder(self, path: str | os.PathLike) -> Path:
        """Save the AWD-LSTM encoder (and tokenizer) for ``text_classifier(encoder=path)``."""
        encoder = self.model.encoder if hasattr(self.model, "encoder") else None
        if not isinstance(encoder, rnn.AWDLSTM):
            raise ValueError("save_encoder needs an AWD-LSTM model (arch='awd_lstm').")
        info = {"application": APPLICATION, "kind": "encoder", "model": encoder.config,
                "tokenizer": self.tokenizer.describe()}
        return saving.write_model(path, encoder.state_dict(), info)

    def interpret(self, texts: list[str] | None = None):
        """Most confidently wrong validation texts and per-word attributions; see
        :class:`threeline.text.interpret.TextInterpretation`."""
        from threeline.text.interpret import TextInterpretation

        return TextInterpretation(self, texts)

    # ---- saving ------------------------------------------------------------------------

    def describe(self) -> dict:
        return {"application": APPLICATION, "kind": self.kind,
                "model_class": type(self.model).__name__, "model": self.model.config,
                "tokenizer": self.tokenizer.describe(), "classes": self.classes,
                "max_len": self.max_len, "loss": self.loss.describe()}

    @property
    def text_data(self) -> TextData:
        data = getattr(self.data, "text_data", None)
        if data is None:
            raise ValueError("This learner has no TextData (it was loaded to predict).")
        return data


def default_lm_epochs(lm: TextLearner) -> int:
    """More passes over small corpora: about 40 million tokens in all, 1 to 10 epochs."""
    per_epoch = lm.data.steps("train") * lm.data.bptt * lm.data.batch_size
    return int(min(10, max(1, round(4e7 / max(per_epoch, 1)))))


def _check_data(data) -> None:
    if not isinstance(data, TextData):
        raise TypeError(f"data must be a TextData (TextData.from_folder, from_csv, from_file), "
                        f"got {type(data).__name__}.")


def language_model(data: TextData, arch: str | None = None, n_layers: int | None = None,
                   hidden: int | None = None, emb_size: int | None = None,
                   dropout: float | None = None, bptt: int | None = None,
                   batch_size: int | None = None,
                   vocab_size: int = 30000, min_freq: int = 3,
                   tokenizer: T.Tokenizer | None = None, device=None, seed: int = 0,
                   progress: bool = True, **awd_args) -> TextLearner:
    """A next-token model of ``data``'s texts (train + unlabelled; valid texts validate).

    ``arch``: "awd_lstm" (default for words and BPE) or "lstm"/"gru"/"rnn" (default "lstm"
    for characters). The table shows accuracy, perplexity, and bits per character at
    ``level="char"``; ``valid_loss`` is nats per token. ``batch_size``: rows of the token
    stream (default 64, fewer when the validation text is short).

    Example:
        >>> text = TextData.from_file("nietzsche.txt", level="char")  # doctest: +SKIP
        >>> lm = language_model(text, arch="lstm", n_layers=2, hidden=512)  # doctest: +SKIP
    """
    _check_data(data)
    char = data.level == "char"
    arch = arch or ("lstm" if char else "awd_lstm")
    if arch not in ("awd_lstm", *rnn.ARCHS):
        raise ValueError(f"arch={arch!r} is not known; use 'awd_lstm', 'lstm', 'gru' or 'rnn'.")
    if tokenizer is None:
        texts = data.lm_texts("train") + (data.valid_texts if char else [])
        tokenizer = T.train_tokenizer(texts, data.level, vocab_size, min_freq)
    bptt = bptt or (200 if char else 70)
    streams = [T.stream(tokenizer, data.lm_texts(s), data.stream) for s in ("train", "valid")]
    if batch_size is None:  # 64 rows, fewer when the validation text is short
        batch_size = max(1, min(64, min(map(len, streams)) // (2 * bptt + 1)))
    batches = StreamBatches(*streams, batch_size=batch_size, bptt=bptt)
    batches.text_data = data
    if arch == "awd_lstm":
        config = {**AWD_DEFAULTS, **{k: v for k, v in dict(
            emb_size=emb_size, hidden=hidden, n_layers=n_layers).items() if v is not None},
            **awd_args, "pad_id": tokenizer.pad_id}
        model = rnn.AWDLanguageModel(tokenizer.vocab_size, **config)
        splitter = _awd_lm_groups
    else:
        config = {**CHAR_DEFAULTS, **{k: v for k, v in dict(
            n_layers=n_layers, hidden=hidden, dropout=dropout).items() if v is not None}}
        model = rnn.RNNLanguageModel(tokenizer.vocab_size, arch, emb_size=emb_size, **config)
        splitter = None
    model.config["stream"] = data.stream
    return TextLearner(model, batches, tokenizer, "lm", loss=NextToken(per_char=char),
                       splitter=splitter, device=device, seed=seed, progress=progress,
                       clip=0.1 if arch == "awd_lstm" else 1.0)


def _awd_lm_groups(model: rnn.AWDLanguageModel) -> list[list[nn.Parameter]]:
    groups = model.encoder.groups()
    groups[-1] = groups[-1] + [model.decoder.bias]
    return groups


def text_classifier(data: TextData, encoder: str | os.PathLike = "awd_lstm",
                    max_len: int | None = None, batch_size: int | None = None,
                    vocab_size: int = 30000, min_freq: int = 3, lm_config: dict | None = None,
                    device=None, seed: int = 0, progress: bool = True) -> TextLearner:
    """A classifier of ``data``'s labelled texts.

    ``encoder``: "awd_lstm" (a language model trained on your texts first, by
    :meth:`TextLearner.fine_tune`), a file saved by ``save_encoder``, "minilm" (the bundled
    all-MiniLM-L6-v2) or a local Hugging Face model folder. Texts longer than ``max_len``
    tokens keep their first quarter and last three quarters.

    Example:
        >>> learn = text_classifier(data, encoder="minilm")  # doctest: +SKIP
    """
    _check_data(data)
    if not data.labelled:
        raise ValueError("This TextData has no labels (from_file makes language-model data); "
                         "use from_folder, from_csv or from_df for a classifier.")
    name = str(encoder)
    saved = name not in ("awd_lstm", "minilm") and saving.model_paths(name)[1].is_file()
    if name == "awd_lstm" or saved:
        if saved:
            info, tensors = saving.read_model(name)
            tokenizer = T.Tokenizer.from_description(info["tokenizer"])
            config = {k: v for k, v in info["model"].items() if k != "vocab_size"}
        else:
            tokenizer = T.train_tokenizer(data.lm_texts("train"), data.level, vocab_size,
                                          min_freq)
            config = {**AWD_DEFAULTS, **(lm_config or {}), "pad_id": tokenizer.pad_id}
        model = rnn.RNNClassifier(tokenizer.vocab_size, len(data.classes), **config)
        if saved:
            model.encoder.load_state_dict(tensors)
        max_len, batch_size = max_len or 1024, batch_size or 64
        splitter = _groups
    else:
        from threeline.text.transformer import TransformerClassifier, resolve_folder

        folder = resolve_folder(encoder)
        tokenizer = T.Tokenizer.from_folder(folder)
        model = TransformerClassifier.from_folder(folder, len(data.classes))
        max_len, batch_size, config = max_len or 512, batch_size or 32, None
        splitter = _groups
    learn = TextLearner(model, None, tokenizer, "classifier", list(data.classes), max_len,
                        lm_config=None if saved or config is None else config, loss=CrossEntropy(),
                        splitter=splitter, device=device, seed=seed, progress=progress,
                        clip=0.1 if isinstance(model, rnn.RNNClassifier) else 1.0)
    learn.data = _doc_batches(learn, data, batch_size)
    return learn


def _groups(model: nn.Module) -> list[list[nn.Parameter]]:
    return model.groups()


def _doc_batches(learn: TextLearner, data: TextData, batch_size: int) -> DocBatches:
    splits = {}
    for split, texts, labels in (("train", data.train_texts, data.train_labels),
                                 ("valid", data.valid_texts, data.valid_labels)):
        ids, offsets = T.encode(learn.tokenizer, texts)
        splits[split] = (ids, offsets, labels)
    batches = DocBatches(splits, learn.tokenizer.pad_id, batch_size, learn.max_len,
                         *learn.markers())
    batches.text_data = data
    return batches


def rebuild(description: dict, tensors: dict[str, torch.Tensor], device=None, data=None,
            progress: bool = True) -> TextLearner:
    """A learner from ``learn.save`` files (called by ``Learner.load``)."""
    kind = description.get("kind")
    tokenizer = T.Tokenizer.from_description(description["tokenizer"])
    config = dict(description["model"])
    if kind == "lm":
        stream = config.pop("stream", False)
        if description["model_class"] == "AWDLanguageModel":
            model = rnn.AWDLanguageModel(**config)
        else:
            model = rnn.RNNLanguageModel(**config)
        model.config["stream"] = stream
        loss = NextToken(**{k: v for k, v in description["loss"].items() if k != "name"})
    elif kind == "classifier":
        if description["model_class"] == "RNNClassifier":
            model = rnn.RNNClassifier(**config)
        else:
            from threeline.text.transformer import TransformerClassifier

            model = TransformerClassifier(**config)
        loss = CrossEntropy()
    else:
        raise saving.ModelFileError(f"Unknown text model kind {kind!r}; a saved encoder is used "
                                    f"as text_classifier(data, encoder=path).")
    model.load_state_dict(tensors)
    learn = TextLearner(model, None, tokenizer, kind, description.get("classes"),
                        description.get("max_len", 1024), loss=loss, device=device,
                        progress=progress, splitter=_groups if kind == "classifier" else None)
    if data is not None:
        learn.data = _doc_batches(learn, data, 64) if kind == "classifier" else None
    return learn
