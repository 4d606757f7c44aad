"""Typed hardware profiles: which bit modes a device runs natively, and how fast.

A client's tier decides the bit modes it may train: the model's modes no wider than its widest
native precision (narrower values are emulated on a wider path, at that path's speed), and, through
the FedScale-style time model, how long a round takes it. Preset figures are relative
(plausible ratios between device classes), not measurements; the device classes and their
native precisions follow the project's federated-learning reference notes (table "Device
classes for hardware profiles"). No tensor code here: the only package import is the bit-mode
check from :mod:`fedqdnn.quant` (which does import torch).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from fedqdnn.quant import ALLOWED_BITS, FULL_PRECISION, check_bits

_RELATIVE = "Speeds, memory and links are relative figures, not measurements."


def _is_number(value: object) -> bool:
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
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{who}: {attr} {value!r} is invalid; allowed: a number > 0")
            object.__setattr__(self, attr, float(value))
        avail = self.availability
        if not _is_number(avail) or not 0 < avail <= 1:
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
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
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

    def ms_per_sample(self, bits: int) -> float:
        """Training cost (forward + backward) of one sample at ``bits`` in ms, on the
        narrowest native path that holds it."""
        return self.ms_per_sample_fp32 / self.speedup_by_bits[self.native_mode_for(bits)]


def _packing_speedup(bits: int) -> float:
    """Idealised speed-up of a kernel family at ``bits`` (int8 2x, int4 3x, int2 4x, 1-bit 6x)."""
    if bits == FULL_PRECISION:
        return 1.0
    if bits >= 5:
        return 2.0
    if bits >= 3:
        return 3.0
    return 4.0 if bits == 2 else 6.0


# Relative figures chosen to keep the tiers' ordering plausible (MCU << phone < Jetson/CPU).
_Row = tuple[str, tuple[int, ...], float, dict[int, float], float, float, float, float]
# fmt: off
# name             modes          ms/sample@32  speed-up per mode          MB      up    down  avail
_PRESET_TABLE: tuple[_Row, ...] = (
    ("mcu-int2",       (2,),          40.0, {2: 8.0},                   4.0,    0.25, 1.0,   0.5),
    ("mcu-int8",       (8,),          40.0, {8: 4.0},                   4.0,    0.25, 1.0,   0.5),
    ("edge-tpu-int8",  (8,),          6.0,  {8: 5.0},                   256.0,  10.0, 50.0,  0.9),
    ("phone-npu-int4", (4, 8),        5.0,  {4: 6.0, 8: 4.0},           512.0,  5.0,  20.0,  0.7),
    ("phone-int8",     (8, 32),       5.0,  {8: 2.5, 32: 1.0},          1024.0, 5.0,  20.0,  0.6),
    ("jetson",         (4, 8, 32),    1.0,  {4: 3.0, 8: 2.5, 32: 1.0}, 8192.0, 20.0, 100.0, 0.9),
    ("cpu-fp32",       (32,),         2.0,  {32: 1.0},                  4096.0, 20.0, 100.0, 0.95),
    ("universal",      ALLOWED_BITS,  1.0,  {b: _packing_speedup(b) for b in ALLOWED_BITS},
                                                                        4096.0, 100.0, 100.0, 1.0),
)
# fmt: on
_PRESET_TEXT = {
    "mcu-int2": "Cortex-M class microcontroller with a 2-bit accelerator: no mainstream hardware "
    "runs 2-bit today, so this tier is hypothetical. Memory is nominal.",
    "mcu-int8": "Cortex-M MCU (CMSIS-NN) or Ethos-U micro-NPU: INT8 only. Memory is nominal.",
    "edge-tpu-int8": "Coral Edge TPU: INT8 only; trains at its inference precision.",
    "phone-npu-int4": "Phone NPU (e.g. Hexagon) with INT4 and INT8 paths.",
    "phone-int8": "Phone with an 8-bit neural engine (e.g. Apple ANE) plus FP32 on the CPU.",
    "jetson": "Jetson with TensorRT: INT4 (weight-only), INT8 and FP32.",
    "cpu-fp32": "CPU-only client: FP32 only.",
    "universal": "Every bit mode, always online: for tests and sanity runs.",
}
_HYPOTHETICAL = frozenset({"mcu-int2"})

PRESETS: dict[str, HardwareProfile] = {
    row[0]: HardwareProfile(
        *row,
        description=f"{_PRESET_TEXT[row[0]]} {_RELATIVE}",
        hypothetical=row[0] in _HYPOTHETICAL,
    )
    for row in _PRESET_TABLE
}

_FIELD_NAMES = tuple(f.name for f in fields(HardwareProfile))
_REQUIRED = tuple(
    f.name for f in fields(HardwareProfile) if f.name not in ("description", "hypothetical")
)


def get_profile(name: str) -> HardwareProfile:
    """The preset called ``name``; error listing the presets otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown hardware profile {name!r}; allowed: {', '.join(PRESETS)}"
        ) from None


