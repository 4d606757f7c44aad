"""Bit-Specific Batch Normalization: one BN (affine + running statistics) per bit mode.

A quantized matmul's output distribution differs per bit mode, so each mode keeps its
own BN while conv/linear weights are shared (Du et al., 2020). ``bit_specific=False``
gives the shared-BN ablation: one BN for every mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedqdnn.bitmodes import mode_key
from fedqdnn.layers.switchable import BitSwitchable

SHARED_BN_KEY = "shared"


class _BitBatchNorm(BitSwitchable, nn.Module):
    bn_type: type[nn.modules.batchnorm._BatchNorm]

    def __init__(self, num_features: int, bit_modes: Sequence[int], bit_specific: bool = True):
        super().__init__()
        self.bit_specific = bit_specific
        keys = [mode_key(b) for b in bit_modes] if bit_specific else [SHARED_BN_KEY]
        self.bns = nn.ModuleDict({k: self.bn_type(num_features) for k in keys})
        self.bits = max(bit_modes)

    def bn_for(self, bits: int) -> nn.modules.batchnorm._BatchNorm:
        """The BN serving ``bits`` (the shared one in the ablation)."""
        return self.bns[mode_key(bits) if self.bit_specific else SHARED_BN_KEY]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.bn_for(self.bits)(x)


class BitBatchNorm1d(_BitBatchNorm):
    """Bit-specific BatchNorm1d (for Conv1d / Linear features)."""

    bn_type = nn.BatchNorm1d


class BitBatchNorm2d(_BitBatchNorm):
    """Bit-specific BatchNorm2d (for Conv2d features)."""

    bn_type = nn.BatchNorm2d
