"""Plots of a comparison, readable with up to ~15 arms; one colour per arm everywhere.

- ``per_tier_accuracy.png``: one panel per tier, a horizontal bar per arm (deployed
  accuracy, mean ± std over seeds), arm names on the axis, values written on the bars.
- ``accuracy_per_round.png`` / ``accuracy_vs_sim_time.png``: one panel per tier, device
  accuracy measured during training (mean line, ± std band over seeds) at the evaluated rounds,
  against the round or the simulated wall clock (the seeds' mean time at that round).
- ``accuracy_vs_size.png``: deployed accuracy against the packed model size (colour: arm,
  marker: tier).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from fedqdnn.plotting import (
    Style,
    categorical_styles,
    mark_target,
    marker_for,
    percent_axis,
    pyplot,
    round_axis,
    save,
    time_unit,
)
from fedqdnn.schema import (
    DEPLOYED_TIER_PLOT,
    ROUND_PLOT,
    SIZE_PLOT,
    TIER_PLOT,
    TIME_PLOT,
    Comparison,
    run_key,
)

HIGHLIGHT = "fedqdnn"  # the method under study: drawn thicker, on top
MAX_COLUMNS = 4
TIER_MARKERS = "osD^vP*Xph"
DODGE = 0.025  # relative sideways shift between arms' points at one model size


# ---------------------------------------------------------------- bands over seeds


@dataclass(frozen=True)
class Band:
    """An arm's device accuracy in one tier over the seeds, per evaluated round."""

    rounds: list[int]
    seconds: list[float]  # the seeds' mean simulated wall clock at that round
    mean: list[float]
    std: list[float]  # sample std over seeds (0 with one seed)


def seed_band(result: Comparison, arm: str, tier: str) -> Band | None:
    """Mean ± std over seeds at the rounds where every seed evaluated the tier (devices of the
    tier were sampled); None when no run of the arm measured the tier."""
    per_seed = []
    for seed in result.seeds:
        for run in result.curves.get(run_key(arm, seed), []):
            points = {
                r: (t, acc[tier])
                for r, t, acc in zip(
                    run.rounds, run.sim_elapsed_seconds, run.accuracy_by_tier, strict=True
                )
                if acc.get(tier) is not None
            }
            if points:
                per_seed.append(points)
                break
    if not per_seed:
        return None
    rounds = sorted(set.intersection(*(set(p) for p in per_seed)))
    accs = [[p[r][1] for p in per_seed] for r in rounds]
    return Band(
        rounds=rounds,
        seconds=[statistics.fmean(p[r][0] for p in per_seed) for r in rounds],
        mean=[statistics.fmean(a) for a in accs],
        std=[statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs],
    )


def deployed(
    result: Comparison, arm: str, tier: str, field: str = "accuracy"
) -> tuple[float, float, int, int] | None:
    """(mean, std over seeds, bits, model bytes) of an arm's deployed accuracy in a tier
    (``field``: which deployment, schema.ArmRow)."""
    rows = [r for r in result.rows if r.arm == arm and r.tier == tier]
    if not rows:
        return None
    accs = [getattr(r, field) for r in rows]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return statistics.fmean(accs), sd, rows[0].bits, rows[0].model_bytes


# ---------------------------------------------------------------- the plots

DEPLOYED_FIELD = "accuracy_window_average_best_mode"
DEPLOYMENTS = {  # every ArmRow deployment, the measured winner first (docs/results.md §6)
    DEPLOYED_FIELD: "window average, each device at its best mode",
    "accuracy": "each window model as trained",
    "accuracy_window_average": "window average",
    "accuracy_best_mode": "each window model, each device at its best mode",
    "accuracy_window_average_pooled_bn": "window average, BN statistics pooled at deployment",
    "accuracy_window_average_best_mode_pooled_bn": (
        "window average, pooled BN statistics, each device at its best mode"
    ),
}


def measured_field(result: Comparison, field: str) -> tuple[str, str]:
    """(field, what it is) for ``field`` when every row of ``result`` has it; else the as-trained
    accuracy, said so (a comparison written before the deployment existed)."""
    if any(getattr(r, field) is None for r in result.rows):
        return "accuracy", "as trained: no window average in this comparison"
    return field, DEPLOYMENTS[field]


def plot_comparison(out: Path, result: Comparison) -> list[Path]:
    """Draw the comparison plots into ``out``; returns their paths."""
    return [
        save(draw_per_tier(result), out / TIER_PLOT),
        save(draw_per_tier(result, DEPLOYED_FIELD), out / DEPLOYED_TIER_PLOT),
        save(draw_curves(result, by_time=False), out / ROUND_PLOT),
        save(draw_curves(result, by_time=True), out / TIME_PLOT),
        save(draw_size(result), out / SIZE_PLOT),
    ]


