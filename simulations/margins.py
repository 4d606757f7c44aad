"""FedQDNN's margin over the best deployable baseline, per tier, paired by seed.

Issue 20's claim — one Quantizable DNN serves every tier at least as well as anything a user
could deploy instead — is a difference of two means over a handful of seeds; whether a
0.2-pt gap is a gap or noise depends on how the per-seed differences scatter. Both arms of a
seed share the partition and the device draw, so the difference is taken seed by seed (a
paired comparison) and given a Student-t interval of its mean.

Each arm is deployed as the better (mean over seeds, per tier) of the candidate deployments —
the window average with statistics carried or pooled, each device at its best mode
(docs/results.md §6) — the same choice for the method as for every baseline.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from fedqdnn.schema import ArmRow, Comparison
from fedqdnn.tables import markdown_table
from simulations.compare_plots import DEPLOYED_FIELD
from strategies.arms import ARMS, Kind

POOLED_FIELD = "accuracy_window_average_best_mode_pooled_bn"
CANDIDATE_DEPLOYMENTS = (DEPLOYED_FIELD, POOLED_FIELD)
SHORT_NAMES = {DEPLOYED_FIELD: "carried", POOLED_FIELD: "pooled", "accuracy": "as trained"}
CONFIDENCE = 0.95


def paired_interval(
    differences: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Student-t interval of the mean of paired differences; ``None`` for fewer than two (one
    seed has no spread to judge a gap by)."""
    n = len(differences)
    if n < 2:
        return None
    mean = statistics.fmean(differences)
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    half = t * statistics.stdev(differences) / math.sqrt(n)
    return mean - half, mean + half


def verdict(interval: tuple[float, float] | None) -> str:
    """``ahead``/``behind`` when the interval excludes zero, else ``level within noise``."""
    if interval is None:
        return "one seed: no interval"
    low, high = interval
    if low > 0:
        return "ahead"
    if high < 0:
        return "behind"
    return "level within noise"


@dataclass(frozen=True)
class Deployed:
    """One arm's accuracy in one tier at its better deployment, per seed."""

    arm: str
    field: str
    by_seed: dict[int, float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.by_seed.values())


@dataclass(frozen=True)
class Margin:
    """The method against the best deployable baseline in one tier (fractions, not pt)."""

    tier: str
    method: Deployed
    rival: Deployed | None
    reference: Deployed | None

    @property
    def differences(self) -> list[float]:
        """method − rival at every seed both have, in seed order."""
        if self.rival is None:
            return []
        seeds = sorted(set(self.method.by_seed) & set(self.rival.by_seed))
        return [self.method.by_seed[s] - self.rival.by_seed[s] for s in seeds]


def best_deployment(rows: Sequence[ArmRow], arm: str, fields: Sequence[str]) -> Deployed | None:
    """``arm``'s rows of one tier at the field with the highest mean over seeds, among the
    fields every row measured (``accuracy`` where none is: a comparison written before)."""
    mine = [r for r in rows if r.arm == arm]
    if not mine:
        return None
    measured = [f for f in fields if all(getattr(r, f) is not None for r in mine)] or ["accuracy"]
    options = [Deployed(arm, f, {r.seed: getattr(r, f) for r in mine}) for f in measured]
    return max(options, key=lambda d: d.mean)


def _kind(arm: str) -> Kind | None:
    return ARMS[arm].kind if arm in ARMS else None


def tier_margins(
    result: Comparison,
    method: str = "fedqdnn",
    fields: Sequence[str] = CANDIDATE_DEPLOYMENTS,
    against: str | None = None,
) -> list[Margin]:
    """Per tier the method's margin over the deployable baseline with the best mean there, or
    over arm ``against`` (a variant against FedQDNN); and the reference, FP32 FedAvg on all
    devices, where the comparison ran it."""
    margins = []
    for tier in dict.fromkeys(r.tier for r in result.rows):
        rows = [r for r in result.rows if r.tier == tier]
        own = best_deployment(rows, method, fields)
        if own is None:
            continue
        arms = list(result.arms)
        rivals = [
            best_deployment(rows, a, fields)
            for a in arms
            if (a == against if against else _kind(a) == Kind.BASELINE)
        ]
        refs = [best_deployment(rows, a, fields) for a in arms if _kind(a) == Kind.REFERENCE]
        rival = max((d for d in rivals if d is not None), key=lambda d: d.mean, default=None)
        reference = next((d for d in refs if d is not None), None)
        margins.append(Margin(tier, own, rival, reference))
    return margins


def margins_table(result: Comparison, method: str = "fedqdnn", against: str | None = None) -> str:
    """Markdown, one row per tier (pt): the method and the best deployable baseline (or arm
    ``against``) at their better deployments, the paired margin per seed, its mean with a
    95 % t-interval, how many seeds it holds in, the verdict, and the gap to the reference."""
    rows = []
    for m in tier_margins(result, method, against=against):
        diffs = m.differences
        interval = paired_interval(diffs)
        rows.append(
            [
                m.tier,
                f"{100 * m.method.mean:.2f} ({SHORT_NAMES.get(m.method.field, m.method.field)})",
                _rival_cell(m.rival),
                " ".join(f"{100 * d:+.2f}" for d in diffs) or "–",
                f"{100 * statistics.fmean(diffs):+.2f}" if diffs else "–",
                f"{100 * interval[0]:+.2f} … {100 * interval[1]:+.2f}" if interval else "–",
                f"{sum(d >= 0 for d in diffs)} of {len(diffs)}" if diffs else "–",
                verdict(interval) if diffs else "–",
                f"{100 * (m.method.mean - m.reference.mean):+.2f}" if m.reference else "–",
            ]
        )
    header = [
        "tier",
        method,
        against or "best deployable baseline",
        "margin per seed",
        "margin (mean)",
        f"{CONFIDENCE:.0%} interval",
        "seeds ≥ 0",
        "verdict",
        "gap to reference",
    ]
    return markdown_table(header, rows)


def _rival_cell(rival: Deployed | None) -> str:
    if rival is None:
        return "–"
    return f"{rival.arm} {100 * rival.mean:.2f} ({SHORT_NAMES.get(rival.field, rival.field)})"
