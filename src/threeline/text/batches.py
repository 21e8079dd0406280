"""Text as batches on the device: token streams for language models, padded documents for
classifiers. Both follow the core's data protocol (``batches(split, device, shuffle, seed)``,
``steps(split)``).

    lm = StreamBatches(train_ids, valid_ids, batch_size=64, bptt=70)
    x, y = next(iter(lm.batches("train", device, True, 0)))   # x = (tokens (B, T), keep (1,))
    docs = DocBatches({"train": (ids, offsets, labels), "valid": ...}, pad_id=1, batch_size=64)
    x, y = next(iter(docs.batches("valid", device, False, 0)))  # x = (tokens (B, T), lengths (B,))
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from threeline.batches import check_split


class StreamBatches:
    """A language model's data: each split's tokens as one stream cut into ``batch_size`` rows
    that stay on the device; batch i is columns [i*T, (i+1)*T) of every row, its targets one
    step later. The model carries its state from batch to batch (``keep`` is 0 on the first
    batch of a pass, else 1). Shuffling moves the start by a random offset below ``bptt``.

    Example:
        >>> lm = StreamBatches(np.arange(100), np.arange(50), batch_size=2, bptt=5)
        >>> lm.steps("train"), lm.steps("valid")
        (9, 4)
        >>> (x, keep), y = next(iter(lm.batches("valid", torch.device("cpu"), False, 0)))
        >>> x.tolist(), y.tolist(), keep.tolist()
        ([[0, 1, 2, 3, 4], [25, 26, 27, 28, 29]], [[1, 2, 3, 4, 5], [26, 27, 28, 29, 30]], [0.0])
    """

    graphable = False

    def __init__(self, train_ids: np.ndarray, valid_ids: np.ndarray, batch_size: int = 64,
                 bptt: int = 70):
        for name, value in (("batch_size", batch_size), ("bptt", bptt)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a whole number >= 1.")
        self.batch_size, self.bptt = batch_size, bptt
        self.ids = {"train": torch.as_tensor(np.asarray(train_ids, dtype=np.int64)),
                    "valid": torch.as_tensor(np.asarray(valid_ids, dtype=np.int64))}
        for split in ("train", "valid"):
            if self.row_length(split) < 2 * bptt + 1:
                raise ValueError(
                    f"The {split} text has {len(self.ids[split]):,} tokens: too few for "
                    f"{batch_size} rows of at least {2 * bptt + 1} tokens. Use a smaller "
                    f"batch_size or bptt, or more text.")
        self._rows: dict = {}

    def for_process(self, rank: int, size: int) -> StreamBatches:
        """The data of process ``rank`` of ``size`` (several GPUs): its own contiguous part of
        each stream, so the model's state still flows from batch to batch; every part has the
        same length, hence the same number of steps.

        Example:
            >>> part = StreamBatches(np.arange(100), np.arange(50), 2, 5).for_process(1, 2)
            >>> part.ids["train"][:3]
            tensor([50, 51, 52])
        """
        parts = {}
        for split, ids in self.ids.items():
            n = len(ids) // size
            parts[split] = ids[rank * n:(rank + 1) * n].numpy()
        return StreamBatches(parts["train"], parts["valid"], self.batch_size, self.bptt)

    def row_length(self, split: str) -> int:
        return len(self.ids[split]) // self.batch_size

    def rows(self, split: str, device: torch.device) -> torch.Tensor:
        """The split as (B, L) on ``device``, moved there once."""
        key = (split, torch.device(device))
        if key not in self._rows:
            n = self.row_length(split)
            self._rows[key] = self.ids[split][: n * self.batch_size].view(
                self.batch_size, n).to(device)
        return self._rows[key]

    def steps(self, split: str) -> int:
        check_split(split)
        n, t = self.row_length(split), self.bptt
        return (n - t) // t if split == "train" else (n - 1) // t

    def batches(self, split: str, device: torch.device, shuffle: bool,
                seed: int) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        rows = self.rows(split, device)  # (B, L)
        start = int(np.random.default_rng(seed).integers(self.bptt)) if shuffle else 0
        first = torch.zeros(1, device=rows.device)
        rest = torch.ones(1, device=rows.device)
        t = self.bptt
        for i in range(self.steps(split)):
            a = start + i * t
            yield (rows[:, a:a + t], first if i == 0 else rest), rows[:, a + 1:a + 1 + t]


def head_tail(ids: np.ndarray, max_len: int) -> np.ndarray:
    """At most ``max_len`` tokens: the first quarter and the last three quarters of a long text.

    Example:
        >>> head_tail(np.arange(10), 4).tolist()
        [0, 7, 8, 9]
    """
    if len(ids) <= max_len:
        return ids
    head = max_len // 4
    return np.concatenate([ids[:head], ids[len(ids) - (max_len - head):]])


class DocBatches:
    """A classifier's data: documents as token ids, batched by similar length.

    ``splits`` maps "train"/"valid" to ``(ids, offsets, labels)`` (flat ids as made by
    :func:`threeline.text.tokens.encode`). Every document starts with ``start`` ids (e.g. a
    begin marker), may end with ``end`` ids, and is cut to ``max_len`` tokens (head + tail).
    Training batches: a seeded shuffle, then sorted by length within buckets of 50 batches,
    the batches in random order. Validation batches keep the documents' order.

    Example:
        >>> ids, offsets = np.arange(10, dtype=np.int32), np.array([0, 3, 10])
        >>> docs = DocBatches({"valid": (ids, offsets, np.array([0, 1]))}, pad_id=1,
        ...                   batch_size=2, start=[2])
        >>> (x, lengths), y = next(iter(docs.batches("valid", torch.device("cpu"), False, 0)))
        >>> x.tolist(), lengths.tolist()
        ([[2, 0, 1, 2, 1, 1, 1, 1], [2, 3, 4, 5, 6, 7, 8, 9]], [4, 8])
    """

    graphable = False

    def __init__(self, splits: dict, pad_id: int, batch_size: int = 64, max_len: int = 1024,
                 start: list[int] = (), end: list[int] = (), bucket: int = 50):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a whole number >= 1.")
        if not isinstance(max_len, int) or max_len < len(start) + len(end) + 1:
            raise ValueError(f"max_len={max_len!r} must leave room for at least one token.")
        self.pad_id, self.batch_size, self.max_len = pad_id, batch_size, max_len
        self.start = np.asarray(start, dtype=np.int64)
        self.end = np.asarray(end, dtype=np.int64)
        self.bucket = bucket
        self.splits = splits

    def size(self, split: str) -> int:
        return len(self.splits[split][1]) - 1 if split in self.splits else 0

    def steps(self, split: str) -> int:
        check_split(split)
        return -(-self.size(split) // self.batch_size)

    def doc(self, split: str, i: int) -> np.ndarray:
        ids, offsets, _ = self.splits[split]
        body = head_tail(ids[offsets[i]:offsets[i + 1]],
                         self.max_len - len(self.start) - len(self.end))
        return np.concatenate([self.start, body, self.end])

    def lengths(self, split: str) -> np.ndarray:
        _, offsets, _ = self.splits[split]
        extra = len(self.start) + len(self.end)
        return np.minimum(np.diff(offsets) + extra, self.max_len)

    def order(self, split: str, shuffle: bool, seed: int) -> list[np.ndarray]:
        """Indices of each batch in the order they are served."""
        n, bs = self.size(split), self.batch_size
        if not shuffle:
            return [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)]
        rng = np.random.default_rng(seed)
        perm, lengths = rng.permutation(n), self.lengths(split)
        chunk = bs * self.bucket
        batches = []
        for c in range(0, n, chunk):
            part = perm[c:c + chunk]
            part = part[np.argsort(-lengths[part], kind="stable")]
            batches += [part[i:i + bs] for i in range(0, len(part), bs)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def collate(self, docs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded tokens (B, T) and lengths (B,), on the CPU."""
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        out = np.full((len(docs), int(lengths.max())), self.pad_id, dtype=np.int64)
        for row, d in zip(out, docs, strict=True):
            row[:len(d)] = d
        return torch.from_numpy(out), torch.from_numpy(lengths)

    def batches(self, split: str, device: torch.device, shuffle: bool,
                seed: int) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        check_split(split)
        labels = self.splits[split][2]
        pin = torch.device(device).type == "cuda"
        for index in self.order(split, shuffle, seed):
            tokens, lengths = self.collate([self.doc(split, i) for i in index])
            y = torch.as_tensor(labels[index], dtype=torch.int64)
            if pin:
                tokens, lengths, y = tokens.pin_memory(), lengths.pin_memory(), y.pin_memory()
            yield ((tokens.to(device, non_blocking=pin), lengths.to(device, non_blocking=pin)),
                   y.to(device, non_blocking=pin))
