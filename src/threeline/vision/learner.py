"""The image learner: a pretrained body, a new head, and the ways images reach them.

    data = ImageData.from_folder("data/dogscats")
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)   # an ImageLearner
    learn.fit(0.01, 3)

:class:`ImageLearner` is the core :class:`threeline.learner.Learner` with image batches: the
head trains on cached activations (``precompute``), or the whole network on images decoded once
and augmented on the device. The loop, the optimizer, the schedules, checkpoints and lr_find are
the core's.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from threeline import distributed
from threeline.learner import Learner
from threeline.losses import BinaryCrossEntropy, CrossEntropy, Loss
from threeline.optim import check_positive
from threeline.saving import cache_dir
from threeline.vision import augment as augmentation
from threeline.vision import batches, decode, export
from threeline.vision import features as feature_cache
from threeline.vision.data import ImageData
from threeline.vision.fused import fused
from threeline.vision.model import Body, layer_groups
from threeline.vision.predict import ImagePredictions
from threeline.vision.presize import Presized
from threeline.vision.small_folder import tta_views
from threeline.vision.solve import SolvedHead
from threeline.vision.transforms import Preprocess
from threeline.vision.tta import finish_with_tta


def memory_format_for(device: torch.device) -> torch.memory_format:
    """channels_last on a CPU (faster there for these networks), the default layout on CUDA,
    where channels_last's start-up cost outweighs its speed for typical runs
    (``benchmarks/results/lesson1-nvidia-h100-2026-11-27.md``).

    Example:
        >>> memory_format_for(torch.device("cpu"))
        torch.channels_last
    """
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


class ImageLearner(ImagePredictions, SolvedHead, Learner):
    """Trains and uses an image classifier. Create one with ``Learner.pretrained``.

    ``predict``, ``tta``, ``interpret``, ``tune_thresholds`` and ``heatmap`` are in
    :mod:`threeline.vision.predict`; ``fit`` and ``solves_head`` (a linear head solved on
    cached activations) in :mod:`threeline.vision.solve`."""

    def __init__(self, body: Body, head: nn.Module, data: ImageData, preprocess: Preprocess,
                 arch: str, weights_id: str, device: torch.device, seed: int = 0,
                 cache: Path | None = None, progress: bool = True, loss: Loss | None = None):
        super().__init__(nn.Sequential(body, head), None, loss=loss or CrossEntropy(),
                         device=device, seed=seed, progress=progress)
        self.data, self.preprocess = data, preprocess
        self.arch, self.weights_id = arch, weights_id
        self.name = arch
        self.cache = Path(cache) if cache is not None else cache_dir()
        self.train_bn = False  # update the body's BatchNorm statistics when training it
        self._body_norms = [m for m in body.modules()
                            if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._precompute = False
        self._cached: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._augment: augmentation.Augment | None = None
        self._presized: dict[tuple, Presized] = {}
        self.compile = False  # torch.compile the network when training it whole
        self._compiled: nn.Module | None = None
        self._fused_body: nn.Module | None = None  # made on first use: see fast_body
        # bytes of activations one training pass may keep for its backward pass: beyond it a
        # batch of images trains as several passes, one optimizer step (batches.step_parts)
        self.step_memory: int | None = 1 << 30 if self.device.type == "cpu" else None
        self._step_bytes: int | None = None  # measured per image at a fit's first step
        self.memory_format = memory_format_for(self.device)
        self.body.to(memory_format=self.memory_format)
        self.freeze()

    # ----------------------------------------------------------------- state

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    @property
    def multi_label(self) -> bool:
        """True when each image may carry several labels (the loss is BinaryCrossEntropy):
        :meth:`predict` and :meth:`tta` then return independent probabilities (N, L)."""
        return isinstance(self.loss, BinaryCrossEntropy)

    @property
    def body(self) -> Body:
        """The pretrained network, ending in pooled features: (B, 3, S, S) -> (B, D)."""
        return self.model[0]

    @property
    def head(self) -> nn.Module:
        """The new head: (B, D) -> logits (B, C)."""
        return self.model[1]

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
        super().freeze_to(n)
        if not self._body_frozen():
            self._precompute = False
            self._cached.clear()  # the activations of a body about to change: free them
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

    def features(self, split: str, dtype: torch.dtype | None = torch.float32
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached activations of ``split``: (N, D) float32 and int64 labels, (N,) or multi-hot
        (N, L), on the device. ``dtype=None`` gives them as kept (bfloat16), without a copy.

        Computed once (and written to the cache folder); later calls and later runs read them.
        """
        feature_cache.ensure(self, [split])  # nothing to do once they are in memory
        x, y = self._cached[split]
        return (x if dtype is None else x.to(dtype)), y

    # ----------------------------------------------------------------- the core's hooks

    def trainable(self) -> nn.Module:
        """The head alone on cached activations; else body (its fused view) and head."""
        if self.precompute:
            return self.head
        if self.compile:
            if self._compiled is None:
                self._compiled = torch.compile(nn.Sequential(self.fast_body(), self.head))
            return self._compiled
        return nn.Sequential(self.fast_body(), self.head)

    shards_batches = True  # train_batches() takes this process's share itself

    def steps_per_epoch(self) -> int:
        if self._solver is not None:
            return 1  # one solve of the whole training set per epoch
        n, bs = len(self.data.train), self.data.batch_size
        whole = self.precompute or self.world.size > 1  # full batches only
        return max(1, n // bs) if whole and n > bs else max(1, -(-n // bs))

    def steps_per_process(self) -> int:
        if self._solver is not None:
            return 1  # every process solves on every row, and all reach the same weights
        return super().steps_per_process()

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._solver is not None:  # every row, every process: one solve
            x, y = self.features("train")  # (N, D), labels
            if self._solver.views == 2:  # the same images mirrored: (2N, D)
                x = torch.cat([x, self._cached[feature_cache.MIRRORED][0].float()])
                y = torch.cat([y, y])
            return iter([(x, y)])
        return batches.train_batches(self)

    def valid_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        if self.precompute:
            return batches.feature_batches(self, "valid")  # (8192, D) float32 at a time
        return batches.image_batches(self, self.data.valid.files, self.data.valid.labels,
                                     shuffle=False,
                                     batch_size=batches.inference_batch_size(self))

    def graphable(self) -> bool:
        # the head's step on activations already on the device (a solve is no such step)
        return self.precompute and self._solver is None

    def autocast(self, module: nn.Module | None = None) -> contextlib.AbstractContextManager:
        """bfloat16 on CUDA for the network; the head alone on cached activations stays in
        float32 (cheaper than casting a small MLP)."""
        if module is self.head:
            return contextlib.nullcontext()
        return super().autocast(module)

    def set_train_mode(self, module: nn.Module) -> None:
        """Train mode, except the body's BatchNorm layers: they keep their pretrained running
        statistics (eval mode) when frozen, and also when trained unless ``train_bn`` is True
        (updating them cost two points of accuracy on Dogs vs Cats)."""
        if self._solver is not None:
            module.eval()  # solved: the BatchNorm standardizes, no dropout
            return
        module.train()
        if module is self.head:  # on cached activations the body does not run
            return
        for norm in self._body_norms:
            trains = any(p.requires_grad for p in norm.parameters(recurse=False))
            norm.train(self.train_bn and trains)

    def before_fit(self) -> None:
        self._step_bytes = None  # what a pass keeps depends on what trains: measure again
        if self.precompute:  # compute (or load) the cache before the clock starts
            with distributed.main_first(self.world):  # rank 0 writes it, the others read it
                feature_cache.ensure(self, ["train", "valid"])

    def static_state_prefixes(self) -> tuple[str, ...]:
        return ("body.",) if self.precompute else ()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return ({f"body.{k}": v for k, v in self.body.state_dict().items()}
                | {f"head.{k}": v for k, v in self.head.state_dict().items()})

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        export.load_into(self.body, self.head, tensors, "the saved model")

    def describe(self) -> dict:
        return export.describe(self)

    def export_onnx(self, path: str | os.PathLike) -> Path:
        """Write an ONNX model taking RGB pixels in [0, 1] and returning probabilities.

        Example:
            >>> learn.export_onnx("model.onnx")  # doctest: +SKIP
            PosixPath('model.onnx')
        """
        return export.export_onnx(self, path)

    def fast_body(self) -> nn.Module:
        """The body with each conv -> BatchNorm pair run as one conv while the norm keeps its
        statistics (:mod:`threeline.vision.fused`); the same parameters, made once.
        """
        if self._fused_body is None:
            view = fused(self.body, feature_cache.example_input(self))
            self._fused_body = view if view is not None else self.body
        return self._fused_body

    def train_step(self, x, y) -> torch.Tensor:
        if self._solver is None:
            parts = batches.step_parts(self, self._fit_module, x)  # several on a CPU
            if parts > 1:
                return batches.accumulated_step(self, x, y, parts)
            return super().train_step(x, y)
        return self._solver.step(self.head, x, y)

    def fine_tune(self, epochs: int = 3, base_lr: float = 1e-3, freeze_epochs: int = 3,
                  lr_ratio: float = 100.0, head_lr: float = 1e-2, wd: float = 0.01,
                  tta: int | None = None) -> list[dict]:
        """Lesson 1's recipe: the head on cached activations, then the whole network.

        1. ``freeze_epochs`` epochs of the head alone at ``head_lr``, one-cycle, on activations
           of the un-augmented images (the body runs once; a later run with the same data
           reuses them from the cache);
        2. unfreeze, then ``epochs`` epochs of the whole network on augmented images (when
           ``augment`` is set), one-cycle, with rates ``slice(base_lr / (2 * lr_ratio),
           base_lr / 2)``: the earliest layers ``lr_ratio`` times lower than the head;
        3. ``predict`` then averages the plain view and ``tta`` augmented copies
           (:attr:`tta_views`; None: 4 on a small folder, see :mod:`.small_folder`, else 0);
           a last table row, ``tta``, scores the validation set that way.

        Images are decoded once, before the first stage, and kept in memory for all three.
        The defaults were chosen by ``benchmarks/recipes.py`` (``results/recipes-*.md``).

        Returns:
            The epoch rows of both stages.

        Example:
            >>> from threeline import ImageData, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0",
            ...     ImageData.from_folder(demo_path(), size=128), progress=False)
            >>> rows = learn.fine_tune(1)  # doctest: +SKIP
        """
        check_positive(epochs=epochs, base_lr=base_lr, lr_ratio=lr_ratio, head_lr=head_lr)
        if not isinstance(freeze_epochs, int) or freeze_epochs < 0:
            raise ValueError(f"freeze_epochs must be an int >= 0, got {freeze_epochs!r}.")
        if tta is not None and (isinstance(tta, bool) or not isinstance(tta, int) or tta < 0):
            raise ValueError(f"tta must be None or a whole number of copies >= 0, got {tta!r}.")
        rows: list[dict] = []
        self.tta_views = 0  # predictions stay plain until step 3 (tta=0: for good)
        for split in (self.data.train, self.data.valid):  # decoded once, for both stages
            batches.presized_cache(self, split.files, split.labels)
        if freeze_epochs > 0:
            self.freeze()
            augment, self._augment, self._precompute = self._augment, None, True
            self._mirror_train = False  # a start for the next stage: the plain images do
            try:
                rows += self.fit(head_lr, freeze_epochs, wd=wd)
            finally:
                self._augment, self._precompute, self._mirror_train = augment, False, True
            if self.interrupted:  # Ctrl-C in the first stage stops the recipe
                return rows
        self.unfreeze()
        rows += self.fit(slice(base_lr / (2 * lr_ratio), base_lr / 2), epochs, wd=wd)
        views = tta_views(len(self.data.train)) if tta is None else tta
        if views and not self.interrupted:
            finish_with_tta(self, views)
        return rows
