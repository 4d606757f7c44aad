"""Result tables for people: one Markdown builder and one mean ± std cell for every report."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table: ``header`` then one line per row (cells rendered with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std_cell(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """``"mean ± std (n = k)"`` of ``values`` times ``scale``; one value is shown as itself
    with ``(n = 1)``, never as "± 0.0", so a single seed does not pass for several; "–" for
    none."""
    if not values:
        return "–"
    scaled = [scale * v for v in values]
    if len(scaled) == 1:
        return f"{scaled[0]:.{digits}f} (n = 1)"
    sd = statistics.stdev(scaled)
    return f"{statistics.mean(scaled):.{digits}f} ± {sd:.{digits}f} (n = {len(scaled)})"


def mean_cell(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """Mean of ``values`` times ``scale`` ("–" for none)."""
    return f"{scale * statistics.mean(values):.{digits}f}" if values else "–"
