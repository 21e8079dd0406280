"""The Learner: a pretrained body, a new head, data, and the loops that train and predict.

    data = ImageData.from_folder("data/dogscats", size=224)
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)
    learn.fit(0.01, 3)
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from threeline import augment as augmentation
from threeline import batches, decode, export, head_graph, lr_finder, schedules
from threeline import features as feature_cache
from threeline.checkpoints import Checkpoints
from threeline.data import ImageData
from threeline.fused import fused
from threeline.images import is_image_file
from threeline.interpret import Interpretation
from threeline.model import Body, check_head, layer_groups, make_head, optimizer_groups
from threeline.presize import Presized, presize
from threeline.progress import EpochTable
from threeline.transforms import Preprocess, to_device
from threeline.weights import DEFAULT_ARCH, cache_dir, create_backbone


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def memory_format_for(device: torch.device) -> torch.memory_format:
    """channels_last on a CPU, where efficientnet_lite0 ran 1.8x faster with it on 2 cores; the
    default layout on CUDA. There (bf16, efficientnet_lite2, one H100) channels_last trained at
    2,073 images/s against 1,184, but cost about 10 s of start-up in every new process: it pays
    only beyond about 26,000 training images per run.

    Example:
        >>> memory_format_for(torch.device("cpu"))
        torch.channels_last
    """
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


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
        self.interrupted = False  # True when the latest fit ended with Ctrl-C
        self.train_bn = False  # update the body's BatchNorm statistics when training it
        self._body_norms = [m for m in body.modules()
                            if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._precompute = False
        self._cached: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._augment: augmentation.Augment | None = None
        self._presized: dict[tuple, Presized] = {}
        self.opt: torch.optim.Optimizer | None = None  # the last fit's optimizer
        self.compile = False  # torch.compile the network when training it whole
        self.cuda_graphs = True  # on CUDA, replay the head's step on cached activations
        # (threeline.head_graph); False trains it step by step
        self._compiled: nn.Module | None = None
        self._fused_body: nn.Module | None = None  # made on first use: see _fast_body
        self.body.to(device)
        self.head.to(device)
        self.memory_format = memory_format_for(device)
        self.body.to(memory_format=self.memory_format)
        self.freeze()

    @classmethod
    def pretrained(cls, arch: str | None = None, data: ImageData | None = None,
                   precompute: bool = False, device: str | torch.device | None = None,
                   weights: str | os.PathLike | None = None, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, hidden: int = 512,
                   dropout: float = 0.25, progress: bool = True,
                   augment: str | augmentation.Augment | None = None) -> Learner:
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
            hidden, dropout: the head's hidden width, and its dropout: ``dropout`` before its
                first layer, twice that before its last (so below 0.5).
            progress: show progress bars / lines.
            augment: None, ``"side_on"`` (photos), ``"top_down"`` (satellite, microscopy) or an
                :class:`threeline.augment.Augment`; training batches are augmented on the device.
                Needs ``precompute=False``.

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
        check_head(hidden, dropout)
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
        if augment is not None:
            learn.augment = augment
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
        if value and self._augment is not None:
            warnings.warn(
                "precompute=True trains on activations cached from un-augmented images, so "
                "augmentation would have no effect; precompute stays off. To precompute, set "
                "learn.augment = None first.", UserWarning, stacklevel=2)
            value = False
        self._precompute = bool(value)

    @property
    def augment(self) -> augmentation.Augment | None:
        """The training augmentation: None, or an :class:`threeline.augment.Augment`.

        Set it to None, ``"side_on"``, ``"top_down"`` or an ``Augment(...)``. Cached activations
        cannot be augmented, so setting it while ``precompute`` is on warns and switches
        precompute off.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> learn.augment = "side_on"
            >>> learn.augment.flip
            True
        """
        return self._augment

    @augment.setter
    def augment(self, value: str | augmentation.Augment | None) -> None:
        value = augmentation.get(value)
        if value is not None and self._precompute:
            warnings.warn(
                "Augmentation makes no sense with precompute=True: the cached activations come "
                "from un-augmented images. Switched precompute off; training now runs the whole "
                "(frozen) backbone on augmented images each epoch.", UserWarning, stacklevel=2)
            self._precompute = False
        self._augment = value

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from input to output: [early body, late body, head].

        Differential learning rates (a list or ``slice`` passed to :meth:`fit`) spread over them;
        :meth:`freeze_to` counts them.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> len(learn.layer_groups())
            3
        """
        return layer_groups(self.body, self.head)

    def freeze_to(self, n: int) -> None:
        """Train layer groups ``n`` and later; freeze the earlier ones.

        ``freeze_to(0)`` trains everything, ``freeze_to(-1)`` only the head. BatchNorm layers of
        frozen groups keep their pretrained statistics (they run in eval mode during training),
        so a frozen part of the network computes exactly what it computed before. Training any
        part of the body switches precompute off.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> learn.freeze_to(1)  # train the late body and the head
            >>> [any(p.requires_grad for p in g) for g in learn.layer_groups()]
            [False, True, True]
        """
        groups = self.layer_groups()
        if not isinstance(n, int) or not -len(groups) <= n < len(groups):
            raise ValueError(
                f"freeze_to needs a group index in [-{len(groups)}, {len(groups) - 1}] (there are "
                f"{len(groups)} layer groups: early body, late body, head), got {n!r}.")
        first = n % len(groups)
        for index, params in enumerate(groups):
            for p in params:
                p.requires_grad_(index >= first)
        if not self._body_frozen():
            self._precompute = False
        self._compiled = None

    def freeze(self) -> None:
        """Train only the head; the body's BatchNorm statistics stay as pretrained.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> learn.freeze()
        """
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Train the whole network. Switches precompute off.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> learn.unfreeze()
            >>> learn.precompute
            False
        """
        self.freeze_to(0)

    def _body_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.body.parameters())

    # ----------------------------------------------------------------- features

    def backbone_description(self) -> dict:
        """What determines the activations (used in the cache key)."""
        p = self.preprocess
        return {"arch": self.arch, "weights": self.weights_id, "size": p.size,
                "crop_pct": p.crop_pct, "interpolation": p.interpolation,
                "mean": list(p.mean), "std": list(p.std), "pool": "catavgmax",
                "decoder": "nvjpeg" if decode.available(self.device) else "pillow"}

    def features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached activations of ``split``: (N, D) float32 and (N,) int64 labels, on the device.

        Computed once (and written to the cache folder); later calls and later runs read them.
        """
        if split not in self._cached:
            feature_cache.ensure(self, [split])
        return self._cached[split]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------- training

    def fit(self, lr: float | Sequence[float] | slice, epochs: int = 1, wd: float = 0.01,
            schedule: str | schedules.Schedule | None = None, cycle_len: int | None = None,
            cycle_mult: int = 1) -> list[dict]:
        """Train for ``epochs`` epochs with peak learning rate ``lr``; print one row per epoch.

        Args:
            lr: peak learning rate (AdamW): a number for every layer group, a list with one rate
                per group (see :meth:`layer_groups`), or ``slice(lo, hi)``: ``lo`` for the
                earliest group, ``hi`` for the head, geometrically spaced in between
                (``slice(hi)`` means ``hi / 10`` for the body, ``hi`` for the head).
            epochs: passes over the training set; with ``cycle_len``, the number of cycles.
            wd: decoupled weight decay (not applied to norms and biases).
            schedule: ``"one_cycle"`` (the default: warm up, then anneal), ``"constant"``, or a
                function of progress in [0, 1] returning a multiplier of ``lr``.
            cycle_len, cycle_mult: SGDR, cosine annealing with warm restarts: ``epochs`` cycles,
                the first ``cycle_len`` epochs long, each next one ``cycle_mult`` times longer.
                ``fit(0.01, 3, cycle_len=1, cycle_mult=2)`` runs 1 + 2 + 4 = 7 epochs.

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
        _check_positive(epochs=epochs)
        if wd < 0:
            raise ValueError(f"wd must be >= 0, got {wd!r}.")
        lrs = self.group_lrs(lr)
        if cycle_len is not None:
            if schedule is not None:
                raise ValueError("Pass either schedule= or cycle_len= (SGDR), not both.")
            lengths = schedules.cycle_lengths(epochs, cycle_len, cycle_mult)
            shape, epochs = schedules.sgdr(lengths), sum(lengths)
        else:
            shape = schedules.get(schedule or "one_cycle")
        if self.precompute:  # compute (or load) the cache before the clock starts
            feature_cache.ensure(self, ["train", "valid"])
        trainable = self.head if self.precompute else self.model
        graphed = self.cuda_graphs and self.precompute and self.device.type == "cuda"
        optimizer = self._optimizer(lrs, wd, capturable=graphed)
        if graphed:
            step = head_graph.HeadStep(self.head, optimizer)
        else:
            def step(xb, yb):
                return self._train_step(trainable, optimizer, xb, yb)
        rows: list[dict] = []
        devices = [self.device] if self.device.type == "cuda" else []
        self._checkpoints().begin_fit()
        with torch.random.fork_rng(devices=devices):  # the caller's random state is untouched
            try:
                self._run_epochs(rows, epochs, trainable, optimizer, shape, step)
            except KeyboardInterrupt:
                self._interrupted()
        self._checkpoints().wait()  # the last epoch's weights are on disk when fit returns
        return rows

    def _run_epochs(self, rows: list[dict], epochs: int, trainable: nn.Module,
                    optimizer: torch.optim.Optimizer, shape: schedules.Schedule,
                    step_fn: head_graph.StepFunction) -> None:
        """The epoch loop of :meth:`fit`; appends one row per finished epoch to ``rows``.
        ``step_fn(xb, yb)`` takes one optimizer step and returns the batch's loss."""
        table = EpochTable(["epoch", "train_loss", "valid_loss", "accuracy", "time"])
        per_epoch = self._steps_per_epoch()
        total = per_epoch * epochs
        for _ in range(epochs):
            start = time.perf_counter()
            torch.manual_seed(self.seed * 100_003 + len(self.history))  # dropout, repeatable
            losses = []
            self._set_train_mode(trainable)  # validate() at the end of an epoch sets eval mode
            for xb, yb in batches.train_batches(self):
                step = len(rows) * per_epoch + len(losses)
                for group in optimizer.param_groups:
                    head_graph.set_lr(group, group["base_lr"] * shape(min(step / total, 1.0)))
                losses.append(step_fn(xb, yb))
            valid_loss, accuracy = self.validate()
            row = {"epoch": len(self.history), "train_loss": _mean(losses),
                   "valid_loss": valid_loss, "accuracy": accuracy,
                   "time": f"{time.perf_counter() - start:.2f}s"}
            self.history.append(row)
            rows.append(row)
            table.row(row)
            self._end_epoch(row, body_changed=trainable is not self.head)

    def _end_epoch(self, row: dict, body_changed: bool = True) -> None:
        """After each finished epoch: save the ``last`` (and, if better, ``best``) weights."""
        self.interrupted = False  # True only while the latest fit ended with Ctrl-C
        self._checkpoints().end_epoch(self, row, body_changed)

    def _interrupted(self) -> None:
        """Ctrl-C during fit: go back to the last finished epoch, leave the learner usable.

        Prints where the weights are and sets ``learn.interrupted``.
        """
        self.interrupted = True
        print(self._checkpoints().restore_last(self), flush=True)

    def _checkpoints(self) -> Checkpoints:
        if getattr(self, "_checkpoint_store", None) is None:
            self._checkpoint_store = Checkpoints()
        return self._checkpoint_store

    @property
    def checkpoint_dir(self) -> Path | None:
        """Where ``fit`` saves ``last`` and ``best`` weights after each epoch.

        Defaults to a new folder under ``<cache>/checkpoints/`` (made at the first save; None
        until then). Set a folder to choose it, or ``False`` to save no checkpoints.

        Example:
            >>> learn.checkpoint_dir = "runs/cats/checkpoints"  # doctest: +SKIP
        """
        store = self._checkpoints()
        return None if not store.enabled else store.last.parent if store.last else None

    @checkpoint_dir.setter
    def checkpoint_dir(self, folder: str | os.PathLike | bool | None) -> None:
        if folder is False:
            self._checkpoint_store = Checkpoints(enabled=False)
        else:
            self._checkpoint_store = Checkpoints(None if folder in (None, True) else folder)

    # ----------------------------------------------------------------- saving

    def save(self, path: str | os.PathLike) -> Path:
        """Save the model as ``path.safetensors`` (weights) + ``path.json`` (description).

        No pickle: :meth:`load` reads them back without executing any code.

        Example:
            >>> learn.save("runs/cats/model")  # doctest: +SKIP
            PosixPath('runs/cats/model.safetensors')
        """
        return export.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, data: ImageData | None = None,
             device: str | torch.device | None = None, progress: bool = True) -> Learner:
        """A learner from :meth:`save` files (or a run folder holding ``model.*``).

        Args:
            path: the base name given to ``save``, either file, or a run folder.
            data: an ImageData with the same classes, to validate or train further; None is
                enough to predict.
            device: None picks CUDA when present; a GPU-trained model loads on the CPU too.

        Example:
            >>> learn = Learner.load("runs/cats/model", device="cpu")  # doctest: +SKIP
            >>> learn.predict("new_photos/")  # doctest: +SKIP
        """
        return export.load(path, data=data, device=device, progress=progress, learner_cls=cls)

    def export_onnx(self, path: str | os.PathLike) -> Path:
        """Write an ONNX model taking RGB pixels in [0, 1] and returning probabilities.

        Example:
            >>> learn.export_onnx("model.onnx")  # doctest: +SKIP
            PosixPath('model.onnx')
        """
        return export.export_onnx(self, path)

    def _steps_per_epoch(self) -> int:
        n, bs = len(self.data.train), self.data.batch_size
        return max(1, n // bs) if self.precompute and n > bs else max(1, -(-n // bs))

    def _set_train_mode(self, trainable: nn.Module) -> None:
        """Train mode, except the body's BatchNorm layers: they keep their pretrained running
        statistics (eval mode) when frozen, and also when trained unless ``train_bn`` is True.

        Measured on Dogs vs Cats (efficientnet_lite2, fine_tune(2), 4,000 training images):
        updating the statistics while fine-tuning dropped valid accuracy from 99.05 % to 97.1 %.
        """
        trainable.train()
        if trainable is self.head:  # on cached activations the body does not run
            return
        for norm in self._body_norms:
            trains = any(p.requires_grad for p in norm.parameters(recurse=False))
            norm.train(self.train_bn and trains)

    def _train_step(self, trainable: nn.Module, optimizer, xb, yb) -> torch.Tensor:
        """One optimizer step on a batch (train mode already set); returns the loss on the
        device (no synchronization)."""
        net = trainable
        if self.compile and trainable is not self.head:
            if self._compiled is None:
                self._compiled = torch.compile(trainable)
            net = self._compiled
        elif trainable is not self.head:
            net = nn.Sequential(self._fast_body(), self.head)
        # the head alone on cached activations: float32, cheaper than casting a small MLP
        with self._autocast() if trainable is not self.head else contextlib.nullcontext():
            logits = net(xb)
            loss = F.cross_entropy(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def _fast_body(self) -> nn.Module:
        """The body with each conv -> BatchNorm pair run as one conv while the norm keeps its
        statistics (:mod:`threeline.fused`); the same parameters, made once.

        On one H100 (efficientnet_lite2, 260 px, batches of 64, bf16) training the whole
        network went from 1,154-1,172 to 1,491-1,492 images/s (two runs).
        """
        if self._fused_body is None:
            view = fused(self.body, feature_cache.example_input(self))
            self._fused_body = view if view is not None else self.body
        return self._fused_body

    def group_lrs(self, lr: float | Sequence[float] | slice) -> list[float]:
        """One learning rate per layer group from a number, a list or a ``slice``.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> [round(x, 6) for x in learn.group_lrs(slice(1e-4, 1e-2))]
            [0.0001, 0.001, 0.01]
            >>> learn.group_lrs(slice(0.01))
            [0.001, 0.001, 0.01]
        """
        n = len(self.layer_groups())
        if isinstance(lr, slice):
            lo, hi = lr.start, lr.stop
            if hi is None or lr.step is not None:
                raise ValueError(f"Use slice(lo, hi) or slice(hi) for learning rates, got {lr!r}.")
            _check_positive(lr=hi, **({"lr_low": lo} if lo is not None else {}))
            if lo is None:
                return [hi / 10] * (n - 1) + [hi]
            return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
        if isinstance(lr, (int, float)):
            _check_positive(lr=lr)
            return [float(lr)] * n
        lrs = [float(x) for x in lr]
        if len(lrs) != n:
            raise ValueError(
                f"Got {len(lrs)} learning rates for {n} layer groups (early body, late body, "
                f"head). Pass {n} rates, a slice(lo, hi), or one number.")
        for x in lrs:
            _check_positive(lr=x)
        return lrs

    def _optimizer(self, lrs: list[float], wd: float,
                   capturable: bool = False) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters, two groups (decay / no decay) per layer group;
        ``capturable``: for a CUDA graph (state and rates as GPU tensors)."""
        groups = optimizer_groups(self.layer_groups(), lrs, wd)
        if not groups:
            raise ValueError(
                "Nothing to train: every layer group is frozen. Call learn.unfreeze().")
        if capturable:
            self.opt = head_graph.capturable_optimizer(groups, betas=(0.9, 0.99))
            return self.opt
        one_kernel = self.device.type == "cuda"  # one kernel for all parameters: fewer launches
        self.opt = torch.optim.AdamW(groups, lr=lrs[-1], betas=(0.9, 0.99), fused=one_kernel)
        return self.opt

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
                mode: str = "exp", wd: float = 0.01) -> lr_finder.LRFinderResult:
        """Train briefly with a growing learning rate and record the loss; suggest a rate.

        The model, the optimizer and the random state are restored exactly afterwards. Runs on
        cached activations when ``precompute`` is on (instant), else on the whole network.

        Args:
            start_lr, end_lr: the range of learning rates tried.
            num_it: the most mini-batches (one per rate); stops early when the loss diverges.
            mode: ``"exp"`` (rates evenly spaced on a log scale) or ``"linear"``.
            wd: weight decay, as in :meth:`fit`.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0",
            ...     ImageData.from_folder(demo_path()), precompute=True, progress=False)
            >>> result = learn.lr_find()
            >>> 1e-7 < result.suggestion < 10
            True
        """
        return lr_finder.lr_find(self, start_lr, end_lr, num_it, mode, wd)

    def fine_tune(self, epochs: int = 3, base_lr: float = 1e-3, freeze_epochs: int = 3,
                  lr_ratio: float = 100.0, head_lr: float = 1e-2, wd: float = 0.01) -> list[dict]:
        """Lesson 1's recipe: the head on cached activations, then the whole network.

        1. ``freeze_epochs`` epochs of the head alone at ``head_lr``, one-cycle, on activations
           of the un-augmented images (the body runs once; a later run with the same data
           reuses them from the cache);
        2. unfreeze, then ``epochs`` epochs of the whole network on augmented images (when
           ``augment`` is set), one-cycle, with rates ``slice(base_lr / (2 * lr_ratio),
           base_lr / 2)``: the earliest layers ``lr_ratio`` times lower than the head.

        Images are decoded once, before the first stage, and kept in memory for both.

        The defaults come from ``benchmarks/recipes.py`` (efficientnet_lite2, 260 px, one H100;
        ``benchmarks/results/recipes-nvidia-h100-2026-11-27.md``). On ants vs bees (245
        photos), ``fine_tune(2)`` reached 96.08-96.73 % over three seeds with ``lr_ratio=100``
        against 93.46-96.08 % with 10; training the head on augmented images for one epoch
        instead of three on the cache gave 93.46-96.73 %. On Dogs vs Cats (10,000 photos),
        ``fine_tune(3)`` reached 99.00-99.45 % over three seeds and ``fine_tune(5)``
        99.50-99.60 % (99.45-99.55 % with :meth:`tta`); at efficientnet_lite2's default size
        of 300 px, ``fine_tune(5)`` reached 99.55-99.60 % and 99.60 % with :meth:`tta` (two
        seeds), and, trained through :mod:`threeline.fused`, 99.45-99.50 % and 99.50-99.70 %
        with :meth:`tta` (two seeds) in 47-51 s instead of 63-68 s.

        Returns:
            The epoch rows of both stages.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0",
            ...     ImageData.from_folder(demo_path(), size=128), progress=False)
            >>> rows = learn.fine_tune(1)  # doctest: +SKIP
        """
        _check_positive(epochs=epochs, base_lr=base_lr, lr_ratio=lr_ratio, head_lr=head_lr)
        if not isinstance(freeze_epochs, int) or freeze_epochs < 0:
            raise ValueError(f"freeze_epochs must be an int >= 0, got {freeze_epochs!r}.")
        rows: list[dict] = []
        for split in (self.data.train, self.data.valid):  # decoded once, for both stages
            batches.presized_cache(self, split.files, split.labels)
        if freeze_epochs > 0:
            self.freeze()
            augment, self._augment, self._precompute = self._augment, None, True
            try:
                rows += self.fit(head_lr, freeze_epochs, wd=wd)
            finally:
                self._augment, self._precompute = augment, False
            if self.interrupted:  # Ctrl-C in the first stage stops the recipe
                return rows
        self.unfreeze()
        rows += self.fit(slice(base_lr / (2 * lr_ratio), base_lr / 2), epochs, wd=wd)
        return rows

    @torch.inference_mode()
    def tta(self, n: int = 4, items: Sequence | str | os.PathLike | Image.Image | None = None,
            seed: int = 0) -> np.ndarray:
        """Log-probabilities (N, C) averaged over the plain view and ``n`` augmented copies.

        Probabilities (not logits) are averaged, then logged, so the result reads like
        :meth:`predict`. When the augmentation flips, the first copy is the plain view's mirror
        image; the others use a mild version of the training augmentation (flips and a gentle
        zoom; see :meth:`threeline.augment.Augment.for_tta`), or of ``side_on`` when the
        learner has none.

        Args:
            n: augmented copies per image.
            items: None for the validation set, else files, folders or PIL images.
            seed: makes the copies repeatable.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(demo_path()))
            >>> learn.tta(n=2).shape
            (40, 2)
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a whole number of augmented copies >= 0, got {n!r}.")
        files = self.data.valid.files if items is None else expand_items(items)
        labels = self.data.valid.labels if items is None else None
        if items is None:
            cache = batches.presized_cache(self, files, labels)
        else:  # new images: decoded for this call only
            cache = presize(files, None, short=self.preprocess.resize_to,
                            interpolation=self.preprocess.interpolation,
                            num_workers=self.data.num_workers, device=self.device,
                            max_pixels=self.data.max_pixels)
        aug = (self._augment or augmentation.side_on()).for_tta()
        flip = aug.flip or aug.dihedral
        generator = torch.Generator().manual_seed(seed)
        self.body.eval()
        self.head.eval()
        probs = torch.zeros(len(cache), len(self.classes), device=self.device)  # (N, C)
        bs, size = self.data.batch_size, self.preprocess.size
        for view in range(n + 1):
            for start in range(0, len(cache), bs):
                index = list(range(start, min(start + bs, len(cache))))
                if view <= 1 and (view == 0 or flip):  # the plain view, and its mirror image
                    images = to_device(cache.center_crops(index, size), self.device)
                    images = images if view == 0 else images.flip(-1)
                else:
                    padded, sizes, _ = cache.batch(index)
                    images = aug(to_device(padded, self.device), sizes, size, generator)
                with self._autocast():
                    logits = self.head(self._fast_body()(batches.model_input(self, images)))
                probs[start:start + len(index)] += F.softmax(logits.float(), 1)
        return torch.log(probs / (n + 1)).cpu().numpy()  # one copy: the host never waits

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
        for images, _ in batches.image_batches(self, items, None, shuffle=False,
                                                 batch_size=batches.inference_batch_size(self)):
            with self._autocast():
                logits = self.head(self._fast_body()(images))  # (B, C)
            outs.append(F.log_softmax(logits.float(), dim=1))
        return torch.cat(outs)

    def predict(self,
                items: Sequence | str | os.PathLike | Image.Image | None = None) -> np.ndarray:
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

    def interpret(self, items: Sequence | str | os.PathLike | Image.Image | None = None,
                  labels: Sequence[int | str] | None = None) -> Interpretation:
        """An :class:`~threeline.interpret.Interpretation`: plots of right, wrong, unsure images.

        Args:
            items: None for the validation set; else files, folders or PIL images.
            labels: their true classes (names or indices); None reads each file's folder name.

        Example:
            >>> interp = learn.interpret()  # doctest: +SKIP
            >>> fig = interp.plot_top_losses(9, save="top_losses.png")  # doctest: +SKIP
        """
        return Interpretation.from_learner(self, items, labels)


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
