"""Switchable activation quantizer: replaces ReLU; quantizes to the active bit mode."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedqdnn.bitmodes import mode_key
from fedqdnn.layers.switchable import BitSwitchable
from fedqdnn.quant import FULL_PRECISION, quantize_activation, quantize_activation_clipped


class QuantAct(BitSwitchable, nn.Module):
    """``round_b(clamp(x, 0, 1))`` at b < 32, ReLU at 32 bits.

    With ``learnable_clip`` each quantized mode has its own learnable clipping level
    (AdaBits "switchable clipping"), stored as ``clip.bits<b>`` so it is aggregated per
    mode like bit-specific BN.
    """

    def __init__(
        self, bit_modes: Sequence[int], learnable_clip: bool = False, init_clip: float = 1.0
    ):
        super().__init__()
        self.learnable_clip = learnable_clip
        quantized = [b for b in bit_modes if b != FULL_PRECISION]
        self.clip = nn.ParameterDict(
            {mode_key(b): nn.Parameter(torch.tensor([init_clip])) for b in quantized}
            if learnable_clip
            else {}
        )
        self.bits = max(bit_modes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.learnable_clip and self.bits != FULL_PRECISION:
            return quantize_activation_clipped(x, self.clip[mode_key(self.bits)], self.bits)
        return quantize_activation(x, self.bits)
