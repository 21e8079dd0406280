"""A linear head solved on cached activations: L2-regularized logistic regression by L-BFGS
(on a GPU by Newton's method, :mod:`threeline.vision.newton`).

With few training images, stochastic steps of a head on cached activations end below a
well-regularized logistic regression on the same activations, however they are paced
(``benchmarks/results/small_data-*.md``). So a linear head on cached activations is solved
instead: the activations are standardized (the head's BatchNorm holds the training mean and
standard deviation), and the last layer minimizes

    mean cross-entropy (or binary cross-entropy per label) + penalty / 2 * |weights|^2

with the penalty chosen by stratified k-fold cross-validation **on the training images only**
(lowest held-out log-loss; for several labels, one penalty per label). Where there are fewer
images than activation dimensions, each problem is solved in the span of its training rows
(the solution lies there), which is much smaller.

    solver = LinearSolver(multi_label=False, seed=0)
    loss = solver.step(head, features, labels)   # (N, D), (N,) -> the head fitted in place

:class:`SolvedHead` is the learner's side: ``learn.fit`` solves such a head instead of
stepping it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from threeline import optim
from threeline.vision.newton import newton, use_newton

# penalty * N, from strong to weak (C = 1 / (penalty * N) in scikit-learn's terms: 1e-3 to 1e2)
PENALTIES_TIMES_N = (1000.0, 100.0, 10.0, 1.0, 0.1, 0.01)
FOLDS = 5
MIN_FOR_CV = 10  # fewer training images: no cross-validation, penalty * N = 1


def solve(z: torch.Tensor, targets: torch.Tensor, penalty: torch.Tensor, multi_label: bool,
          start: torch.Tensor | None = None, max_iter: int = 30) -> torch.Tensor:
    """Weights (R + 1, C) minimizing the regularized loss on ``z`` (N, R); the last row is the
    bias (not penalized). ``penalty``: a scalar, or (C,) one per label.

    Example:
        >>> z = torch.tensor([[1.0], [2.0], [-1.0], [-2.0]])
        >>> w = solve(z, torch.tensor([1, 1, 0, 0]), torch.tensor(0.1), False)
        >>> (z @ w[:-1] + w[-1]).argmax(1).tolist()
        [1, 1, 0, 0]
    """
    n_out = targets.shape[1] if multi_label else int(start.shape[1] if start is not None
                                                     else targets.max() + 1)
    if use_newton(z, n_out, multi_label):  # a GPU: a few large steps (threeline.vision.newton)
        return newton(z, targets, penalty, multi_label, start)
    w = (torch.zeros(z.shape[1] + 1, n_out, dtype=z.dtype, device=z.device)
         if start is None else start.clone())
    w.requires_grad_(True)
    opt = optim.LBFGS([w], lr=1, max_iter=max_iter, history_size=10,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-5,
                            tolerance_change=1e-7)

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = data_loss(z @ w[:-1] + w[-1], targets, multi_label).sum() \
            + (penalty * w[:-1].square().sum(0)).sum() / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    return w.detach()


def data_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Mean loss per output: (C,) binary cross-entropy per label, or (1,) cross-entropy."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets.float(),
                                                  reduction="none").mean(0)
    return F.cross_entropy(logits, targets).reshape(1)


def standardize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(standardized x, mean (D,), standard deviation (D,))."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    return (x - mean) / std, mean, std


def row_space(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(coordinates (N, R), orthonormal basis (D, R)) of the rows of ``a`` (N, D) when N < D,
    else (a, None): an L2-penalized linear model of ``a`` has its weights in this span.

    From the eigenvectors of the Gram matrix ``a a^T`` (N, N), about five times faster than an
    SVD of ``a`` on a CPU; directions with almost no variance are left out.

    Example:
        >>> a = torch.randn(3, 8)
        >>> z, basis = row_space(a)
        >>> torch.allclose(z @ basis.T, a, atol=1e-4)
        True
    """
    if a.shape[0] >= a.shape[1]:
        return a, None
    values, vectors = torch.linalg.eigh(a @ a.T)  # ascending, (N,), (N, N)
    keep = values > values[-1].clamp_min(1e-12) * 1e-6
    root = values[keep].sqrt()  # the singular values of a
    z = vectors[:, keep] * root  # (N, R)
    basis = (a.T @ vectors[:, keep]) / root  # (D, R)
    return z.contiguous(), basis.contiguous()


