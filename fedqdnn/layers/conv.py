"""Convolutions whose full-precision latent weights are shared by every bit mode."""

from __future__ import annotations

import torch
from torch import nn

from fedqdnn.layers.switchable import BitSwitchable
from fedqdnn.quant import quantize_weight


class QuantConv1d(BitSwitchable, nn.Conv1d):
    """Conv1d that quantizes its weights to the active bit mode in the forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv_forward(x, quantize_weight(self.weight, self.bits), self.bias)


class QuantConv2d(BitSwitchable, nn.Conv2d):
    """Conv2d that quantizes its weights to the active bit mode in the forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv_forward(x, quantize_weight(self.weight, self.bits), self.bias)


__all__ = ["QuantConv1d", "QuantConv2d"]
