"""Looking inside a text classifier: its most confident mistakes, and which words moved a
prediction (each word left out in turn: how much the predicted class's log-probability drops).

    interp = learn.interpret()
    interp.most_incorrect(5)                   # [{text, actual, predicted, probability}, ...]
    attr = interp.attribution("A masterpiece, though the ending drags.")
    attr                                       # coloured words in a notebook (_repr_html_)
    attr.top(5); attr.save_png("words.png")
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Attribution:
    """Words of one text and how much each raised (+) or lowered (-) the predicted class."""

    words: list[str]
    scores: np.ndarray
    predicted: str
    probability: float

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` words that moved the prediction most, either way."""
        order = np.argsort(-np.abs(self.scores))[:k]
        return [(self.words[i], float(self.scores[i])) for i in order]

    def colours(self) -> list[tuple[float, float, float, float]]:
        """RGBA per word: green where it supported the prediction, red where it opposed it."""
        scale = float(np.abs(self.scores).max()) or 1.0
        out = []
        for s in self.scores:
            a = min(1.0, abs(float(s)) / scale)
            out.append((0.1, 0.7, 0.2, a) if s > 0 else (0.85, 0.15, 0.15, a))
        return out

    def _repr_html_(self) -> str:
        spans = []
        for word, (r, g, b, a), s in zip(self.words, self.colours(), self.scores, strict=True):
            style = f"background: rgba({int(r * 255)},{int(g * 255)},{int(b * 255)},{a:.2f})"
            spans.append(f'<span style="{style}" title="{s:+.3f}">{html.escape(word)}</span>')
        head = (f"<b>{html.escape(self.predicted)}</b> ({self.probability:.1%}) — green words "
                f"supported it, red ones opposed it<br>")
        return f"<div style='line-height:1.8'>{head}{' '.join(spans)}</div>"

    def save_png(self, path: str | os.PathLike, width: float = 10.0,
                 max_words: int = 400) -> Path:
        """The coloured words as a PNG (the first ``max_words``)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        words, colours = self.words[:max_words], self.colours()[:max_words]
        fig = plt.figure(figsize=(width, 1 + 0.25 * (1 + len(" ".join(words)) // 110)))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.axis("off")
        renderer = fig.canvas.get_renderer()
        x, y, line = 0.01, 0.95, 0.3 / fig.get_figheight()
        ax.text(x, y, f"{self.predicted} ({self.probability:.1%})", weight="bold",
                va="top", fontsize=10)
        y -= line
        for word, colour in zip(words, colours, strict=True):
            t = ax.text(x, y, word, va="top", fontsize=9,
                        bbox=dict(facecolor=colour, edgecolor="none", pad=1))
            w = t.get_window_extent(renderer).width / fig.bbox.width
            if x + w > 0.99 and x > 0.01:
                x, y = 0.01, y - line
                t.set_position((x, y))
            x += w + 0.006
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


class TextInterpretation:
    """A classifier's validation predictions (or ``texts``') set beside the truth."""

    def __init__(self, learn, texts: list[str] | None = None):
        if learn.kind != "classifier":
            raise ValueError("interpret() needs a text classifier.")
        self.learn = learn
        if texts is None:
            data = learn.text_data
            self.texts, self.actual = data.valid_texts, np.asarray(data.valid_labels)
        else:
            self.texts, self.actual = list(texts), None
        self.log_probs = learn.predict(self.texts)  # (N, C)
        self.predicted = self.log_probs.argmax(1)

    def most_incorrect(self, k: int = 5) -> list[dict]:
        """The ``k`` wrong predictions made with the highest probability."""
        if self.actual is None:
            raise ValueError("most_incorrect needs labels: call learn.interpret() without texts.")
        wrong = np.flatnonzero(self.predicted != self.actual)
        conf = self.log_probs[wrong, self.predicted[wrong]]
        classes = self.learn.classes
        return [{"text": self.texts[i], "actual": classes[self.actual[i]],
                 "predicted": classes[self.predicted[i]],
                 "probability": float(np.exp(self.log_probs[i, self.predicted[i]]))}
                for i in wrong[np.argsort(-conf)][:k]]

    def show_most_incorrect(self, k: int = 5, chars: int = 300) -> None:
        """Print the most confident mistakes, one short paragraph each."""
        for row in self.most_incorrect(k):
            print(f"[{row['actual']} -> {row['predicted']} {row['probability']:.1%}] "
                  f"{row['text'][:chars]}")

    def confusion_matrix(self) -> np.ndarray:
        """(C, C) counts: rows actual, columns predicted."""
        n = len(self.learn.classes)
        return np.bincount(self.actual * n + self.predicted, minlength=n * n).reshape(n, n)

    @torch.inference_mode()
    def attribution(self, text: str | int, batch_size: int = 64) -> Attribution:
        """Each word of ``text`` (or of validation text number ``text``) left out in turn."""
        learn = self.learn
        if isinstance(text, (int, np.integer)):
            text = self.texts[int(text)]
        tok = learn.tokenizer
        ids = tok.encode([text])[0][: learn.max_len - 2]
        spans = word_spans(tok.tokens(ids), tok.kind)
        variants = [ids] + [np.concatenate([ids[:a], ids[b:]]) for a, b in spans]
        logp = _score(learn, variants, batch_size)  # (1 + W, C)
        cls = int(logp[0].argmax())
        scores = logp[0, cls] - logp[1:, cls]
        words = [tok.decode(ids[a:b]).strip() or tok.tokens(ids[a:b])[0] for a, b in spans]
        return Attribution(words, scores, learn.classes[cls], float(np.exp(logp[0, cls])))


def word_spans(pieces: list[str], kind: str) -> list[tuple[int, int]]:
    """[start, end) token ranges of whole words: WordPiece '##' pieces and BPE pieces without
    the '▁' marker continue the word before them.

    Example:
        >>> word_spans(["great", "##ly", "fun"], "wordpiece")
        [(0, 2), (2, 3)]
    """
    spans: list[tuple[int, int]] = []
    for i, piece in enumerate(pieces):
        joins = (kind == "wordpiece" and piece.startswith("##")) or \
                (kind == "bpe" and not piece.startswith("▁"))
        if joins and spans:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def _score(learn, variants: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Log-probabilities of token-id sequences (each given its begin/end markers)."""
    from threeline.text.batches import DocBatches

    lengths = np.array([len(v) for v in variants], dtype=np.int64)
    ids = np.concatenate(variants).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    docs = DocBatches({"valid": (ids, offsets, np.zeros(len(variants), dtype=np.int64))},
                      learn.tokenizer.pad_id, batch_size, learn.max_len, *learn.markers())
    out, _ = learn.get_preds(docs.batches("valid", learn.device, False, 0))
    return torch.log_softmax(out.float(), -1).cpu().numpy()
