"""Convergence summaries of a run's history: pure functions on per-round numbers.

A federated curve is noisy under partial participation and label skew, so the final accuracy is
the mean over the last evaluations (``final-average``), not one round; how fast a method gets
there is the first evaluated round (and simulated time) at which it reaches a target.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence


def window_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that exist (None where nothing was measured)."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def largest_drop(values: Sequence[float]) -> float:
    """How far the worst of ``values`` falls below their mean (0 for one value): a curve's
    swing over a window, the figure a user who deploys at an unlucky round would see."""
    if not values:
        raise ValueError("largest_drop needs at least one value")
    return statistics.fmean(values) - min(values)


def mean_by_key(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-key mean over ``rows`` (a key missing from a row is not counted there)."""
    keys = dict.fromkeys(k for row in rows for k in row)
    return {k: statistics.fmean(row[k] for row in rows if k in row) for k in keys}


def first_reaching(points: Sequence[tuple[float, float | None]], target: float) -> float | None:
    """The first x of (x, value) points whose value is >= ``target``; None if never."""
    for x, value in points:
        if value is not None and value >= target:
            return x
    return None


def simulated_round_seconds(trained: Sequence[float], stragglers: int, deadline: float) -> float:
    """Simulated duration of a synchronous round: the slowest trained device, or the deadline
    when a straggler made the server wait for it (a round with a deadline never exceeds it)."""
    slowest = max(trained, default=0.0)
    if deadline > 0:
        return deadline if stragglers else min(slowest, deadline)
    return slowest
