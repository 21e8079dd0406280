"""Recurrent language models and text classifiers, written from scratch on PyTorch's fused RNNs.

- `RNNLanguageModel`: embedding -> `nn.RNN`/`nn.GRU`/`nn.LSTM` (cuDNN on a GPU) -> dropout ->
  a decoder tied to the embedding. Stateful: the hidden state carries over from one batch to
  the next (truncated back-propagation through time), multiplied by `keep` so that the data can
  say "a new stream starts here" without the host waiting for the device.
- `AWDLSTM`: the AWD-LSTM of Merity et al. (2017): weight-dropped recurrent matrices (DropConnect),
  whole-word embedding dropout, the same dropout mask at every step (locked dropout). Used as
  the language model of the word-level route and as the encoder of its classifier.
- `RNNClassifier`: an encoder's last-layer outputs pooled (last step, max, mean; padding
  ignored) into a small head.

Example:
    >>> model = RNNLanguageModel(vocab_size=60, arch="gru", n_layers=1, hidden=32)
    >>> model(torch.zeros(4, 10, dtype=torch.long)).shape
    torch.Size([4, 10, 60])
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

ARCHS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
# The AWD-LSTM's embedding (tied to its decoder) starts at normal(0, 0.3): from uniform(-0.1,
# 0.1) its language model stayed at the unigram guess on IMDB reviews, on a CPU and on a GPU
# (benchmarks/results/text-imdb-awd-*.md)
EMBED_STD = 0.3


def _scale_state(state, keep: torch.Tensor | None):
    """Detach a state from the last batch's graph; zero it where `keep` is 0."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_scale_state(s, keep) for s in state)
    if isinstance(state, list):
        return [_scale_state(s, keep) for s in state]
    state = state.detach()
    return state if keep is None else state * keep.to(state.dtype)


def _state_fits(state, batch: int) -> bool:
    """Whether a stored state was made for this batch size."""
    while isinstance(state, (tuple, list)):
        state = state[0]
    return state is not None and state.shape[-2] == batch


