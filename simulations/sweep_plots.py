"""The plot of a sweep: deployed accuracy per tier against the swept setting, every arm.

One panel per tier (lowest mode first), one line per arm through the sweep's points with
± 1 std error bars over seeds; colours as in the comparisons' plots, FedQDNN drawn thicker. A
panel spans the top :data:`ZOOM` of its accuracies, so that arms a point apart stay apart; an
arm's point far below (e.g. a quantized FP32 model on a 2-bit tier) is written out instead.
"""

from __future__ import annotations

import math
import statistics

from matplotlib.ticker import MaxNLocator

from fedqdnn.plotting import categorical_styles, percent_axis
from fedqdnn.schema import Sweep
from simulations.compare_plots import DEPLOYMENTS, HIGHLIGHT, panel_grid

AXIS_LABELS = {
    "alpha": "Dirichlet α over labels (left: stronger label skew)",
    "tiers": "fleet mix (share of 2-bit / 4-bit / FP32 devices)",
}
TITLES = {"alpha": "label skew (Dirichlet α)", "tiers": "fleet mix"}
ZOOM = 0.25  # a panel shows this much below its best mean; arms further down are named


def tier_bits(sweep: Sweep) -> dict[str, int]:
    """Each tier's usual deployed mode, tiers lowest mode first."""
    cells = sweep.cells_of(sweep.field)
    usual = {
        t: statistics.mode(c.bits for c in cells if c.tier == t)
        for t in dict.fromkeys(c.tier for c in cells)
    }
    return dict(sorted(usual.items(), key=lambda kv: kv[1]))


def _coinciding(lines: dict[str, list[float | None]]) -> list[str]:
    """Arms whose values are the same at every point, as ``"a = b"``."""
    groups: dict[tuple, list[str]] = {}
    for name, values in lines.items():
        if any(v is not None for v in values):
            groups.setdefault(tuple(values), []).append(name)
    return [" = ".join(names) for names in groups.values() if len(names) > 1]


def draw_sweep(sweep: Sweep):
    """Deployed accuracy per tier against the sweep's points, a line per arm."""
    cells = sweep.cells_of(sweep.field)
    arms = list(dict.fromkeys(c.arm for c in cells))
    styles = categorical_styles(arms)
    points = list(sweep.points)
    cell = {(c.point, c.arm, c.tier): c for c in cells}
    tiers = tier_bits(sweep)
    fig, axes = panel_grid(len(tiers), 3.6, 3.2, 2.4)
    for ax, (tier, bits) in zip(axes, tiers.items(), strict=True):
        here = {(p, n): c.mean for p in points for n in arms if (c := cell.get((p, n, tier)))}
        top = max(here.values())
        floor = max(0.0, math.floor((top - ZOOM) * 20) / 20)
        below = [  # far below the others: named, so the close ones stay readable
            f"{n} {100 * m:.0f}% at {sweep.points[p]}" for (p, n), m in here.items() if m < floor
        ]
        for name in arms:
            found = [cell.get((p, name, tier)) for p in points]
            ax.errorbar(
                range(len(points)),
                [c.mean if c else math.nan for c in found],
                yerr=[(c.std or 0.0) if c else 0.0 for c in found],
                color=styles[name].color,
                ls=styles[name].linestyle,
                lw=2.4 if name == HIGHLIGHT else 1.3,
                marker="o",
                ms=4 if name == HIGHLIGHT else 3,
                capsize=2,
                label=name,
                gid=name,
                zorder=3 if name == HIGHLIGHT else 2,
            )
        same = _coinciding({n: [here.get((p, n)) for p in points] for n in arms})
        if same:  # one line hides the other (per-tier's FP32 model is fp32-exclusive's)
            ax.text(0.98, 0.02, "identical:\n" + "\n".join(same), transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7, color="0.3")  # fmt: skip
        if below:
            ax.text(0.02, 0.02, "below the axis:\n" + "\n".join(below), transform=ax.transAxes,
                    fontsize=7, color="0.3", va="bottom")  # fmt: skip
        ax.set_ylim(floor, min(1.0, top + 0.02))
        ax.set_title(f"{tier} ({bits}-bit)", fontsize=10)
        ax.set_xticks(range(len(points)), [sweep.points[p] for p in points], fontsize=8)
        ax.set_xlim(-0.3, len(points) - 0.7)
        ax.set_xlabel(AXIS_LABELS.get(sweep.kind, sweep.kind), fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 5, 10]))
        percent_axis(ax.yaxis)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("deployed device accuracy (local test)")
    handles, labels = axes[0].get_legend_handles_labels()
    seeds = len(sweep.seeds)
    fig.legend(
        handles,
        labels,
        fontsize=8,
        title=f"mean of {seeds} seeds, bars ± 1 std" if seeds > 1 else "one seed",
        title_fontsize=8,
        loc="outside right upper",
    )
    fig.suptitle(
        f"Deployed accuracy per tier against {TITLES.get(sweep.kind, sweep.kind)}: "
        f"{DEPLOYMENTS.get(sweep.field, sweep.field)}, in %"
    )
    return fig
