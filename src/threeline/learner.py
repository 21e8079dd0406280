"""The Learner: a pretrained body, a new head, data, and the loops that train and predict.

    data = ImageData.from_folder("data/dogscats", size=224)
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)
    learn.fit(0.01, 3)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from threeline import features as feature_cache
from threeline import schedules
from threeline.data import ImageData
from threeline.images import is_image_file
from threeline.model import Body, make_head, param_groups
from threeline.progress import EpochTable, Progress
from threeline.transforms import Preprocess, normalize
from threeline.weights import DEFAULT_ARCH, cache_dir, create_backbone


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Learner:
    """Trains and uses an image classifier. Create one with :meth:`Learner.pretrained`."""

    def __init__(self, body: Body, head: nn.Module, data: ImageData, preprocess: Preprocess,
                 arch: str, weights_id: str, device: torch.device, seed: int = 0,
                 cache: Path | None = None, progress: bool = True):
        self.body, self.head, self.data, self.preprocess = body, head, data, preprocess
        self.arch, self.weights_id, self.device, self.seed = arch, weights_id, device, seed
        self.cache = Path(cache) if cache is not None else cache_dir()
        self.progress = progress
        self.history: list[dict] = []
        self._precompute = False
        self._cached: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.body.to(device)
        self.head.to(device)
        if device.type == "cuda":
            self.body.to(memory_format=torch.channels_last)
        self.freeze()

    @classmethod
    def pretrained(cls, arch: str | None = None, data: ImageData | None = None,
                   precompute: bool = False, device: str | torch.device | None = None,
                   weights: str | os.PathLike | None = None, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, hidden: int = 512,
                   dropout: float = 0.25, progress: bool = True) -> Learner:
        """An ImageNet-pretrained backbone with a new head for ``len(data.classes)`` classes.

        Args:
            arch: a name from :func:`threeline.available_models` (works offline) or any timm
                model name (downloads weights when online). None picks ``efficientnet_lite2``.
            data: an :class:`ImageData`.
            precompute: cache the frozen backbone's activations once and train the head on them.
            device: ``"cuda"``, ``"cpu"``, ...; None picks CUDA when present.
            weights: a local weights file to use instead of the default source.
            seed: makes the head's initialisation and the batch order repeatable.
            cache_dir: where activations are cached (default: :func:`threeline.cache_dir`).
            hidden, dropout: the head's hidden width and dropout.
            progress: show progress bars / lines.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> data = ImageData.from_folder(demo_path(), size=224)
            >>> learn = Learner.pretrained("efficientnet_lite0", data)
            >>> learn.classes
            ['cats', 'dogs']
        """
        if not isinstance(data, ImageData):
            raise TypeError(
                f"data must be an ImageData (e.g. ImageData.from_folder('path/to/images')), "
                f"got {type(data).__name__}."
            )
        arch = arch or DEFAULT_ARCH
        network, config, weights_id = create_backbone(arch, weights=weights)
        body = Body(network)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = make_head(body.out_features, len(data.classes), hidden, dropout)
        device = torch.device(device) if device is not None else default_device()
        learn = cls(body, head, data, Preprocess.from_config(config, data.size), arch,
                    weights_id, device, seed, cache_dir, progress)
        learn.precompute = precompute
        return learn

    # ----------------------------------------------------------------- state

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    @property
    def model(self) -> nn.Sequential:
        """The whole network: images (B, 3, S, S) -> logits (B, C)."""
        return nn.Sequential(self.body, self.head)

    @property
    def precompute(self) -> bool:
        """Train the head on cached backbone activations (needs a frozen backbone)."""
        return self._precompute

    @precompute.setter
    def precompute(self, value: bool) -> None:
        if value and any(p.requires_grad for p in self.body.parameters()):
            raise ValueError("precompute=True needs a frozen backbone: call learn.freeze() first.")
        self._precompute = bool(value)

    def freeze(self) -> None:
        """Train only the head; the body's BatchNorm statistics stay as pretrained."""
        for p in self.body.parameters():
            p.requires_grad_(False)

    def unfreeze(self) -> None:
        """Train the whole network. Switches precompute off."""
        self._precompute = False
        for p in self.body.parameters():
            p.requires_grad_(True)

    def _body_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.body.parameters())

    # ----------------------------------------------------------------- features

    def backbone_description(self) -> dict:
        """What determines the activations (used in the cache key)."""
        p = self.preprocess
        return {"arch": self.arch, "weights": self.weights_id, "size": p.size,
                "crop_pct": p.crop_pct, "interpolation": p.interpolation,
                "mean": list(p.mean), "std": list(p.std), "pool": "catavgmax"}

    def features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached activations of ``split``: (N, D) float32 and (N,) int64 labels, on the device.

        Computed once (and written to the cache folder); later calls and later runs read them.
        """
        if split in self._cached:
            return self._cached[split]
        part = self.data.split(split)
        key = feature_cache.cache_key(self.backbone_description(), part.files, part.labels)
        folder = self.cache / "features"
        tensors = feature_cache.load(folder, key)
        if tensors is None:
            acts = self._run_body(part.files, desc=f"precompute {split}")
            tensors = {"features": acts, "labels": torch.tensor(part.labels, dtype=torch.int64)}
            feature_cache.save(folder, key, tensors)
        pair = (tensors["features"].to(self.device), tensors["labels"].to(self.device))
        self._cached[split] = pair
        return pair

    @torch.inference_mode()
    def _run_body(self, items: Sequence, desc: str) -> torch.Tensor:
        """Pooled activations (N, D) float32 on the CPU, for files or PIL images."""
        self.body.eval()
        out = torch.empty(len(items), self.body.out_features, dtype=torch.float32)
        start = 0
        with Progress(len(items), desc, unit="img", enabled=self.progress) as bar:
            for images, _ in self._image_batches(items, None, shuffle=False):
                with self._autocast():
                    acts = self.body(images).float()  # (B, D)
                out[start:start + len(acts)] = acts.cpu()
                start += len(acts)
                bar.update(len(acts))
        return out

    def _image_batches(self, items: Sequence, labels: Sequence[int] | None, shuffle: bool,
                       transform=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalized float image batches (B, 3, S, S) and labels (B,) on the device."""
        cuda = self.device.type == "cuda"
        generator = torch.Generator().manual_seed(self.seed + len(self.history))
        loader = self.data.loader(items, labels, transform or self.preprocess, shuffle=shuffle,
                                  pin_memory=cuda, generator=generator)
        for images, targets in loader:
            images = images.to(self.device, non_blocking=True)
            images = normalize(images, self.preprocess.mean, self.preprocess.std)
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, targets.to(self.device, non_blocking=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------- training

    def fit(self, lr: float, epochs: int = 1, wd: float = 0.01,
            schedule: str | schedules.Schedule = "one_cycle") -> list[dict]:
        """Train for ``epochs`` epochs with peak learning rate ``lr``; print one row per epoch.

        Args:
            lr: peak learning rate (AdamW).
            epochs: passes over the training set.
            wd: decoupled weight decay (not applied to norms and biases).
            schedule: ``"one_cycle"`` (default) or ``"constant"``, or a function of progress.

        Returns:
            One dict per epoch: epoch, train_loss, valid_loss, accuracy, time (seconds).

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0",
            ...     ImageData.from_folder(demo_path()), precompute=True, progress=False)
            >>> rows = learn.fit(0.01, 1)  # doctest: +ELLIPSIS
            epoch  train_loss  valid_loss  accuracy    time
            0      ...
        """
        _check_positive(lr=lr, epochs=epochs)
        if wd < 0:
            raise ValueError(f"wd must be >= 0, got {wd!r}.")
        shape = schedules.get(schedule)
        if self.precompute:  # compute (or load) the cache before the clock starts
            self.features("train"), self.features("valid")
        trainable = self.head if self.precompute else self.model
        optimizer = torch.optim.AdamW(param_groups(trainable, wd), lr=lr, betas=(0.9, 0.99))
        total = self._steps_per_epoch() * epochs
        table = EpochTable(["epoch", "train_loss", "valid_loss", "accuracy", "time"])
        rows: list[dict] = []
        try:
            for _ in range(epochs):
                start = time.perf_counter()
                losses = []
                for xb, yb in self._train_batches():
                    step = len(rows) * self._steps_per_epoch() + len(losses)
                    for group in optimizer.param_groups:
                        group["lr"] = lr * shape(min(step / total, 1.0))
                    losses.append(self._train_step(trainable, optimizer, xb, yb))
                valid_loss, accuracy = self.validate()
                row = {"epoch": len(self.history), "train_loss": _mean(losses),
                       "valid_loss": valid_loss, "accuracy": accuracy,
                       "time": f"{time.perf_counter() - start:.2f}s"}
                self.history.append(row)
                rows.append(row)
                table.row(row)
                self._end_epoch(row)
        except KeyboardInterrupt:
            self._interrupted()
        return rows

    def _end_epoch(self, row: dict) -> None:
        """Called after each finished epoch (checkpoints hook in here)."""

    def _interrupted(self) -> None:
        """Ctrl-C during fit: keep the last finished epoch and leave the learner usable."""
        print(f"Interrupted: kept the model after epoch {len(self.history) - 1}.", flush=True)

    def _steps_per_epoch(self) -> int:
        n, bs = len(self.data.train), self.data.batch_size
        return max(1, n // bs) if self.precompute and n > bs else max(1, -(-n // bs))

    def _train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.precompute:
            yield from self._image_batches(self.data.train.files, self.data.train.labels,
                                           shuffle=True)
            return
        x, y = self.features("train")  # (N, D), (N,)
        generator = torch.Generator(device=self.device).manual_seed(self.seed + len(self.history))
        order = torch.randperm(len(x), device=self.device, generator=generator)
        bs = self.data.batch_size
        for start in range(0, len(x) - bs + 1 if len(x) > bs else 1, bs):
            idx = order[start:start + bs]
            yield x[idx], y[idx]

    def _train_step(self, trainable: nn.Module, optimizer, xb, yb) -> torch.Tensor:
        trainable.train()
        if self._body_frozen():
            self.body.eval()  # pretrained BatchNorm statistics stay fixed while frozen
        with self._autocast():
            logits = trainable(xb)
            loss = F.cross_entropy(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    @torch.inference_mode()
    def validate(self) -> tuple[float, float]:
        """(loss, accuracy) on the validation set."""
        log_probs = self._valid_log_probs()  # (N, C)
        y = torch.tensor(self.data.valid.labels, device=log_probs.device)
        loss = F.nll_loss(log_probs, y).item()
        accuracy = (log_probs.argmax(1) == y).float().mean().item()
        return loss, accuracy

    # ----------------------------------------------------------------- prediction

    def _valid_log_probs(self) -> torch.Tensor:
        if self.precompute:
            x, _ = self.features("valid")
            self.head.eval()
            with torch.inference_mode():
                return F.log_softmax(self.head(x).float(), dim=1)
        return self._log_probs(self.data.valid.files)

    @torch.inference_mode()
    def _log_probs(self, items: Sequence) -> torch.Tensor:
        self.body.eval()
        self.head.eval()
        outs = []
        for images, _ in self._image_batches(items, None, shuffle=False):
            with self._autocast():
                logits = self.head(self.body(images))  # (B, C)
            outs.append(F.log_softmax(logits.float(), dim=1))
        return torch.cat(outs)

    def predict(self, items: Sequence | str | os.PathLike | Image.Image | None = None) -> np.ndarray:
        """Log-probabilities (N, C) for the validation set, or for new images.

        Args:
            items: None for the validation set (in ``data.valid.files`` order); else a file, a
                folder (its images, sorted, recursively), a PIL image, or a list of those.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> log_preds = learn.predict()
            >>> np.allclose(np.exp(log_preds).sum(1), 1, atol=1e-4)
            True
        """
        if items is None:
            return self._valid_log_probs().cpu().numpy()
        return self._log_probs(expand_items(items)).cpu().numpy()


def _mean(losses: list[torch.Tensor]) -> float:
    return float(torch.stack(losses).mean()) if losses else float("nan")


def expand_items(items) -> list:
    """A flat list of files and PIL images from files, folders, PIL images or lists of them."""
    if isinstance(items, (str, os.PathLike, Image.Image)):
        items = [items]
    out: list = []
    for item in items:
        if isinstance(item, Image.Image):
            out.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither an image file nor a folder.")
    if not out:
        raise ValueError("No images to predict on: the files and folders given hold none.")
    return out


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}.")
