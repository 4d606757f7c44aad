"""Bit-mode sets: parsing, validation and the state-dict naming of per-mode entries."""

from __future__ import annotations

import re
from collections.abc import Iterable

from fedqdnn.quant import ALLOWED_BITS, check_bits

_MODE_KEY = re.compile(r"(?:^|\.)bits(\d+)(?:\.|$)")


def parse_bit_modes(spec: str | Iterable[int]) -> tuple[int, ...]:
    """Parse ``"2,4,8,32"`` (or an iterable of ints) into a sorted, de-duplicated tuple.

    Raises ValueError naming the bad value and the allowed modes.
    """
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
        values = []
        for item in items:
            try:
                values.append(int(item))
            except ValueError:
                raise ValueError(
                    f"bit mode {item!r} is not an integer; allowed: 1-8 or 32"
                ) from None
    else:
        values = list(spec)
    if not values:
        raise ValueError("no bit modes given; allowed: 1-8 or 32, e.g. '2,4,8,32'")
    return tuple(sorted({check_bits(v) for v in values}))


def mode_key(bits: int) -> str:
    """Name of one bit mode's entry inside a module (``bits4``)."""
    return f"bits{check_bits(bits)}"


def mode_of_state_key(key: str) -> int | None:
    """Bit mode a state-dict key belongs to (``layer1.bn.bits4.weight`` -> 4), None if shared."""
    match = _MODE_KEY.search(key)
    return int(match.group(1)) if match else None


__all__ = ["ALLOWED_BITS", "mode_key", "mode_of_state_key", "parse_bit_modes"]