def arm_styles(result: Comparison) -> dict[str, Style]:
    """One style per arm, in the comparison's order, for every plot."""
    return categorical_styles(result.arms)


def tiers_of(result: Comparison) -> list[str]:
    """The tiers, lowest usual mode first (2-bit before 32-bit)."""
    tiers = list(dict.fromkeys(r.tier for r in result.rows))
    return sorted(tiers, key=lambda t: _usual_bits(result, t))


def same_curves(bands: dict[str, Band | None]) -> list[str]:
    """Strategies whose curves coincide in a panel (e.g. per-tier and fp32-exclusive share the
    FP32 tier's run), as ``"a = b"``: one line would hide the other."""
    groups: dict[tuple, list[str]] = {}
    for name, band in bands.items():
        if band is not None:
            groups.setdefault((tuple(band.rounds), tuple(band.mean), tuple(band.std)), []).append(
                name
            )
    return [" = ".join(names) for names in groups.values() if len(names) > 1]


def panel_grid(count: int, width: float, height: float, legend_width: float, **kwargs):
    """A grid of ``count`` panels (at most MAX_COLUMNS a row); unused cells hidden."""
    cols = min(count, MAX_COLUMNS)
    rows = math.ceil(count / cols)
    fig, axes = pyplot().subplots(
        rows,
        cols,
        figsize=(width * cols + legend_width, height * rows + 0.7),
        squeeze=False,
        layout="constrained",
        **kwargs,
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _mean_over_seeds(result: Comparison) -> str:
    count = len(result.seeds)
    return f"mean ± std over {count} seeds" if count > 1 else "one seed"


def _usual_bits(result: Comparison, tier: str) -> int:
    """The mode most arms deploy in a tier (named in the panel title)."""
    return statistics.mode(r.bits for r in result.rows if r.tier == tier)


def draw_per_tier(result: Comparison, field: str = "accuracy"):
    """Deployed accuracy per tier: a bar per arm, mean ± std over seeds, value written.
    ``field = accuracy_window_average_best_mode``: the window's models averaged, each device
    at its best mode (a comparison written before those existed: as trained, and said so)."""
    field, what = measured_field(result, field)
    names, tiers, styles = list(result.arms), tiers_of(result), arm_styles(result)
    lows = [
        d[0] - d[1]
        for t in tiers
        for n in names
        if (d := deployed(result, n, t, field)) is not None
    ]
    lo = max(0.0, math.floor((min(lows) - 0.08) * 10) / 10)
    fig, axes = panel_grid(len(tiers), 3.4, 0.9 + 0.3 * len(names), 1.6, sharex=True, sharey=True)
    for ax, tier in zip(axes, tiers, strict=True):
        usual = _usual_bits(result, tier)
        for i, name in enumerate(names):
            d = deployed(result, name, tier, field)
            if d is None:
                ax.text(lo, i, "  not run", va="center", fontsize=7, color="0.4")
                continue
            mean, sd, bits, _ = d
            style = styles[name]
            ax.barh(
                i,
                mean,
                height=0.75,
                xerr=sd,
                color=(*style.color[:3], 0.45),
                edgecolor=style.color,
                lw=2 if name == HIGHLIGHT else 1,
                ls=style.linestyle,
                error_kw={"lw": 1, "capsize": 2},
                gid=name,
            )
            spread = f" ± {100 * sd:.1f}" if len(result.seeds) > 1 else ""
            note = "" if bits == usual else f"  ({bits}-bit)"
            span = 1 - lo
            inside = mean - lo > 0.4 * span  # else the text goes right of the bar
            ax.text(
                lo + 0.01 * span if inside else min(mean + sd, 1.0) + 0.02 * span,
                i,
                f"{100 * mean:.1f}{spread}{note}",
                va="center",
                fontsize=7,
                fontweight="bold" if name == HIGHLIGHT else "normal",
            )
        ax.set_title(f"{tier} ({usual}-bit)", fontsize=10)
        ax.set_xlim(lo, 1.0)
        ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 5, 10]))
        percent_axis(ax.xaxis)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("device accuracy (local test)")
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()  # first arm on top
    fig.suptitle(
        f"Deployed accuracy per tier ({what}): {_mean_over_seeds(result)}, in %\n"
        "another mode than the tier's in brackets"
    )
    return fig


