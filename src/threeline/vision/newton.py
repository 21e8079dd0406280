"""Newton's method for the solved linear heads (:mod:`threeline.vision.solve`) on a GPU.

The objective is :func:`threeline.vision.solve.solve`'s: mean cross-entropy (or binary
cross-entropy per label) + penalty / 2 * |weights|^2, bias unpenalized. L-BFGS takes hundreds of
small steps, each a handful of kernel launches and a few host round trips; on a GPU that is
launch-bound (the cross-validated choice of penalties took 2.8 s on 1,382 landcover chips).
Newton's method takes a few large steps instead:

- several labels: one (R + 1, R + 1) Hessian per label, all labels factored at once;
- one label among C classes: the full (C (R + 1))^2 Hessian of the softmax, used while it is
  small (``MAX_SOFTMAX_SIZE``); larger problems stay with L-BFGS.

Gradients, objectives and Cholesky factors are float64 (an inexact gradient would move the
answer; the several-label Hessians' products are float32, which only slows convergence a
little). Each step is damped (the best of 1, 1/2, 1/4, 1/8 or no step, per label) so the
objective never rises.

    w = newton(z, targets, penalty, multi_label)   # (N, R), (N,) or (N, C) -> (R + 1, C)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_SOFTMAX_SIZE = 2048  # (R + 1) * classes: the side of a softmax Hessian worth factoring
STEPS = (1.0, 0.5, 0.25, 0.125, 0.0)


def use_newton(z: torch.Tensor, n_out: int, multi_label: bool) -> bool:
    """True on a GPU for several labels, or one label whose softmax Hessian is small."""
    return z.is_cuda and (multi_label or (z.shape[1] + 1) * n_out <= MAX_SOFTMAX_SIZE)


def newton(z: torch.Tensor, targets: torch.Tensor, penalty: torch.Tensor, multi_label: bool,
           start: torch.Tensor | None = None, max_iter: int = 30, tolerance: float = 1e-7
           ) -> torch.Tensor:
    """Weights (R + 1, C) minimizing the regularized loss on ``z`` (N, R); the last row is
    the bias. ``penalty``: a scalar, or (C,) one per label.

    Example:
        >>> z = torch.tensor([[1.0], [2.0], [-1.0], [-2.0]])
        >>> w = newton(z, torch.tensor([1, 1, 0, 0]), torch.tensor(0.1), False)
        >>> (z @ w[:-1] + w[-1]).argmax(1).tolist()
        [1, 1, 0, 0]
    """
    n, r = z.shape
    x = torch.cat([z, z.new_ones(n, 1)], 1)  # (N, R + 1): the last column fits the bias
    x64 = x.double()
    if multi_label:
        y = targets.double()  # (N, C)
    else:
        n_out = start.shape[1] if start is not None else int(targets.max()) + 1
        y = F.one_hot(targets, n_out).double()  # (N, C)
    ridge = torch.ones(r + 1, y.shape[1], dtype=torch.float64, device=z.device)
    ridge = ridge * penalty.double()  # (R + 1, C): the penalty of each weight
    ridge[-1] = 1e-10 if multi_label else 1e-6  # the bias: a trace keeps the Hessian positive
    w = torch.zeros_like(ridge) if start is None else start.double().clone()  # (R + 1, C)
    steps = torch.tensor(STEPS, dtype=torch.float64, device=z.device)[:, None, None]
    for _ in range(max_iter):
        logits = x64 @ w  # (N, C)
        p = torch.sigmoid(logits) if multi_label else torch.softmax(logits, 1)
        grad = x64.T @ (p - y) / n + ridge * w  # (R + 1, C)
        if float(grad.abs().max()) < tolerance:
            break
        direction = (_per_label(x, p, grad, ridge) if multi_label
                     else _softmax(x64, p, grad, ridge))  # (R + 1, C)
        trial = w - steps * direction  # (5, R + 1, C)
        moved = logits - steps * (x64 @ direction)  # (5, N, C)
        losses = _objective(moved, trial, y, ridge, multi_label)  # (5, C) or (5, 1)
        best = torch.nan_to_num(losses, nan=float("inf")).argmin(0)
        if bool((best == len(STEPS) - 1).all()):
            break  # no step lowers the objective: as close as float64 gets
        if multi_label:
            w = trial[best, :, torch.arange(len(best), device=z.device)].T
        else:
            w = trial[best[0]]
    return w.to(z.dtype)


def _objective(logits: torch.Tensor, weights: torch.Tensor, y: torch.Tensor,
               ridge: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """(S, N, C) logits and (S, R + 1, C) weights of S trial steps -> (S, C) per label, or
    (S, 1) for the softmax."""
    penalty = (ridge * weights.square()).sum(-2) / 2  # (S, C)
    if multi_label:
        loss = F.binary_cross_entropy_with_logits(logits, y.expand_as(logits),
                                                  reduction="none").mean(-2)
        return loss + penalty
    loss = -(y * torch.log_softmax(logits, -1)).sum(-1).mean(-1)  # (S,)
    return (loss + penalty.sum(-1))[:, None]


def _per_label(x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, ridge: torch.Tensor
               ) -> torch.Tensor:
    """Newton directions (R + 1, C) of C independent binary problems."""
    s = (p * (1 - p) / len(x)).float().T  # (C, N): each label's curvature per row
    hess = (x.T[None] * s[:, None]) @ x  # (C, R + 1, R + 1)
    hess = hess.double() + torch.diag_embed(ridge.T)
    factor, _ = torch.linalg.cholesky_ex(hess)
    return torch.cholesky_solve(grad.T[..., None], factor)[..., 0].T


def _softmax(x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, ridge: torch.Tensor
             ) -> torch.Tensor:
    """The Newton direction (R + 1, C) of a softmax over C classes, from its full Hessian:
    block (c, d) is x^T diag(p_c (1[c = d] - p_d) / N) x."""
    n, size = x.shape
    classes = p.shape[1]
    eye = torch.eye(classes, dtype=p.dtype, device=p.device)
    curvature = p[:, :, None] * (eye - p[:, None, :]) / n  # (N, C, C)
    hess = torch.einsum("ncd,na,nb->cadb", curvature, x, x).reshape(classes * size, -1)
    hess = hess + torch.diag(ridge.T.reshape(-1))  # class-major, as the reshape
    factor, _ = torch.linalg.cholesky_ex(hess)
    step = torch.cholesky_solve(grad.T.reshape(-1, 1), factor)  # (C (R + 1), 1)
    return step.reshape(classes, size).T
