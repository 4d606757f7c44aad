"""Plots of one federated run, drawn from results.json; readable at 9 devices and at 1,000.

- ``device_accuracy_by_tier.png``: the distribution of device accuracy per tier (box and one
  dot per device) over the final window; a fixed size whatever the fleet size.
- ``accuracy_per_round.png`` / ``accuracy_vs_sim_time.png``: central accuracy per bit mode and
  device accuracy per tier at the evaluated rounds only, against the round or the simulated
  wall clock; the target accuracy and where each curve first reached it.
- ``sim_time_per_round.png``: simulated client time per tier, the round's duration, stragglers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedqdnn.plotting import (
    TARGET_COLOR,
    Style,
    categorical_styles,
    mark_target,
    marker_for,
    ordered_styles,
    percent_axis,
    pyplot,
    round_axis,
    save,
    time_unit,
)
from fedqdnn.schema import (
    DEVICE_PLOT,
    ROUND_PLOT,
    SIM_TIME_PLOT,
    TIME_PLOT,
    RoundResult,
    RunResults,
)

JITTER_SEED = 0  # the dots' horizontal spread: the same picture on every redraw


# ---------------------------------------------------------------- series and styles


def tier_bits(results: RunResults) -> dict[str, str]:
    """Each tier's evaluated mode(s) as text ("2-bit"), from the per-device rows."""
    bits: dict[str, set[int]] = {}
    for d in results.per_device:
        bits.setdefault(d.tier, set()).add(d.bits)
    return {t: "/".join(map(str, sorted(b))) + "-bit" for t, b in bits.items()}


def tier_styles(results: RunResults) -> dict[str, Style]:
    """One colour per tier for every plot of the run: low-bit tiers first, then by name."""
    history = results.history
    names = {d.tier for d in results.per_device}
    names |= {t for h in history for t in h.accuracy_by_tier}
    names |= {c.tier for h in history for c in h.clients + h.dropped}
    low_bits: dict[str, int] = {}
    for d in results.per_device:
        low_bits[d.tier] = min(d.bits, low_bits.get(d.tier, d.bits))
    return categorical_styles(sorted(names, key=lambda t: (low_bits.get(t, 1 << 30), t)))


def mode_styles(results: RunResults) -> dict[str, Style]:
    """One colour per bit mode, low to high on a sequential map."""
    modes = {b for h in results.history for b in h.central_accuracy_by_bits}
    return ordered_styles(sorted(modes, key=int))


