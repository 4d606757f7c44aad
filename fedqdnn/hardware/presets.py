"""Preset device classes (relative figures, not measurements) and custom profiles from TOML.

The device classes and their native precisions follow the project's federated-learning
reference notes (table "Device classes for hardware profiles"); speeds keep the tiers' ordering
plausible (MCU << phone < Jetson/CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from fedqdnn.hardware.profile import HardwareProfile
from fedqdnn.quant import ALLOWED_BITS, FULL_PRECISION

_RELATIVE = "Speeds, memory and links are relative figures, not measurements."


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
