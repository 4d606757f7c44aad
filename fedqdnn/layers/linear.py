"""Linear layer whose full-precision latent weights are shared by every bit mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedqdnn.layers.switchable import BitSwitchable
from fedqdnn.quant import quantize_weight


class QuantLinear(BitSwitchable, nn.Linear):
    """Linear layer that quantizes its weights to the active bit mode in the forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(x, quantize_weight(self.weight, self.bits), self.bias)
