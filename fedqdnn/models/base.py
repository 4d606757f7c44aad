"""QuantizableModel: the model-level bit-mode switch shared by every architecture."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from fedqdnn.bitmodes import parse_bit_modes
from fedqdnn.layers.switchable import BitSwitchable


class QuantizableModel(nn.Module):
    """Base class: one set of weights, bit mode chosen at run time with ``set_bits``.

    Subclasses define ``stem`` (the full-precision first layer, identical in every mode)
    and ``body`` (everything after it). The joint step computes the stem once and runs
    only the body per mode (:func:`fedqdnn.training.joint_step`).
    """

    stem: nn.Module
    body: nn.Module

    def __init__(self, bit_modes: Sequence[int]):
        super().__init__()
        self.bit_modes: tuple[int, ...] = parse_bit_modes(bit_modes)
        self.active_bits: int = max(self.bit_modes)

    def set_bits(self, bits: int) -> None:
        """Select ``bits`` in every layer; raises ValueError if the model lacks that mode."""
        if bits not in self.bit_modes:
            allowed = ", ".join(str(b) for b in self.bit_modes)
            raise ValueError(f"bit mode {bits!r} is not one of this model's modes: {allowed}")
        for module in self.modules():
            if isinstance(module, BitSwitchable):
                module.set_bits(bits)
        self.active_bits = bits

    @contextmanager
    def bits(self, bits: int) -> Iterator[QuantizableModel]:
        """Run a block at ``bits`` and restore the previous mode afterwards."""
        previous = self.active_bits
        self.set_bits(bits)
        try:
            yield self
        finally:
            self.set_bits(previous)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.body(self.stem(x))

    def finalize(self) -> None:
        """Put every layer in the top mode once the layers exist (call at end of __init__)."""
        self.set_bits(max(self.bit_modes))
