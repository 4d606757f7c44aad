"""The one piece of state every bit-switchable layer shares: the active bit mode."""

from __future__ import annotations

from fedqdnn.quant import FULL_PRECISION, check_bits


class BitSwitchable:
    """Mixin: a layer whose computation depends on the active bit mode.

    The model sets ``bits`` on every such layer at once (``QuantizableModel.set_bits``);
    layers never choose a mode themselves.
    """

    bits: int = FULL_PRECISION

    def set_bits(self, bits: int) -> None:
        """Select the bit mode for the next forward passes."""
        self.bits = check_bits(bits)
