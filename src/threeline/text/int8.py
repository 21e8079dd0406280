"""Faster prediction on a CPU: a copy of a recurrent classifier with int8 weights.

On a CPU the LSTM layers of the AWD-LSTM classifier are the slow part of ``predict``; PyTorch's
dynamic quantization stores their weights (and the linear layers') as int8 and quantizes the
activations on the fly, which runs the same model many times faster on two cores (measured in
``benchmarks/results/text-predict-*``). Training and validation keep the float model; only
``TextLearner.predict`` on a CPU uses the copy, made again whenever a weight has changed.

    copy = Int8Copy()
    module = copy.of(model)        # nn.Module with int8 LSTM/Linear weights, or None
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def int8_available() -> bool:
    """True when this PyTorch still has eager dynamic quantization (deprecated upstream)."""
    quantization = getattr(torch.ao, "quantization", None)
    return quantization is not None and hasattr(quantization, "quantize_dynamic")


class Int8Copy:
    """An int8 copy of a model, kept while the model's weights are unchanged."""

    def __init__(self):
        self.key: tuple | None = None
        self.module: nn.Module | None = None

    def of(self, model: nn.Module) -> nn.Module | None:
        """The int8 copy of ``model`` (eval mode, on the CPU), or None when unavailable."""
        if not int8_available():
            return None
        key = (id(model), tuple((id(p), p._version) for p in model.parameters()))
        if key != self.key:
            float_copy = copy.deepcopy(model).cpu().float().eval()
            with warnings.catch_warnings():  # deprecation notes from torch.ao.quantization
                warnings.simplefilter("ignore")
                self.module = torch.ao.quantization.quantize_dynamic(
                    float_copy, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
            self.key = key
        return self.module
