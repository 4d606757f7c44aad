"""Small CNNs for the offline data sets: 8x8 digits (Conv2d) and MNIST-1D (Conv1d).

First conv and last linear stay full precision; every hidden conv is quantized and
followed by bit-specific BN and the switchable activation quantizer.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fedqdnn.layers import (
    BitBatchNorm1d,
    BitBatchNorm2d,
    BNLayout,
    GlobalAvgPool2d,
    HeadLayout,
    QuantAct,
    QuantConv1d,
    QuantConv2d,
    classifier,
)
from fedqdnn.models.base import QuantizableModel


class DigitsCNN(QuantizableModel):
    """CNN for 1x8x8 inputs: FP conv -> 2 quantized convs -> FP linear."""

    def __init__(
        self,
        bit_modes: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 1,
        width: int = 32,
        bn: BNLayout = BNLayout.BIT_SPECIFIC,
        learnable_clip: bool = False,
        head: HeadLayout = HeadLayout.SHARED,
    ):
        super().__init__(bit_modes)
        modes, w = self.bit_modes, width

        def block(conv: nn.Module, channels: int) -> list[nn.Module]:
            return [
                conv,
                BitBatchNorm2d(channels, modes, bn),
                QuantAct(modes, learnable_clip),
            ]

        self.stem = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.body = nn.Sequential(
            BitBatchNorm2d(w, modes, bn),
            QuantAct(modes, learnable_clip),
            *block(QuantConv2d(w, 2 * w, 3, padding=1, bias=False), 2 * w),
            nn.MaxPool2d(2),
            *block(QuantConv2d(2 * w, 2 * w, 3, padding=1, bias=False), 2 * w),
            GlobalAvgPool2d(),
            nn.Flatten(),
            classifier(2 * w, num_classes, modes, head),
        )
        self.finalize()


class MNIST1DCNN(QuantizableModel):
    """Conv1d net for 1x40 MNIST-1D signals: FP conv -> 2 strided quantized convs -> FP linear."""

    def __init__(
        self,
        bit_modes: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 1,
        width: int = 32,
        length: int = 40,
        bn: BNLayout = BNLayout.BIT_SPECIFIC,
        learnable_clip: bool = False,
        head: HeadLayout = HeadLayout.SHARED,
    ):
        super().__init__(bit_modes)
        modes, w = self.bit_modes, width

        def block(conv: nn.Module, channels: int) -> list[nn.Module]:
            return [
                conv,
                BitBatchNorm1d(channels, modes, bn),
                QuantAct(modes, learnable_clip),
            ]

        out_len = (length + 1) // 2
        out_len = (out_len + 1) // 2
        self.stem = nn.Conv1d(in_channels, w, 5, padding=2, bias=False)
        self.body = nn.Sequential(
            BitBatchNorm1d(w, modes, bn),
            QuantAct(modes, learnable_clip),
            *block(QuantConv1d(w, 2 * w, 3, stride=2, padding=1, bias=False), 2 * w),
            *block(QuantConv1d(2 * w, 2 * w, 3, stride=2, padding=1, bias=False), 2 * w),
            nn.Flatten(),
            classifier(2 * w * out_len, num_classes, modes, head),
        )
        self.finalize()
