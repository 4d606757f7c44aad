"""The classifier head: one full-precision linear shared by every bit mode, or one per mode.

With a shared head every mode's features must suit one classifier; a mode whose features
differ most from the others' (the lowest) pays for it. ``bit-specific`` gives each mode a
classifier of its own (``heads.bits<b>``, aggregated per mode like bit-specific BN), at
``num_classes * (features + 1)`` parameters per extra mode, all starting from one initial
head so round 0 is the shared model.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import torch
from torch import nn

from fedqdnn.bitmodes import mode_key
from fedqdnn.layers.switchable import BitSwitchable


class HeadLayout(StrEnum):
    """What a bit mode owns of the classifier."""

    SHARED = "shared"
    BIT_SPECIFIC = "bit-specific"


class BitLinear(BitSwitchable, nn.Module):
    """A full-precision linear layer per bit mode; the active mode's one runs."""

    def __init__(self, in_features: int, out_features: int, bit_modes: Sequence[int]):
        super().__init__()
        first = nn.Linear(in_features, out_features)
        self.heads = nn.ModuleDict(
            {mode_key(b): nn.Linear(in_features, out_features) for b in bit_modes}
        )
        for head in self.heads.values():
            head.load_state_dict(first.state_dict())
        self.bits = max(bit_modes)

    def copy_mode(self, source: int, target: int) -> None:
        """Give mode ``target`` the head of mode ``source`` (post-training quantization)."""
        self.heads[mode_key(target)].load_state_dict(self.heads[mode_key(source)].state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.heads[mode_key(self.bits)](x)


def classifier(
    in_features: int, num_classes: int, bit_modes: Sequence[int], layout: HeadLayout
) -> nn.Module:
    """The model's last layer: ``nn.Linear`` when shared (state keys as before), else
    :class:`BitLinear`."""
    if HeadLayout(layout) == HeadLayout.SHARED:
        return nn.Linear(in_features, num_classes)
    return BitLinear(in_features, num_classes, bit_modes)
