"""Constrained value types shared by every config, and the one-line error they produce.

Bounds are declared once, as annotated types, and every config (federated run, centralized job,
loss, optimizer) uses them; :func:`one_line` turns a pydantic error into the single line the CLI
prints: the key, the value given and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationError

from fedqdnn.rng import SEED_LIMIT


def _no_bool(value: object) -> object:
    """Refuse true/false where a number is expected (bool is an int subclass in Python)."""
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true/false")
    return value


_Number = BeforeValidator(_no_bool)
PositiveInt = Annotated[int, _Number, Field(ge=1)]
NonNegativeInt = Annotated[int, _Number, Field(ge=0)]
Seed = Annotated[int, _Number, Field(ge=0, lt=SEED_LIMIT)]
PositiveFloat = Annotated[float, _Number, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, _Number, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, _Number, Field(ge=0, le=1, allow_inf_nan=False)]
Fraction = Annotated[float, _Number, Field(gt=0, le=1, allow_inf_nan=False)]
OpenFraction = Annotated[float, _Number, Field(gt=0, lt=1, allow_inf_nan=False)]


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
    return f"{key_of(loc)} = {first['input']!r} is not allowed: {reason}"
