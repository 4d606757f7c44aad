"""Constrained value types shared by every config, and the one-line error they produce.

Bounds are declared once, as annotated types, and every config (federated run, centralized job,
loss, optimizer) uses them; :func:`one_line` turns a pydantic error into the single line the CLI
prints: the key, the value given and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError

from fedqdnn.rng import SEED_LIMIT


def _no_bool(value: object) -> object:
    """Refuse true/false where a number is expected (bool is an int subclass in Python)."""
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true/false")
    return value


_Number = BeforeValidator(_no_bool)
# Every count fits a 32-bit index (torch, numpy) and Flower's 64-bit integer config values.
COUNT_LIMIT = 2**31 - 1
PositiveInt = Annotated[int, _Number, Field(ge=1, le=COUNT_LIMIT)]
NonNegativeInt = Annotated[int, _Number, Field(ge=0, le=COUNT_LIMIT)]
Seed = Annotated[int, _Number, Field(ge=0, le=SEED_LIMIT - 1)]
PositiveFloat = Annotated[float, _Number, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, _Number, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, _Number, Field(ge=0, le=1, allow_inf_nan=False)]
Fraction = Annotated[float, _Number, Field(gt=0, le=1, allow_inf_nan=False)]
OpenFraction = Annotated[float, _Number, Field(gt=0, lt=1, allow_inf_nan=False)]

# Meaningful ranges of training settings: past these a run diverges, overflows or never ends.
RoundCount = Annotated[int, _Number, Field(ge=1, le=100_000)]
EpochCount = Annotated[int, _Number, Field(ge=1, le=10_000)]
BatchSize = Annotated[int, _Number, Field(ge=1, le=1_000_000)]
ModelWidth = Annotated[int, _Number, Field(ge=1, le=1024)]
LearningRate = Annotated[float, _Number, Field(gt=0, le=10, allow_inf_nan=False)]
Momentum = Annotated[float, _Number, Field(ge=0, lt=1, allow_inf_nan=False)]
WeightDecay = Annotated[float, _Number, Field(ge=0, lt=1, allow_inf_nan=False)]
LossWeight = Annotated[float, _Number, Field(ge=0, le=100, allow_inf_nan=False)]
Temperature = Annotated[float, _Number, Field(ge=0.01, le=100, allow_inf_nan=False)]
Concentration = Annotated[float, _Number, Field(gt=0, le=10_000, allow_inf_nan=False)]
SLOWDOWN_LIMIT = 1e6  # a throttle factor beyond this only overflows simulated time
Seconds = Annotated[float, _Number, Field(ge=0, le=1e9, allow_inf_nan=False)]


def _sample_count(value: int) -> int:
    if value != 0 and not 100 <= value <= 1_000_000:
        raise ValueError("allowed: 0 (the data set's default) or 100 to 1000000")
    return value


SampleCount = Annotated[int, _Number, Field(ge=0), AfterValidator(_sample_count)]


VALUE_CHARS = 60  # a longer value is cut: the line names the key, it need not print it all


def one_line(
    err: ValidationError, key_of: Callable[[tuple], str] = lambda loc: ".".join(map(str, loc))
) -> str:
    """The first error of ``err`` as ``key = value is not allowed: what is allowed``.

    ``key_of`` names a field from its pydantic location (e.g. its flat config key).
    """
    first = err.errors(include_url=False)[0]
    reason = str(first["msg"]).removeprefix("Value error, ")
    reason = reason[:1].lower() + reason[1:]
    loc = tuple(p for p in first["loc"] if not str(p).startswith("function-"))
    if not loc:
        return reason
    if first["type"] == "missing":
        return f"{key_of(loc)} is missing"
    value = repr(first["input"])
    value = value if len(value) <= VALUE_CHARS else value[: VALUE_CHARS - 3] + "..."
    return f"{key_of(loc)} = {value} is not allowed: {reason}"


def parse_mode_pairs(spec: object) -> object:
    """``"32:2,4:0.5"`` or {32: 2} -> (("32", "2"), ("4", "0.5")) for a typed field to
    convert (per-mode weights, per-mode start rounds); other sequences pass through."""
    if isinstance(spec, Mapping):
        return tuple((int(k), v) for k, v in spec.items())
    if not isinstance(spec, str):
        return spec
    pairs = []
    for item in (p.strip() for p in spec.split(",") if p.strip()):
        bits, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"entry {item!r} is not BITS:VALUE, e.g. '32:2'")
        pairs.append((bits.strip(), value.strip()))
    return tuple(pairs)


def flat_fields(model: type, sections: Mapping[str, type]) -> dict[str, object]:
    """Flat (dashed) key -> pydantic field of a config whose ``sections`` (nested pydantic
    dataclasses: loss, optimizer, data source) keep their keys flat beside the others, in
    declaration order. What the CLI generates its flags from."""
    out: dict[str, object] = {}
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        fields = sections[name].__pydantic_fields__ if name in sections else {name: info}
        out.update({key.replace("_", "-"): field for key, field in fields.items()})
    return out
