"""A typed hardware profile: which bit modes a device runs natively, and how fast.

A client's tier decides the bit modes it may train: the model's modes no wider than its widest
native precision (narrower values are emulated on a wider path, at that path's speed), and,
through the FedScale-style time model (:mod:`fedqdnn.costs`), how long a round takes it.
Fields are validated once here, so simulation code can trust any profile it receives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedqdnn.quant import FULL_PRECISION, check_bits


def is_number(value: object) -> bool:
    """True for int or float, not bool (bool is an int subclass in Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class HardwareProfile:
    """One device class: native bit modes, per-sample training cost, memory, links, uptime.

    Fields are validated (and normalised: sorted modes, float numbers, int speed-up keys) once
    here, so simulation code can trust any profile it receives.
    """

    name: str
    bit_modes: tuple[int, ...]
    ms_per_sample_fp32: float
    speedup_by_bits: dict[int, float] = field(hash=False)
    memory_mb: float
    uplink_mbps: float
    downlink_mbps: float
    availability: float
    description: str = ""
    hypothetical: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(
                f"hardware profile name {self.name!r} is invalid; allowed: a non-empty string"
            )
        who = f"hardware profile {self.name!r}"
        modes = self._checked_modes(who)
        object.__setattr__(self, "bit_modes", modes)
        for attr in ("ms_per_sample_fp32", "memory_mb", "uplink_mbps", "downlink_mbps"):
            value = getattr(self, attr)
            if not is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{who}: {attr} {value!r} is invalid; allowed: a number > 0")
            object.__setattr__(self, attr, float(value))
        avail = self.availability
        if not is_number(avail) or not 0 < avail <= 1:
            raise ValueError(f"{who}: availability {avail!r} is invalid; allowed: 0 < a <= 1")
        object.__setattr__(self, "availability", float(avail))
        object.__setattr__(self, "speedup_by_bits", self._checked_speedups(who, modes))
        if not isinstance(self.description, str):
            raise ValueError(f"{who}: description {self.description!r} is not a string")
        if not isinstance(self.hypothetical, bool):
            raise ValueError(
                f"{who}: hypothetical {self.hypothetical!r} is invalid; allowed: true/false"
            )

    def _checked_modes(self, who: str) -> tuple[int, ...]:
        raw = self.bit_modes
        if isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or len(raw) == 0:
            raise ValueError(
                f"{who}: bit_modes {raw!r} is invalid; allowed: non-empty list of 1-8, 32"
            )
        try:
            checked = [check_bits(b) for b in raw]
        except ValueError as err:
            raise ValueError(f"{who}: {err}") from None
        if len(set(checked)) != len(checked):
            raise ValueError(
                f"{who}: bit_modes {tuple(raw)} repeat a mode; allowed: distinct modes"
            )
        return tuple(sorted(checked))

    def _checked_speedups(self, who: str, modes: tuple[int, ...]) -> dict[int, float]:
        raw = self.speedup_by_bits
        if not isinstance(raw, Mapping):
            raise ValueError(
                f"{who}: speedup_by_bits {raw!r} is invalid; allowed: a mode->number map"
            )
        speedups: dict[int, float] = {}
        for key, value in raw.items():
            try:
                bits = int(key) if isinstance(key, str) else key
            except ValueError:
                bits = key
            if bits not in modes or isinstance(bits, bool):
                raise ValueError(
                    f"{who}: speedup_by_bits key {key!r} is not one of its bit_modes {modes}"
                )
            if not is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"{who}: speedup_by_bits[{bits}] {value!r} is invalid; allowed: a number > 0"
                )
            speedups[bits] = float(value)
        missing = [b for b in modes if b not in speedups]
        if missing:
            raise ValueError(
                f"{who}: speedup_by_bits lacks modes {tuple(missing)}; allowed: exactly {modes}"
            )
        if FULL_PRECISION in speedups and speedups[FULL_PRECISION] != 1.0:
            raise ValueError(
                f"{who}: speedup_by_bits[32] {speedups[FULL_PRECISION]!r} is invalid; "
                "allowed: 1.0 (32 bit is the reference)"
            )
        return {b: speedups[b] for b in modes}

    def native_mode_for(self, bits: int) -> int:
        """Narrowest native precision that holds ``bits``-bit values (lower precision is
        emulated on a wider path: 2-bit values fit int4/int8 arithmetic, all fit FP32)."""
        wider = [b for b in self.bit_modes if b >= bits]
        if not wider:
            raise ValueError(
                f"hardware profile {self.name!r} cannot run bit mode {bits!r}; "
                f"allowed: modes up to {max(self.bit_modes)} (native {self.bit_modes})"
            )
        return wider[0]

    def affordable_modes(self, model_modes: Sequence[int]) -> tuple[int, ...]:
        """The model's modes this device can run: those no wider than its widest native
        precision (sorted); error if there are none."""
        runnable = tuple(sorted(b for b in set(model_modes) if b <= max(self.bit_modes)))
        if not runnable:
            raise ValueError(
                f"hardware profile {self.name!r} runs at most {max(self.bit_modes)}-bit but the "
                f"model has {tuple(sorted(model_modes))}; give the model a mode <= "
                f"{max(self.bit_modes)}"
            )
        return runnable

    def top_mode(self, model_modes: Sequence[int]) -> int:
        """Highest-precision model mode this device runs (its best-accuracy choice)."""
        return self.affordable_modes(model_modes)[-1]

    def native_ms_per_sample(self, bits: int) -> float:
        """Training cost (forward + backward) of one sample at ``bits`` in ms, on the
        narrowest native path that holds it."""
        return self.ms_per_sample_fp32 / self.speedup_by_bits[self.native_mode_for(bits)]