def evaluated_series(history: list[RoundResult], field: str, key: str, x: str) -> tuple[list, list]:
    """(x, accuracy) at the rounds where ``key`` was evaluated (no gaps, no None)."""
    points = [
        (getattr(h, x), getattr(h, field)[key])
        for h in history
        if getattr(h, field).get(key) is not None
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _with_start(results: RunResults, key: str, xs: list, ys: list) -> tuple[list, list]:
    """Prepend the untrained model's central accuracy at round 0 / time 0 when recorded."""
    start = results.initial_accuracy_by_bits.get(key)
    return ([0, *xs], [start, *ys]) if start is not None else (xs, ys)


# ---------------------------------------------------------------- the plots


def plot_results(out: Path, results: RunResults) -> list[Path]:
    """Draw the plots of a run into ``out``; returns their paths. A run without client records
    (Flower's own FedAvg keeps none) has only the accuracy per round."""
    paths = []
    if results.per_device:
        paths.append(save(draw_device_accuracy(results), out / DEVICE_PLOT))
    paths.append(save(draw_accuracy(results, by_time=False), out / ROUND_PLOT))
    if any(h.clients for h in results.history):  # no client records: no simulated time
        paths.append(save(draw_accuracy(results, by_time=True), out / TIME_PLOT))
        paths.append(save(draw_sim_time(results), out / SIM_TIME_PLOT))
    return paths


def draw_device_accuracy(results: RunResults):
    """Box (quartiles, whiskers to 1.5 IQR) and one dot per device, per tier."""
    from matplotlib.patches import Patch

    plt = pyplot()
    devices = results.per_device
    styles = tier_styles(results)
    tiers = [t for t in styles if any(d.tier == t for d in devices)]
    bits = tier_bits(results)
    rng = np.random.default_rng(JITTER_SEED)
    fig, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
    handles = []
    for i, tier in enumerate(tiers):
        color = styles[tier].color
        accs = [d.accuracy for d in devices if d.tier == tier]
        box = ax.boxplot(
            [accs],
            positions=[i],
            widths=0.6,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": color, "lw": 2},
            whiskerprops={"color": color},
            capprops={"color": color},
        )
        for patch in box["boxes"]:
            patch.set(facecolor=(*color[:3], 0.18), edgecolor=color, gid=tier)
        for line in box["whiskers"] + box["caps"] + box["medians"]:
            line.set_gid(tier)
        dots = ax.scatter(
            i + rng.uniform(-0.22, 0.22, len(accs)),
            accs,
            s=max(3.0, min(18.0, 600 / len(accs))),
            color=color,
            alpha=max(0.25, min(0.9, 12 / np.sqrt(len(accs)))),
            edgecolors="none",
            zorder=3,
        )
        dots.set_gid(tier)
        label = f"{tier} ({bits[tier]}, {len(accs)} device{'s' * (len(accs) != 1)})"
        handles.append(Patch(facecolor=(*color[:3], 0.18), edgecolor=color, label=label))
    handles.append(mark_target(ax, results.convergence.target_accuracy))
    ax.set_xticks(range(len(tiers)), [f"{t}\n{bits[t]}" for t in tiers])
    if len(tiers) > 4:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    percent_axis(ax.yaxis)
    window = results.final.window_rounds
    rounds = f"round {window[0]}" if len(window) == 1 else f"rounds {window[0]}–{window[-1]}"
    ax.set(
        ylabel="accuracy on the device's local test split",
        title=f"Device accuracy per tier: {len(devices)} devices evaluated in the final window "
        f"({rounds})",
        xlim=(-0.6, len(tiers) - 0.4),
    )
    fig.legend(
        handles=handles,
        fontsize=8,
        title="box: quartiles, median\ndots: one per device",
        title_fontsize=8,
        loc="outside right upper",
    )
    return fig


def draw_accuracy(results: RunResults, by_time: bool):
    """Central accuracy per bit mode (left) and device accuracy per tier (right), at the
    evaluated rounds, against the round or the simulated wall clock; the target marked and
    each curve's first crossing of it as a star (its round / time in the legend)."""
    plt = pyplot()
    history = results.history
    conv = results.convergence
    x = "sim_elapsed_seconds" if by_time else "round"
    scale, unit = time_unit(max(h.sim_elapsed_seconds for h in history)) if by_time else (1, "")
    panels = [("central_accuracy_by_bits", mode_styles(results), conv.by_bits)]
    if any(h.accuracy_by_tier for h in history):
        panels.append(("accuracy_by_tier", tier_styles(results), conv.by_tier))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(11, 4.2),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    bits = tier_bits(results)
    for ax, (field, styles, reached) in zip(axes[0], panels, strict=True):
        for key, style in styles.items():
            xs, ys = evaluated_series(history, field, key, x)
            if not xs:
                continue
            if field == "central_accuracy_by_bits":
                series = name = f"{key}-bit"
                xs, ys = _with_start(results, key, xs, ys)
            else:
                series, name = key, f"{key} ({bits[key]})" if key in bits else key
            mark = reached.get(key)
            first = None if mark is None else (mark.sim_seconds if by_time else mark.round)
            where = _reached_text(first, by_time, scale, unit)
            ax.plot(
                np.divide(xs, scale),
                ys,
                color=style.color,
                ls=style.linestyle,
                marker=marker_for(len(xs)),
                ms=3,
                label=f"{name}: {where}",
                gid=series,
            )
            if first in xs:
                ax.plot(
                    first / scale,
                    ys[xs.index(first)],
                    marker="*",
                    ms=11,
                    color=style.color,
                    mec="black",
                    mew=0.6,
                    ls="none",
                    gid=series,
                    zorder=4,
                )
        mark_target(ax, conv.target_accuracy)
        percent_axis(ax.yaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        if by_time:
            ax.set_xlabel(f"simulated time ({unit})")
        else:
            round_axis(ax)
    axes[0][0].set(ylabel="accuracy", title="Central test set, per bit mode")
    if len(panels) > 1:
        axes[0][1].set_title("Devices evaluated that round, per tier (local test)")
    evaluated = sum(bool(h.central_accuracy_by_bits or h.accuracy_by_tier) for h in history)
    against = "simulated wall-clock time" if by_time else "round"
    fig.suptitle(
        f"Accuracy against {against} at the {evaluated} evaluated rounds of {len(history)}; "
        "★ first reached the target"
    )
    return fig


def _reached_text(first: float | None, by_time: bool, scale: float, unit: str) -> str:
    if first is None:
        return "target not reached"
    return f"target at {first / scale:.3g} {unit}" if by_time else f"target at round {first:.0f}"


def draw_sim_time(results: RunResults):
    """Mean simulated client time per tier per round, the round's simulated duration (slowest
    trained device, or the deadline when a straggler held the round) and stragglers (x)."""
    plt = pyplot()
    history = results.history
    scale, unit = time_unit(max(h.sim_round_seconds for h in history))
    fig, ax = plt.subplots(figsize=(11, 4.2), layout="constrained")
    marker = marker_for(len(history))
    for tier, style in tier_styles(results).items():
        rounds, seconds = [], []
        for h in history:
            times = [c.sim_seconds for c in h.clients if c.tier == tier]
            if times:
                rounds.append(h.round)
                seconds.append(sum(times) / len(times) / scale)
        stragglers = [
            h.round
            for h in history
            if any(d.tier == tier and d.status == "straggler" for d in h.dropped)
        ]
        label = tier + (f" ({len(stragglers)} rounds with stragglers: x)" if stragglers else "")
        ax.plot(rounds, seconds, color=style.color, marker=marker, ms=3, label=label, gid=tier)
        ax.scatter(
            stragglers,
            [0] * len(stragglers),
            marker="x",
            color=style.color,
            gid=tier,
            clip_on=False,
        )
    ax.plot(
        [h.round for h in history],
        [h.sim_round_seconds / scale for h in history],
        color="black",
        ls=":",
        lw=1.5,
        zorder=3,
        label="round duration (slowest trained\ndevice, or the deadline if one straggled)",
    )
    deadline = history[0].deadline_seconds
    if deadline:
        ax.axhline(deadline / scale, ls="--", color=TARGET_COLOR, lw=1, label="deadline")
    round_axis(ax)
    ax.set(
        ylabel=f"simulated time per round ({unit})",
        title="Simulated client time per round: mean over the tier's trained devices",
        ylim=(0, None),
    )
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper")
    return fig