def fold_ids(targets: torch.Tensor, folds: int, seed: int, views: int = 1) -> np.ndarray:
    """(N,) fold of each row: stratified by class (by first label for multi-label), seeded.

    ``views`` > 1: the rows are that many views of the same images, one block after another
    (row ``i + k * N / views`` is image ``i``); every view of an image falls in its fold.

    Example:
        >>> fold_ids(torch.tensor([0, 0, 1, 1] * 2), folds=2, seed=0, views=2).reshape(2, 4)
        array([[0, 1, 0, 1],
               [0, 1, 0, 1]])
    """
    if views > 1:
        return np.tile(fold_ids(targets[: len(targets) // views], folds, seed), views)
    labels = targets.cpu().numpy()
    if labels.ndim == 2:
        labels = np.where(labels.any(1), labels.argmax(1), -1)
    rng = np.random.default_rng(seed)
    out = np.zeros(len(labels), dtype=np.int64)
    offset = 0
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        rng.shuffle(rows)
        out[rows] = (np.arange(len(rows)) + offset) % folds  # classes fill folds in turn
        offset += len(rows)
    return out


def choose_penalty(x: torch.Tensor, targets: torch.Tensor, multi_label: bool, seed: int = 0,
                   grid: Sequence[float] = PENALTIES_TIMES_N, folds: int = FOLDS,
                   views: int = 1) -> tuple[torch.Tensor, np.ndarray]:
    """The penalty with the lowest held-out log-loss over ``folds`` folds of the training rows:
    a scalar, or (C,) one per label. Penalties go from strong to weak, each solve starting from
    the last, and stop once two in a row did worse for every output (the held-out loss rises
    on either side of its best penalty). Also returns the (tried, outputs) held-out losses.
    ``views``: the rows are views of the same images (:func:`fold_ids`), held out together.
    """
    n = len(x)
    if n < MIN_FOR_CV:
        return torch.tensor(1.0 / n, dtype=x.dtype, device=x.device), np.zeros((0, 0))
    fold = torch.as_tensor(fold_ids(targets, folds, seed, views), device=x.device)
    problems = []  # per fold: training coordinates, their targets, held-out ones
    for k in range(folds):
        held = fold == k
        if held.any() and not held.all():
            a, mean, std = standardize(x[~held])
            z, basis = row_space(a)
            z_held = (x[held] - mean) / std
            problems.append((z, targets[~held], z_held if basis is None else z_held @ basis,
                             targets[held]))
    grid = sorted(grid, reverse=True)
    weights: list[torch.Tensor | None] = [None] * len(problems)
    losses = []
    for times_n in grid:
        total = 0.0
        for i, (z, y, z_held, y_held) in enumerate(problems):
            penalty = torch.tensor(times_n / len(z), dtype=x.dtype, device=x.device)
            w = weights[i] = solve(z, y, penalty, multi_label, weights[i])
            total = total + data_loss(z_held @ w[:-1] + w[-1], y_held, multi_label) * len(y_held)
        losses.append(total.cpu().numpy() / n)  # (outputs,)
        if len(losses) >= 3 and (np.stack(losses).argmin(0) <= len(losses) - 3).all():
            break
    table = np.stack(losses)  # (tried, outputs)
    best = np.asarray(grid[:len(table)])[table.argmin(0)] / n  # (outputs,)
    penalty = torch.as_tensor(best if multi_label else best[0], dtype=x.dtype, device=x.device)
    return penalty, table


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread on a CPU while solving: the solver's many small operations ran up
    to 25 times slower in two threads on a busy 2-core machine (each waits for the other)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class LinearSolver:
    """Fits a linear head (BatchNorm1d -> Dropout -> Linear) to cached activations: the
    penalty chosen once by cross-validation (first step), then L-BFGS from where it is.

    Example:
        >>> head = nn.Sequential(nn.BatchNorm1d(3), nn.Dropout(0.25), nn.Linear(3, 2))
        >>> x = torch.randn(40, 3); y = (x[:, 0] > 0).long()
        >>> _ = LinearSolver(multi_label=False).step(head, x, y)
        >>> float((head.eval()(x).argmax(1) == y).float().mean()) > 0.9
        True
    """

    def __init__(self, multi_label: bool, seed: int = 0, views: int = 1):
        self.multi_label, self.seed = multi_label, seed
        self.views = views  # rows per image: 2 when its mirror image comes too
        self.penalty: torch.Tensor | None = None
        self.held_out_losses: np.ndarray | None = None

    def step(self, head: nn.Sequential, x: torch.Tensor, targets: torch.Tensor,
             max_iter: int = 100) -> torch.Tensor:
        """Solve ``head``'s last layer on (N, D) activations, in place; the training loss."""
        with one_cpu_thread(x.device):
            return self._step(head, x, targets, max_iter)

    def _step(self, head: nn.Sequential, x: torch.Tensor, targets: torch.Tensor,
              max_iter: int) -> torch.Tensor:
        norm, linear = head[0], head[-1]
        x = x.float()
        first = self.penalty is None
        if first:
            self.penalty, self.held_out_losses = choose_penalty(
                x, targets, self.multi_label, self.seed, views=self.views)
            with torch.no_grad():  # the BatchNorm standardizes exactly (eval mode)
                _, mean, std = standardize(x)
                norm.running_mean.copy_(mean)
                norm.running_var.copy_((std.square() - norm.eps).clamp_min(0))
                norm.weight.fill_(1.0)
                norm.bias.zero_()
        a = (x - norm.running_mean) / (norm.running_var + norm.eps).sqrt()  # (N, D)
        z, basis = row_space(a)  # (N, R), (D, R) or None
        if first:
            start = self._path(z, targets)
        else:
            start = torch.cat([linear.weight.detach().T, linear.bias.detach()[None]]).float()
            if basis is not None:
                start = torch.cat([basis.T @ start[:-1], start[-1:]])
        w = solve(z, targets, self.penalty, self.multi_label, start, max_iter)  # (R + 1, C)
        weight = w[:-1] if basis is None else basis @ w[:-1]  # (D, C)
        with torch.no_grad():
            linear.weight.copy_(weight.T)
            linear.bias.copy_(w[-1])
            return data_loss(a @ weight + w[-1], targets, self.multi_label).mean()

    def _path(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weights solved from the strongest penalty down to the chosen one, each solve
        starting from the last (weak penalties converge faster so)."""
        n, w = len(z), None
        for times_n in sorted(PENALTIES_TIMES_N, reverse=True):
            penalty = torch.clamp_min(self.penalty, times_n / n)
            w = solve(z, targets, penalty, self.multi_label, w)
            if bool((penalty == self.penalty).all()):
                break
        return w


class SolvedHead:
    """The ``ImageLearner`` side of a solved head: :meth:`fit` sets ``_solver`` while it
    solves, and the learner's hooks (steps, batches, train mode, the step) then hand the whole
    training set to it. A mixin of ``ImageLearner`` only: it uses the learner's ``head``,
    ``body``, ``data``, ``precompute``, ``multi_label`` and ``seed``."""

    _solver: LinearSolver | None = None  # set during a fit that solves the head
    _mirror_train = True  # fine_tune's first stage turns it off (see mirrors_training_images)

    @property
    def solves_head(self) -> bool:
        """True when :meth:`fit` solves the head instead of stepping it: a linear head
        (``hidden=0``, the default for up to 2,000 training images) on cached activations."""
        head = self.head
        return (self.precompute and isinstance(head, nn.Sequential) and len(head) == 3
                and isinstance(head[0], nn.BatchNorm1d) and isinstance(head[-1], nn.Linear))

    @property
    def mirrors_training_images(self) -> bool:
        """True when the solved head also learns from the training images mirrored left to
        right (:func:`threeline.vision.features.ensure`): in the three lines, while the
        images and their mirrors are no more rows than the activations have values (2N <= D),
        so the solve stays in the span of the rows; past that its cost jumped (2.6 s against
        1 s on 1,382 chips, H100) for little gain. Not in ``fine_tune``'s first stage, where
        the head only starts the whole network's training (``benchmarks/results/
        multilabel-nvidia-h100-2026-12-07-b.md``, ``small_data-*-mirror.md``)."""
        return (self.solves_head and self._mirror_train
                and 2 * len(self.data.train) <= self.body.out_features)

    def fit(self, lr, epochs: int = 1, *args, **kwargs) -> list[dict]:
        """Train for ``epochs`` epochs (see :meth:`threeline.learner.Learner.fit`).

        A linear head on cached activations (``hidden=0``; the default for up to 2,000
        training images) is solved rather than stepped: an L2-regularized logistic regression
        (binary per label for multi-label data) on the standardized activations, its penalty
        chosen by 5-fold cross-validation on the training images alone, solved in the first
        epoch (L-BFGS on a CPU, Newton's method on a GPU) and refined in the next ones
        (:mod:`threeline.vision.solve`), on the training images and their mirror images
        (:attr:`mirrors_training_images`). ``lr``, ``wd`` and the schedule do not apply to it;
        on small folders this ended at or above every stepped head tried
        (``benchmarks/results/small_data-*.md``).

        Example:
            >>> from threeline import ImageData, Learner, demo_path
            >>> learn = Learner.pretrained("efficientnet_lite0",
            ...     ImageData.from_folder(demo_path()), precompute=True, progress=False)
            >>> learn.solves_head
            True
        """
        if self.solves_head:
            views = 2 if self.mirrors_training_images else 1
            self._solver = LinearSolver(self.multi_label, self.seed, views)
        try:
            return super().fit(lr, epochs, *args, **kwargs)
        finally:
            self._solver = None