def profile_from_dict(d: Mapping[str, Any]) -> HardwareProfile:
    """Build a custom profile from a TOML table.

    Keys are the field names; ``base = "<preset>"`` starts from that preset's values so a table
    only lists what it changes (``name`` is always required). ``speedup_by_bits`` may use string
    keys (``"4" = 3.0``) because TOML table keys are strings.
    """
    allowed = ("base", *_FIELD_NAMES)
    unknown = sorted(str(k) for k in d if k not in allowed)
    if unknown:
        raise ValueError(
            f"hardware profile keys {unknown} are unknown; allowed: {', '.join(allowed)}"
        )
    values: dict[str, Any] = {}
    if "base" in d:
        base = get_profile(d["base"])
        values = {f: getattr(base, f) for f in _FIELD_NAMES}
        values["description"] = f"Custom profile based on {base.name!r}. {base.description}"
    values.update({k: v for k, v in d.items() if k != "base"})
    missing = [k for k in _REQUIRED if k not in values]
    if "name" not in d and "name" not in missing:
        missing.insert(0, "name")  # a custom profile must not reuse its base's name silently
    if missing:
        raise ValueError(
            f"hardware profile {d.get('name', '?')!r} lacks keys {missing}; "
            f"required: {', '.join(_REQUIRED)} (or base + name)"
        )
    return HardwareProfile(**values)  # lists from TOML become sorted tuples there


def _largest_remainder(num: int, weights: list[float]) -> list[int]:
    """Integer counts summing to ``num``, proportional to ``weights`` (Hamilton's method).

    Leftover units go to the largest fractional parts, ties to the earlier entry.
    """
    total = sum(weights)
    quotas = [num * w / total for w in weights]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: num - sum(counts)]:
        counts[i] += 1
    return counts


# Proportions written with 4 decimals (0.3333) must pass everywhere: one tolerance for all.
PROPORTION_TOLERANCE = 1e-3


def assign_profiles(num_clients: int, proportions: Mapping[str, float], seed: int) -> list[str]:
    """Hardware tier name of each client (partition id), in exact proportions, shuffled by seed.

    Counts are ``proportion * num_clients`` by largest-remainder rounding (ties to the tier
    listed first). When there are at least as many clients as tiers, a tier that rounded to
    zero takes one client from the tier most above its quota (first listed on ties), so every
    tier is present. The list is then shuffled with ``random.Random(seed)``. Tier names are not
    checked here: the caller validates them.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients {num_clients!r} is invalid; allowed: an integer >= 1")
    if not proportions:
        raise ValueError("no hardware proportions given; allowed: {tier: fraction} summing to 1")
    names = list(proportions)
    weights = [proportions[n] for n in names]
    for name, w in zip(names, weights, strict=True):
        if not _is_number(w) or not 0 < w <= 1:
            raise ValueError(f"hardware proportion {name!r}={w!r} is invalid; allowed: 0 < p <= 1")
    total = sum(weights)
    if abs(total - 1.0) > PROPORTION_TOLERANCE:
        raise ValueError(
            f"hardware proportions sum to {total:.6g}; allowed: a sum of 1 "
            f"(+-{PROPORTION_TOLERANCE:g})"
        )
    counts = _largest_remainder(num_clients, weights)
    if num_clients >= len(names):
        quotas = [num_clients * w / total for w in weights]
        for i in sorted(range(len(names)), key=lambda i: (-weights[i], i)):
            if counts[i] == 0:
                donors = [j for j in range(len(names)) if counts[j] >= 2]
                donor = max(donors, key=lambda j: (counts[j] - quotas[j], -j))
                counts[donor] -= 1
                counts[i] = 1
    tiers = [name for name, c in zip(names, counts, strict=True) for _ in range(c)]
    random.Random(seed).shuffle(tiers)
    return tiers


__all__ = [
    "PRESETS",
    "HardwareProfile",
    "assign_profiles",
    "get_profile",
    "profile_from_dict",
]
