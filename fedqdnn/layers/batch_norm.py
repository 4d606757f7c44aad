"""Bit-Specific Batch Normalization: BN statistics (and affine parameters) per bit mode.

A quantized matmul's output distribution differs per bit mode, so each mode keeps its own BN
while conv/linear weights are shared (Du et al., 2020). Three layouts:

* ``bit-specific``: one BN per mode, statistics and affine parameters (the paper's);
* ``shared-affine``: statistics per mode, one affine weight and bias shared by every mode
  (FjORD's per-width BN): the affine parameters then learn from every client of a fleet;
* ``shared``: one BN for every mode (the ablation; its statistics fit no mode well).

Per-mode entries live under ``bns.bits<b>`` (aggregated per mode); shared ones do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import torch
from torch import nn

from fedqdnn.bitmodes import mode_key
from fedqdnn.layers.switchable import BitSwitchable

SHARED_BN_KEY = "shared"


class BNLayout(StrEnum):
    """What a bit mode owns of a BN layer."""

    BIT_SPECIFIC = "bit-specific"
    SHARED_AFFINE = "shared-affine"
    SHARED = "shared"


class _BitBatchNorm(BitSwitchable, nn.Module):
    bn_type: type[nn.modules.batchnorm._BatchNorm]

    def __init__(
        self,
        num_features: int,
        bit_modes: Sequence[int],
        layout: BNLayout = BNLayout.BIT_SPECIFIC,
    ):
        super().__init__()
        self.layout = BNLayout(layout)
        if self.layout == BNLayout.SHARED:
            self.bns = nn.ModuleDict({SHARED_BN_KEY: self.bn_type(num_features)})
        else:
            affine = self.layout == BNLayout.BIT_SPECIFIC
            self.bns = nn.ModuleDict(
                {mode_key(b): self.bn_type(num_features, affine=affine) for b in bit_modes}
            )
        if self.layout == BNLayout.SHARED_AFFINE:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        self.bits = max(bit_modes)

    def bn_for(self, bits: int) -> nn.modules.batchnorm._BatchNorm:
        """The BN (statistics, and affine unless shared-affine) serving ``bits``."""
        return self.bns[SHARED_BN_KEY if self.layout == BNLayout.SHARED else mode_key(bits)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.bn_for(self.bits)(x)
        if self.layout == BNLayout.SHARED_AFFINE:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


class BitBatchNorm1d(_BitBatchNorm):
    """Bit-specific BatchNorm1d (for Conv1d / Linear features)."""

    bn_type = nn.BatchNorm1d


class BitBatchNorm2d(_BitBatchNorm):
    """Bit-specific BatchNorm2d (for Conv2d features)."""

    bn_type = nn.BatchNorm2d
