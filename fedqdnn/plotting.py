"""The look every plot shares, so that a figure reads the same at 9 devices and at 1,000.

One style (colour, line style) per series, used by every panel and by the legend that names it;
accuracy in percent; simulated time in a unit a person reads (s, min, h); the target accuracy
as one dashed line; fixed figure sizes (a plot summarises a fleet, it does not draw one mark
per device along an axis).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DPI = 120
MAX_MARKED_POINTS = 40  # more points than this per line: a plain line, no markers
TARGET_COLOR = "0.35"


@dataclass(frozen=True)
class Style:
    """How one series (a tier, a bit mode, a strategy) is drawn wherever it appears."""

    color: tuple[float, float, float, float]
    linestyle: str = "-"


def pyplot():
    """matplotlib.pyplot on the file-only backend (runs on servers with no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def categorical_styles(keys: Iterable[str]) -> dict[str, Style]:
    """A distinct style per key, in order: tab10 for up to 10 keys; beyond that the 10 dark
    tab20 colours solid, then their light partners dashed (dotted past 20 keys)."""
    plt = pyplot()
    keys = list(dict.fromkeys(keys))
    if len(keys) <= 10:
        return {k: Style(plt.cm.tab10(i)) for i, k in enumerate(keys)}
    return {
        k: Style(plt.cm.tab20(2 * (i % 10) + (i >= 10)), ("-", "--", ":")[min(i // 10, 2)])
        for i, k in enumerate(keys)
    }


def ordered_styles(keys: Sequence[str]) -> dict[str, Style]:
    """Styles for ordered keys (bit modes, low to high): shades of one sequential map."""
    plt = pyplot()
    n = len(keys)
    return {k: Style(plt.cm.viridis(0.05 + 0.8 * i / max(1, n - 1))) for i, k in enumerate(keys)}


def marker_for(points: int) -> str | None:
    """A round marker when a line has few enough points to show each one."""
    return "o" if points <= MAX_MARKED_POINTS else None


def time_unit(max_seconds: float) -> tuple[float, str]:
    """(seconds per unit, unit name) so that the axis shows small, readable numbers."""
    if max_seconds >= 2 * 3600:
        return 3600.0, "h"
    if max_seconds >= 120:
        return 60.0, "min"
    return 1.0, "s"


def percent_axis(axis) -> None:
    """Show fractions 0..1 as percentages with no needless decimals (80%, 82.5%)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(percent_text))


def round_axis(ax) -> None:
    """An x axis of federated rounds: whole numbers only."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def percent_text(fraction: float, _position: object = None) -> str:
    """0.825 -> "82.5%", 0.8 -> "80%"."""
    return f"{100 * fraction:.1f}".rstrip("0").rstrip(".") + "%"


def mark_target(ax, target: float):
    """The target accuracy as one dashed horizontal line, labelled for the legend."""
    return ax.axhline(
        target, ls="--", lw=1, color=TARGET_COLOR, label=f"target {percent_text(target)}", zorder=1
    )


def save(fig, path: Path) -> Path:
    """Write the figure as PNG and free it; atomically (a plot is the old one or the whole
    new one, never half of it)."""
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=DPI)
    pyplot().close(fig)
    tmp.replace(path)
    return path