def draw_curves(result: Comparison, by_time: bool):
    """Device accuracy during training per tier: mean line and ± std band over seeds, at the
    evaluated rounds, against the round or the seeds' mean simulated time."""
    names, tiers, styles = list(result.arms), tiers_of(result), arm_styles(result)
    bands = {(n, t): seed_band(result, n, t) for n in names for t in tiers}
    drawn = [b for b in bands.values() if b is not None]
    most = max((s for b in drawn for s in b.seconds), default=0.0)
    scale, unit = time_unit(most) if by_time else (1.0, "")
    fig, axes = panel_grid(len(tiers), 4.0, 3.8, 2.0, sharex=True, sharey=True)
    handles = {}
    target = result.config.get("target-accuracy")
    for ax, tier in zip(axes, tiers, strict=True):
        for name in names:
            band = bands[(name, tier)]
            if band is None:
                continue
            style = styles[name]
            xs = [s / scale for s in band.seconds] if by_time else band.rounds
            (line,) = ax.plot(
                xs,
                band.mean,
                color=style.color,
                ls=style.linestyle,
                lw=2.2 if name == HIGHLIGHT else 1.3,
                marker=marker_for(len(xs)),
                ms=2.5,
                label=name,
                gid=name,
                zorder=3 if name == HIGHLIGHT else 2,
            )
            low = [max(0.0, m - s) for m, s in zip(band.mean, band.std, strict=True)]
            high = [min(1.0, m + s) for m, s in zip(band.mean, band.std, strict=True)]
            ax.fill_between(xs, low, high, color=style.color, alpha=0.15, lw=0, gid=name)
            handles.setdefault(name, line)
        if target is not None:
            handles.setdefault("target", mark_target(ax, float(target)))
        same = same_curves({n: bands[(n, tier)] for n in names})
        if same:
            ax.text(0.98, 0.03, "\n".join(["identical curves:", *same]), transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7, color="0.3")  # fmt: skip
        ax.set_title(f"{tier} ({_usual_bits(result, tier)}-bit)", fontsize=10)
        percent_axis(ax.yaxis)
        ax.grid(alpha=0.3)
        if by_time:
            ax.set_xlabel(f"simulated time ({unit})")
        else:
            round_axis(ax)
    axes[0].set_ylabel("device accuracy (local test)")
    fig.legend(
        handles=[handles[n] for n in [*names, "target"] if n in handles],
        fontsize=8,
        title=f"line: mean of {len(result.seeds)} seeds\nband: ± 1 std"
        if len(result.seeds) > 1
        else "one seed",
        title_fontsize=8,
        loc="outside right upper",
    )
    against = "simulated wall-clock time" if by_time else "round"
    fig.suptitle(
        f"Device accuracy during training against {against}, per tier "
        "(devices evaluated that round; evaluated rounds only)"
    )
    return fig


def draw_size(result: Comparison):
    """Deployed accuracy against the packed size of the deployed model."""
    from matplotlib.lines import Line2D

    names, tiers, styles = list(result.arms), tiers_of(result), arm_styles(result)
    markers = {t: TIER_MARKERS[i % len(TIER_MARKERS)] for i, t in enumerate(tiers)}
    fig, ax = pyplot().subplots(figsize=(9.5, 4.8), layout="constrained")
    sizes: dict[int, int] = {}
    for i, name in enumerate(names):
        dodge = 1 + DODGE * (i - (len(names) - 1) / 2)  # arms side by side at one size
        for tier in tiers:
            d = deployed(result, name, tier)
            if d is None:
                continue
            mean, sd, bits, size = d
            sizes.setdefault(bits, size)
            ax.errorbar(
                size / 1024 * dodge,
                mean,
                yerr=sd,
                color=styles[name].color,
                marker=markers[tier],
                ms=7 if name == HIGHLIGHT else 5,
                mec="black" if name == HIGHLIGHT else styles[name].color,
                capsize=2,
                ls="none",
                gid=name,
            )
    ax.set_xscale("log")
    ax.set_xticks(
        [s / 1024 for s in sizes.values()],
        [f"{s / 1024:.3g} KiB\n{b}-bit" for b, s in sizes.items()],
    )
    ax.minorticks_off()
    percent_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.set(
        xlabel="deployed model size (packed, log scale; arms spread sideways at each size)",
        ylabel="device accuracy (local test)",
        title=f"Accuracy against deployed model size ({_mean_over_seeds(result)})",
    )
    arm_legend = fig.legend(
        handles=[
            Line2D([], [], color=styles[n].color, marker="o", ls="none", label=n) for n in names
        ],
        fontsize=8,
        title="arm (colour)",
        title_fontsize=8,
        loc="outside right upper",
    )
    arm_legend.set_gid("arms")
    fig.legend(
        handles=[Line2D([], [], color="0.3", marker=markers[t], ls="none", label=t) for t in tiers],
        fontsize=8,
        title="tier (marker)",
        title_fontsize=8,
        loc="outside right lower",
    )
    return fig
