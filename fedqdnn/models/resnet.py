"""Pre-activation ResNet-20 for 32x32 inputs (CIFAR), Quantizable (Any-Precision layout).

Each residual block is BN -> quantized act -> quantized conv, twice; the first conv and
the classifier stay full precision. ``width`` multiplies the 16/32/64 channel stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedqdnn.layers import (
    BitBatchNorm2d,
    BNLayout,
    GlobalAvgPool2d,
    HeadLayout,
    QuantAct,
    QuantConv2d,
    classifier,
)
from fedqdnn.models.base import QuantizableModel


class PreActBlock(nn.Module):
    """Pre-activation basic block with a quantized 1x1 projection when the shape changes."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        modes: Sequence[int],
        bn: BNLayout,
        learnable_clip: bool,
    ):
        super().__init__()
        self.bn1 = BitBatchNorm2d(cin, modes, bn)
        self.act1 = QuantAct(modes, learnable_clip)
        self.conv1 = QuantConv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = BitBatchNorm2d(cout, modes, bn)
        self.act2 = QuantAct(modes, learnable_clip)
        self.conv2 = QuantConv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = (
            QuantConv2d(cin, cout, 1, stride=stride, bias=False)
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.act1(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


class PreActResNet20(QuantizableModel):
    """ResNet-20 (3 stages x 3 blocks) with bit-specific BN."""

    def __init__(
        self,
        bit_modes: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 1,
        bn: BNLayout = BNLayout.BIT_SPECIFIC,
        learnable_clip: bool = False,
        head: HeadLayout = HeadLayout.SHARED,
    ):
        super().__init__(bit_modes)
        modes = self.bit_modes
        channels = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        cin = channels[0]
        for stage, cout in enumerate(channels):
            for i in range(3):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(cin, cout, stride, modes, bn, learnable_clip))
                cin = cout
        self.body = nn.Sequential(
            *blocks,
            BitBatchNorm2d(cin, modes, bn),
            QuantAct(modes, learnable_clip),
            GlobalAvgPool2d(),
            nn.Flatten(),
            classifier(cin, num_classes, modes, head),
        )
        self.finalize()