class RNNLanguageModel(nn.Module):
    """A language model: tokens (B, T) -> next-token logits (B, T, V).

    `arch` is "rnn", "gru" or "lstm"; with `tie_weights` the decoder shares the embedding
    matrix (a linear projection maps the hidden size to the embedding size when they differ).

    Example:
        >>> lm = RNNLanguageModel(vocab_size=50, arch="lstm", n_layers=2, hidden=64)
        >>> logits, state = lm.run(torch.zeros(2, 5, dtype=torch.long))
        >>> logits.shape, state[0].shape
        (torch.Size([2, 5, 50]), torch.Size([2, 2, 64]))
    """

    def __init__(self, vocab_size: int, arch: str = "lstm", n_layers: int = 2, hidden: int = 512,
                 emb_size: int | None = None, dropout: float = 0.2, tie_weights: bool = True):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not known; expected one of {sorted(ARCHS)}.")
        for name, value in (("vocab_size", vocab_size), ("n_layers", n_layers),
                            ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1).")
        emb_size = emb_size or hidden
        self.config = dict(vocab_size=vocab_size, arch=arch, n_layers=n_layers, hidden=hidden,
                           emb_size=emb_size, dropout=dropout, tie_weights=tie_weights)
        self.embed = nn.Embedding(vocab_size, emb_size)
        self.rnn = ARCHS[arch](emb_size, hidden, n_layers, batch_first=True,
                               dropout=dropout if n_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.project = nn.Linear(hidden, emb_size) if tie_weights and hidden != emb_size else None
        self.decoder = nn.Linear(emb_size if tie_weights else hidden, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embed.weight
        self.state = None

    def run(self, tokens: torch.Tensor, state=None):
        """Logits (B, T, V) and the new state for tokens (B, T), starting from `state`."""
        x = self.drop(self.embed(tokens))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        out = self.drop(out)
        if self.project is not None:
            out = self.project(out)  # (B, T, E)
        return self.decoder(out), state  # (B, T, V)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Stateful forward: continues from the last batch's state (times `keep`, shape (1,))."""
        state = self.state if _state_fits(self.state, tokens.shape[0]) else None
        logits, self.state = self.run(tokens, _scale_state(state, keep))
        self.state = _scale_state(self.state, None)
        return logits

    def reset(self) -> None:
        """Forget the carried state."""
        self.state = None


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared by every time step: (B, T, H) -> (B, T, H)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask  # (B, T, H)


def embedding_dropout(embed: nn.Embedding, tokens: torch.Tensor, p: float,
                      training: bool) -> torch.Tensor:
    """Look up tokens (B, T) -> (B, T, E), dropping whole words of the vocabulary with prob p."""
    weight = embed.weight
    if training and p > 0:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask  # (V, E)
    return F.embedding(tokens, weight, embed.padding_idx)


class AWDLSTM(nn.Module):
    """The AWD-LSTM encoder: tokens (B, T) -> last layer's outputs (B, T, E) and the state.

    Each layer is its own single-layer `nn.LSTM` (sizes E -> H -> ... -> E); while training its
    hidden-to-hidden matrix is dropped out (DropConnect, `weight_p`) and passed in with
    `torch.func.functional_call`, so cuDNN still runs it.

    Example:
        >>> enc = AWDLSTM(vocab_size=100, emb_size=16, hidden=32, n_layers=3)
        >>> out, state = enc(torch.zeros(2, 7, dtype=torch.long))
        >>> out.shape, len(state)
        (torch.Size([2, 7, 16]), 3)
    """

    def __init__(self, vocab_size: int, emb_size: int = 400, hidden: int = 1152,
                 n_layers: int = 3, pad_id: int = 1, embed_p: float = 0.02,
                 input_p: float = 0.25, hidden_p: float = 0.15, weight_p: float = 0.2):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers={n_layers!r} must be at least 1.")
        self.config = dict(vocab_size=vocab_size, emb_size=emb_size, hidden=hidden,
                           n_layers=n_layers, pad_id=pad_id, embed_p=embed_p, input_p=input_p,
                           hidden_p=hidden_p, weight_p=weight_p)
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, 0.0, EMBED_STD)
        sizes = [emb_size] + [hidden] * (n_layers - 1) + [emb_size]
        self.layers = nn.ModuleList(
            nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(n_layers))
        self.input_drop = LockedDropout(input_p)
        self.hidden_drops = nn.ModuleList(LockedDropout(hidden_p) for _ in range(n_layers))
        self.embed_p, self.weight_p = embed_p, weight_p

    def _layer(self, layer: nn.LSTM, x: torch.Tensor, state):
        if not (self.training and self.weight_p > 0):
            return layer(x, state)
        params = dict(layer.named_parameters())
        params["weight_hh_l0"] = F.dropout(params["weight_hh_l0"], self.weight_p)
        with warnings.catch_warnings():  # cuDNN notes that the weights are not one flat chunk
            warnings.filterwarnings("ignore", message="RNN module weights")
            return functional_call(layer, params, (x, state))

    def forward(self, tokens: torch.Tensor, state=None):
        x = embedding_dropout(self.embed, tokens, self.embed_p, self.training)  # (B, T, E)
        x = self.input_drop(x)
        new_state = []
        for i, layer in enumerate(self.layers):
            x, s = self._layer(layer, x, None if state is None else state[i])  # (B, T, H_i)
            new_state.append(s)
            x = self.hidden_drops[i](x)
        return x, new_state

    def groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from the input up: embedding, then each layer."""
        return [list(self.embed.parameters())] + [list(la.parameters()) for la in self.layers]


class AWDLanguageModel(nn.Module):
    """AWD-LSTM encoder + tied decoder: tokens (B, T) -> logits (B, T, V); stateful like
    `RNNLanguageModel`.

    Example:
        >>> lm = AWDLanguageModel(vocab_size=100, emb_size=16, hidden=32)
        >>> lm(torch.zeros(2, 7, dtype=torch.long)).shape
        torch.Size([2, 7, 100])
    """

    def __init__(self, vocab_size: int, out_p: float = 0.1, **encoder_args):
        super().__init__()
        self.encoder = AWDLSTM(vocab_size, **encoder_args)
        self.config = dict(vocab_size=vocab_size, out_p=out_p, **encoder_args)
        self.out_drop = LockedDropout(out_p)
        self.decoder = nn.Linear(self.encoder.config["emb_size"], vocab_size)
        self.decoder.weight = self.encoder.embed.weight
        nn.init.zeros_(self.decoder.bias)
        self.state = None

    def run(self, tokens: torch.Tensor, state=None):
        out, state = self.encoder(tokens, state)  # (B, T, E)
        return self.decoder(self.out_drop(out)), state  # (B, T, V)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        state = self.state if _state_fits(self.state, tokens.shape[0]) else None
        logits, state = self.run(tokens, _scale_state(state, keep))
        self.state = _scale_state(state, None)
        return logits

    def reset(self) -> None:
        self.state = None


def masked_concat_pool(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, H) outputs of right-padded sequences -> (B, 3H): last real step, max, mean."""
    steps = torch.arange(out.shape[1], device=out.device)  # (T,)
    valid = (steps[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
    last = out[torch.arange(out.shape[0], device=out.device), (lengths - 1).clamp(min=0)]
    biggest = out.masked_fill(~valid, float("-inf")).amax(1)  # (B, H)
    mean = (out * valid).sum(1) / lengths.clamp(min=1)[:, None].to(out.dtype)  # (B, H)
    return torch.cat([last, biggest, mean], 1)  # (B, 3H)


class PoolingHead(nn.Module):
    """(B, F) pooled features -> (B, C) logits: BatchNorm, dropout, Linear, ReLU, ..."""

    def __init__(self, n_in: int, n_classes: int, hidden: int = 50, p: float = 0.4):
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm1d(n_in), nn.Dropout(p / 4), nn.Linear(n_in, hidden), nn.ReLU(),
            nn.BatchNorm1d(hidden), nn.Dropout(p), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class RNNClassifier(nn.Module):
    """AWD-LSTM encoder + concat pooling + head: (tokens (B, T), lengths (B,)) -> (B, C).

    Example:
        >>> clf = RNNClassifier(vocab_size=100, n_classes=2, emb_size=16, hidden=32)
        >>> clf.eval()(torch.ones(3, 9, dtype=torch.long), torch.tensor([9, 4, 1])).shape
        torch.Size([3, 2])
    """

    def __init__(self, vocab_size: int, n_classes: int, head_hidden: int = 50,
                 head_p: float = 0.4, **encoder_args):
        super().__init__()
        self.encoder = AWDLSTM(vocab_size, **encoder_args)
        self.config = dict(vocab_size=vocab_size, n_classes=n_classes, head_hidden=head_hidden,
                           head_p=head_p, **encoder_args)
        self.head = PoolingHead(3 * self.encoder.config["emb_size"], n_classes, head_hidden,
                                head_p)

    def features(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.encoder(tokens)  # (B, T, E)
        return masked_concat_pool(out, lengths)  # (B, 3E)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens, lengths))  # (B, C)

    def groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from the input up, the head last (for discriminative rates)."""
        return [*self.encoder.groups(), list(self.head.parameters())]
