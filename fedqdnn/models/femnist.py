"""The LEAF FEMNIST CNN (Caldas et al. 2018) as a Quantizable DNN, for 28x28 images.

LEAF's network: conv 5x5 (32) -> max-pool -> conv 5x5 (64) -> max-pool -> dense 2048 -> dense
classes. As in the other models, the first conv and the last linear stay full precision; the
hidden conv and dense layer are quantized, and every hidden activation goes through
bit-specific BN and the switchable activation quantizer (which replaces LEAF's ReLU).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fedqdnn.layers import (
    BitBatchNorm1d,
    BitBatchNorm2d,
    BNLayout,
    HeadLayout,
    QuantAct,
    QuantConv2d,
    QuantLinear,
    classifier,
)
from fedqdnn.models.base import QuantizableModel

FEMNIST_SIDE = 28  # input height and width the dense layer is sized for


class FemnistCNN(QuantizableModel):
    """LEAF CNN for Cx28x28 inputs: FP conv -> quantized conv -> quantized dense -> FP linear."""

    def __init__(
        self,
        bit_modes: Sequence[int],
        num_classes: int = 62,
        in_channels: int = 1,
        width: int = 32,
        bn: BNLayout = BNLayout.BIT_SPECIFIC,
        learnable_clip: bool = False,
        head: HeadLayout = HeadLayout.SHARED,
    ):
        super().__init__(bit_modes)
        modes, w = self.bit_modes, width
        hidden = 64 * w  # LEAF: 2048 at width 32
        pooled = FEMNIST_SIDE // 4
        self.stem = nn.Conv2d(in_channels, w, 5, padding=2, bias=False)
        self.body = nn.Sequential(
            BitBatchNorm2d(w, modes, bn),
            QuantAct(modes, learnable_clip),
            nn.MaxPool2d(2),
            QuantConv2d(w, 2 * w, 5, padding=2, bias=False),
            BitBatchNorm2d(2 * w, modes, bn),
            QuantAct(modes, learnable_clip),
            nn.MaxPool2d(2),
            nn.Flatten(),
            QuantLinear(2 * w * pooled * pooled, hidden, bias=False),
            BitBatchNorm1d(hidden, modes, bn),
            QuantAct(modes, learnable_clip),
            classifier(hidden, num_classes, modes, head),
        )
        self.finalize()
