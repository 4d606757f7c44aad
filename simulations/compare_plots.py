"""Plots of a comparison: per-tier accuracy bars, accuracy per round, accuracy vs size."""

from __future__ import annotations

import statistics
from pathlib import Path


def plot_comparison(out: Path, result: dict) -> list[Path]:
    """Draw the three comparison plots into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, names = result["rows"], list(result["strategies"])
    tiers = list(dict.fromkeys(r["tier"] for r in rows))
    paths = []

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(tiers) * len(names) / 3), 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        means, sds = [], []
        for tier in tiers:
            accs = [r["accuracy"] for r in rows if r["strategy"] == name and r["tier"] == tier]
            means.append(statistics.mean(accs) if accs else 0)
            sds.append(statistics.stdev(accs) if len(accs) > 1 else 0)
        ax.bar(
            [t + i * width for t in range(len(tiers))],
            means,
            width,
            yerr=sds,
            capsize=2,
            label=name,
        )
    ax.set_xticks([t + 0.4 - width / 2 for t in range(len(tiers))], tiers)
    lows = [r["accuracy"] for r in rows]
    ax.set(
        ylabel="device accuracy (local test)",
        ylim=(max(0, min(lows) - 0.1), 1),
        title="Per-tier accuracy (mean ± std over seeds)",
    )
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out / "per_tier_accuracy.png", plt))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, runs in result["curves"].items():
        if not key.startswith("fedqdnn/"):
            continue
        for run in runs:
            history = run["central_accuracy_by_bits"]
            for bits in sorted({b for h in history for b in h}, key=int):
                ax.plot(
                    range(1, len(history) + 1),
                    [h[bits] for h in history],
                    label=f"{bits}-bit, {key.split('/')[1]}",
                    lw=1,
                )
    ax.set(
        xlabel="round",
        ylabel="central test accuracy",
        title="FedQDNN: accuracy per round per bit mode",
    )
    ax.legend(fontsize=6, ncol=2)
    paths.append(_save(fig, out / "accuracy_per_round.png", plt))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in names:
        points = {}
        for r in rows:
            if r["strategy"] == name:
                points.setdefault((r["model_bytes"], r["tier"]), []).append(r["accuracy"])
        xs = [k[0] / 1024 for k in points]
        ax.scatter(xs, [statistics.mean(v) for v in points.values()], label=name, s=18)
    ax.set(
        xscale="log",
        xlabel="deployed model size (KiB, packed)",
        ylabel="device accuracy",
        title="Accuracy against model size",
    )
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "accuracy_vs_size.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    """Save atomically: a plot is either the old one or the complete new one."""
    fig.tight_layout()
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
