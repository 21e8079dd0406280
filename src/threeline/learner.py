"""The Learner: any ``nn.Module``, data that yields batches on the device, a loss object; one loop.

    learn = Learner(model, data, loss=CrossEntropy())     # model: any nn.Module
    learn.fit(1e-2, 5)                                    # one-cycle, epoch table, checkpoints
    learn.lr_find(); learn.validate(); learn.get_preds(); learn.save("runs/x/model")

Applications build on it with a factory (``Learner.pretrained`` for images, ``Learner.tabular``,
``Learner.collab``, ``Learner.text_classifier``, ``Learner.language_model``); the core imports
none of them. What a subclass may override is listed in ``docs/core.md``: the batches, the
trainable module, the train step, the train mode, and how the learner describes itself.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from threeline import distributed, lr_finder, optim, schedules
from threeline.applications import Applications
from threeline.callbacks import (
    Callback,
    CancelFit,
    SaveCheckpoints,
    ScheduleRates,
    ShowEpochs,
    emit,
)
from threeline.checkpoints import Checkpoints
from threeline.devices import as_device
from threeline.graph_step import GraphStep
from threeline.learner_state import LearnerState
from threeline.losses import CrossEntropy, Loss
from threeline.metrics import Accumulator, Metric
from threeline.progress import epoch_columns

Splitter = Callable[[nn.Module], list[list[nn.Parameter]]]


class Learner(LearnerState, Applications):
    """Trains and uses any ``nn.Module`` on data that yields batches (see ``docs/core.md``).

    Args:
        model: the network; called as ``model(x)`` or ``model(*x)`` for a tuple batch.
        data: an object with ``batches(split, device, shuffle, seed)`` and ``steps(split)``
            (:class:`threeline.batches.TensorData`, ``LoaderData``, or an application's data);
            None for a learner that only predicts.
        loss: a :class:`threeline.losses.Loss` (default: ``CrossEntropy()``).
        metrics: the epoch table's metrics (default: the loss's own).
        splitter: ``splitter(model)`` -> parameter groups from input to output, for
            discriminative rates and :meth:`freeze_to` (default: one group).
        callbacks: :class:`threeline.callbacks.Callback` s used by every ``fit``.
        device: None picks CUDA when present.
        seed: makes the batch order and dropout repeatable.
        mixed_precision: bfloat16 autocast on CUDA.

    Example:
        >>> from threeline.batches import TensorData
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> data = TensorData((x,), y, (x,), y, batch_size=16)
        >>> learn = Learner(nn.Linear(4, 2), data, device="cpu", progress=False)
        >>> learn.checkpoint_dir = False
        >>> rows = learn.fit(0.01, 1)  # doctest: +ELLIPSIS
        epoch  train_loss  valid_loss  accuracy    time
        0      ...
    """

    def __init__(self, model: nn.Module, data=None, loss: Loss | None = None,
                 metrics: Sequence[Metric] | None = None, splitter: Splitter | None = None,
                 callbacks: Sequence[Callback] = (), device: str | torch.device | None = None,
                 seed: int = 0, progress: bool = True, mixed_precision: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if data is not None and not (hasattr(data, "batches") and hasattr(data, "steps")):
            raise TypeError(
                f"data must yield batches: an object with batches(split, device, shuffle, seed) "
                f"and steps(split), e.g. threeline.batches.TensorData or an application's data "
                f"(ImageData, TabularData, ...); got {type(data).__name__}.")
        loss = CrossEntropy() if loss is None else loss
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be a threeline.losses.Loss (CrossEntropy(), MSE(), ...), "
                            f"got {type(loss).__name__}.")
        self.model, self.data, self.loss = model, data, loss
        self.metrics = list(metrics) if metrics is not None else loss.metrics()
        self.splitter, self.callbacks = splitter, list(callbacks)
        self.world = distributed.from_environment()  # several processes under torchrun
        self.device, self.seed = as_device(device), seed
        distributed.join(self.world, self.device)
        self.progress = progress and self.world.main  # only rank 0 prints
        if self.world.size > 1 and hasattr(data, "for_process"):  # data that splits itself
            self.data = data = data.for_process(self.world.rank, self.world.size)
        self.mixed_precision = mixed_precision
        self.history: list[dict] = []
        self.interrupted = False  # True when the latest fit ended with Ctrl-C
        self.cuda_graphs = True  # replay graphable steps as a CUDA graph (see graphable())
        self.clip: float | None = None  # clip the gradients' norm at this value
        self.optimizer = "adamw"  # or "sgd" (Nesterov momentum 0.9; wd is then L2, e.g. 5e-4)
        self.opt: torch.optim.Optimizer | None = None  # the last fit's optimizer
        self.epoch = self.step = self.total_steps = 0
        self._checkpoints = Checkpoints()
        self.model.to(self.device)

    name = "model"  # names checkpoint folders; applications set something more telling
    shards_batches = False  # True: train_batches() yields only this process's share

    # ----------------------------------------------------------------- parameters

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from input to output (the splitter's, or one group)."""
        if self.splitter is None:
            return [list(self.model.parameters())]
        return self.splitter(self.model)

    def freeze_to(self, n: int) -> None:
        """Train layer groups ``n`` and later; freeze the earlier ones (``-1``: the last only).

        Example:
            >>> learn = Learner(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), device="cpu",
            ...                 splitter=lambda m: [list(m[0].parameters()),
            ...                                     list(m[1].parameters())])
            >>> learn.freeze_to(1)
            >>> [p.requires_grad for p in learn.model.parameters()]
            [False, False, True, True]
        """
        groups = self.layer_groups()
        if isinstance(n, bool) or not isinstance(n, int) or not -len(groups) <= n < len(groups):
            raise ValueError(f"freeze_to needs a group index in [-{len(groups)}, "
                             f"{len(groups) - 1}] (there are {len(groups)} layer groups), got "
                             f"{n!r}.")
        first = n % len(groups)
        for index, params in enumerate(groups):
            for p in params:
                p.requires_grad_(index >= first)

    def freeze(self) -> None:
        """Train only the last layer group."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Train every layer group."""
        self.freeze_to(0)

    # ----------------------------------------------------------------- hooks

    def trainable(self) -> nn.Module:
        """The module a ``fit`` trains and validates (the whole model here)."""
        return self.model

    def steps_per_epoch(self) -> int:
        return self._need_data().steps("train")

    def train_batches(self) -> Iterable:
        """One epoch of shuffled training batches on the device."""
        seed = self.seed * 1_000_003 + self.epoch
        return self._need_data().batches("train", self.device, True, seed)

    def valid_batches(self) -> Iterable:
        return self._need_data().batches("valid", self.device, False, 0)

    def graphable(self) -> bool:
        """True when training steps may be replayed as a CUDA graph: the batches are slices of
        tensors already on the GPU, with fixed shapes. Applications whose data is so say so."""
        return bool(getattr(self.data, "graphable", False))

    def autocast(self, module: nn.Module | None = None) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on CUDA when ``mixed_precision``, else nothing."""
        if self.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def forward(module: nn.Module, x) -> torch.Tensor:
        """``module(x)``, or ``module(*x)`` for a tuple batch."""
        return module(*x) if isinstance(x, tuple) else module(x)

    def set_train_mode(self, module: nn.Module) -> None:
        """Train mode, except BatchNorm layers whose parameters are all frozen: they keep their
        statistics, so a frozen part computes what it computed before."""
        module.train()
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                params = list(m.parameters(recurse=False))
                if params and not any(p.requires_grad for p in params):
                    m.eval()

    def train_step(self, x, y) -> torch.Tensor:
        """One optimizer step, the gradients' norm clipped at ``clip`` when set; returns the
        loss on the device (no host wait)."""
        module = self._fit_module
        with self.autocast(module):
            out = self.forward(self._step_module, x)  # DistributedDataParallel when several
        loss = self.loss(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad],
                                     self.clip)
        self.opt.step()
        return loss.detach()

    # ----------------------------------------------------------------- training

    def fit(self, lr: float | Sequence[float] | slice, epochs: int = 1, wd: float = 0.01,
            schedule: str | schedules.Schedule | None = None, cycle_len: int | None = None,
            cycle_mult: int = 1, callbacks: Sequence[Callback] = ()) -> list[dict]:
        """Train for ``epochs`` epochs with peak learning rate ``lr``; print one row per epoch.

        Args:
            lr: peak rate: one number, one per layer group, or ``slice(lo, hi)``
                (geometrically spaced from the first group to the last).
            epochs: passes over the training set; with ``cycle_len``, the number of cycles.
            wd: weight decay, not applied to norms and biases: decoupled with AdamW, L2 (added
                to the gradient) with ``learn.optimizer = "sgd"``.
            schedule: ``"one_cycle"`` (default), ``"constant"``, or a function of progress in
                [0, 1] returning a multiplier of ``lr``.
            cycle_len, cycle_mult: SGDR: ``epochs`` cosine cycles, the first ``cycle_len``
                epochs long, each next one ``cycle_mult`` times longer.
            callbacks: extra callbacks for this fit only.

        Returns:
            One dict per epoch: epoch, train_loss, valid_loss, the metrics, time (seconds).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}.")
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0:
            raise ValueError(f"wd must be a number >= 0, got {wd!r}.")
        optim.check_name(self.optimizer)
        lrs = optim.group_lrs(lr, len(self.layer_groups()))
        if cycle_len is not None:
            if schedule is not None:
                raise ValueError("Pass either schedule= or cycle_len= (SGDR), not both.")
            lengths = schedules.cycle_lengths(epochs, cycle_len, cycle_mult)
            shape, epochs = schedules.sgdr(lengths), sum(lengths)
        else:
            shape = schedules.get(schedule or "one_cycle")
        columns = epoch_columns(m.name for m in self.metrics)
        standard = [ScheduleRates(shape)]
        if self.world.main:  # one table, one set of checkpoints
            standard += [ShowEpochs(columns), SaveCheckpoints(self._checkpoints)]
        return self.run_fit(lrs, epochs, wd, [*standard, *self.callbacks, *callbacks])

    def run_fit(self, lrs: list[float], epochs: int, wd: float, callbacks: list[Callback],
                validate: bool = True) -> list[dict]:
        """The loop under :meth:`fit` and :meth:`lr_find`: ``epochs`` epochs with exactly these
        callbacks (the schedule, the table and checkpoints are callbacks too)."""
        self.before_fit()
        module = self._fit_module = self.trainable()
        self.initialize_from_data(module)
        graphed = (self.cuda_graphs and self.device.type == "cuda" and self.graphable()
                   and self.world.size == 1)
        self._step_module = distributed.wrap(module, self.world, self.device)
        self.opt = optim.make(self.optimizer, self.layer_groups(), lrs, wd, self.device,
                              capturable=graphed)
        step = (GraphStep(module, self.loss, self.opt, lambda: self.autocast(module))
                if graphed else self.train_step)
        steps = self.steps_per_process()
        self.total_steps, self.step = steps * epochs, 0
        rows: list[dict] = []
        devices = [self.device] if self.device.type == "cuda" else []
        interrupted = False
        with torch.random.fork_rng(devices=devices):  # the caller's random state is untouched
            try:
                emit(callbacks, "on_fit_begin", self)
                first = len(self.history)
                for i in range(epochs):
                    self.epoch = first + i  # seeds the batch order and dropout of the epoch
                    rows.append(self._epoch(module, step, callbacks, validate))
            except CancelFit:
                pass
            except KeyboardInterrupt:
                interrupted = True
            finally:
                self.interrupted = interrupted
                emit(callbacks, "on_fit_end", self, interrupted)
        return rows

    def steps_per_process(self) -> int:
        """Training steps this process takes in an epoch: its share of
        :meth:`steps_per_epoch` (all of them in a world of one)."""
        return distributed.share_count(self.steps_per_epoch(), self.world)

    def before_fit(self) -> None:
        """Called before the optimizer is made (the image learner fills its cache here)."""

    def initialize_from_data(self, module: nn.Module) -> None:
        """A model with ``initialize_from(x)`` and a false ``initialized`` gets the first
        training batch's inputs, once (data-dependent initialisation, ``docs/core.md``)."""
        if hasattr(module, "initialize_from") and not getattr(module, "initialized", True):
            with torch.no_grad():
                module.initialize_from(next(iter(self.train_batches()))[0])

    def _epoch(self, module: nn.Module, step: Callable, callbacks: list[Callback],
               validate: bool) -> dict:
        start = time.perf_counter()
        torch.manual_seed(self.seed * 100_003 + self.epoch + 7_919 * self.world.rank)  # dropout
        emit(callbacks, "on_epoch_begin", self)
        self.set_train_mode(module)
        losses, batches = [], self.train_batches()
        if self.world.size > 1 and not (self.shards_batches or self._data_per_process):
            batches = distributed.shard(batches, self.world, self.steps_per_epoch())
        for x, y in batches:
            emit(callbacks, "on_batch_begin", self)
            loss = step(x, y)
            losses.append(loss)
            emit(callbacks, "on_batch_end", self, loss)
            self.step += 1
        if not validate:
            return {}
        train_loss = (float(distributed.mean(torch.stack(losses).mean(), self.world))
                      if losses else float("nan"))
        row = {"epoch": self.epoch, "train_loss": train_loss, **self.validate(),
               "time": time.perf_counter() - start}
        self.history.append(row)
        self.interrupted = False
        emit(callbacks, "on_epoch_end", self, row)
        return row

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        """``{"valid_loss": ..., metric: ...}`` over the validation batches (one host wait)."""
        module = self.trainable()
        module.eval()
        acc = Accumulator(self.metrics, self.device)
        batches = self.valid_batches()
        if not self._data_per_process:
            batches = distributed.shard(batches, self.world)  # a share each
        for x, y in batches:
            with self.autocast(module):
                out = self.forward(module, x)
            acc.add(self.loss(out, y), y.numel(), out, y)
        distributed.add_up([acc.sums, acc.counts], self.world)  # the whole set, once
        return acc.result()

    @torch.inference_mode()
    def get_preds(self, batches: Iterable | None = None,
                  module: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(raw outputs float32, targets) over ``batches`` (default: validation), on the
        device. Apply ``learn.loss.activation`` for probabilities."""
        module = module or self.trainable()
        module.eval()
        outs, targets = [], []
        for x, y in (self.valid_batches() if batches is None else batches):
            with self.autocast(module):
                outs.append(self.forward(module, x).float())
            targets.append(y)
        if not outs:
            raise ValueError("Nothing to predict: the batches were empty.")
        have_targets = all(t is not None for t in targets)
        return torch.cat(outs), torch.cat(targets) if have_targets else None

    def predict(self, inputs: Sequence) -> torch.Tensor:
        """Activated outputs (probabilities for a classifier) for raw inputs, in their order,
        on the CPU: the data makes the batches (``data.input_batches``; image files for an
        ImageData, decoded and normalised like its training images).

        Example:
            >>> learn.predict(["cat.jpg", "dog.jpg"])  # doctest: +SKIP
        """
        data = self._need_data()
        if not hasattr(data, "input_batches"):
            raise TypeError(f"{type(data).__name__} cannot make batches of raw inputs (it has no "
                            f"input_batches): call learn.get_preds([(x, None), ...]) instead.")
        inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        out, _ = self.get_preds(data.input_batches(inputs, self.device))
        return self.loss.activation(out).cpu()

    def interpret(self):
        """What the model gets right and wrong on the validation set, as the data shows it
        (``data.interpret(learn)``; an ImageData gives top losses and a confusion matrix)."""
        data = self._need_data()
        if not hasattr(data, "interpret"):
            raise TypeError(f"{type(data).__name__} has no interpretation (no interpret method); "
                            f"use learn.get_preds() for the raw outputs and targets.")
        return data.interpret(self)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
                mode: str = "exp", wd: float = 0.01) -> lr_finder.LRFinderResult:
        """Train briefly with a growing learning rate and record the loss; suggest a rate.

        A short :meth:`fit` with one more callback; the model, the optimizer and the random
        state are restored exactly afterwards. It trains with ``learn.optimizer``, as fit does.
        """
        optim.check_name(self.optimizer)
        return lr_finder.lr_find(self, start_lr, end_lr, num_it, mode, wd)

    @property
    def _data_per_process(self) -> bool:
        """True when the data already holds only this process's part (``for_process``)."""
        return hasattr(self.data, "for_process")

    def _need_data(self):
        if self.data is None:
            raise ValueError("This learner has no data (it was loaded to predict). Pass data= "
                             "to Learner.load to train or validate it.")
        return self.data
