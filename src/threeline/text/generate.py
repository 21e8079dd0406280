"""Sampling new tokens from a language model, one at a time, carrying the recurrent state.

    ids = sample(model, prompt_ids, n=400, temperature=0.8, top_k=None, never=[pad, unk],
                 generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.inference_mode()
def sample(model: nn.Module, ids: Sequence[int], n: int, temperature: float,
           top_k: int | None, never: Sequence[int], generator: torch.Generator) -> list[int]:
    """``n`` token ids after ``ids``, each drawn from softmax(logits / temperature), among the
    ``top_k`` likeliest when given, never one of ``never``. ``model.run(tokens, state)`` gives
    (logits (1, T, V), state); the model's carried state is reset afterwards.

    Example:
        >>> from threeline.models.rnn import RNNLanguageModel
        >>> lm = RNNLanguageModel(vocab_size=20, n_layers=1, hidden=8).eval()
        >>> out = sample(lm, [1, 2], 5, 1.0, 3, [0], torch.Generator().manual_seed(0))
        >>> len(out), all(0 < t < 20 for t in out)
        (5, True)
    """
    device = next(model.parameters()).device
    logits, state = model.run(torch.tensor([list(ids)], device=device))
    out: list[int] = []
    for _ in range(n):
        step = logits[0, -1].float() / temperature  # (V,)
        step[list(never)] = -float("inf")
        if top_k:
            kth = step.topk(min(top_k, step.numel())).values[-1]
            step[step < kth] = -float("inf")
        token = torch.multinomial(step.softmax(-1), 1, generator=generator)  # (1,)
        out.append(int(token))
        logits, state = model.run(token.view(1, 1), state)
    if hasattr(model, "reset"):
        model.reset()
    return out
