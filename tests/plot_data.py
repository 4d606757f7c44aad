"""Hand-built runs and comparisons of any fleet size, for the plot tests (no training).

A run goes through the real ``build_results`` (so the plots read exactly what a run writes);
a comparison follows the schema ``simulations.compare.run_comparison`` writes. Accuracies rise
as ``top * (1 - exp(-round / tau))`` per tier, with seeded per-device noise.
"""

from __future__ import annotations

import math

import numpy as np

from fedqdnn.config import FederatedConfig
from fedqdnn.federated.checkpoint import RunHistory
from fedqdnn.federated.report import build_results
from fedqdnn.hardware import assign_profiles
from fedqdnn.schema import (
    ArmRow,
    ClientRow,
    Comparison,
    Curve,
    DeviceAccuracy,
    EvaluationRow,
    RoundRecord,
    RunResults,
)

TIERS = {"mcu-int2": (2, 0.85, 6.0, 18.0), "phone-npu-int4": (4, 0.9, 5.0, 8.0),
         "cpu-fp32": (32, 0.95, 4.0, 3.0)}  # fmt: skip  # bits, top accuracy, tau, sim seconds
TEST_EXAMPLES = 40


def _level(tier: str, rnd: int) -> float:
    _, top, tau, _ = TIERS[tier]
    return top * (1 - math.exp(-rnd / tau)) + 0.1 * math.exp(-rnd / tau)


def results_at(devices: int, rounds: int = 30, per_round: int | None = None) -> RunResults:
    """results.json of a made-up run: ``per_round`` devices sampled per round (all by default),
    evaluation every 2 rounds, final window of 3, deadline 20 s (MCU stragglers sometimes)."""
    cfg = FederatedConfig(
        num_clients=devices,
        rounds=rounds,
        evaluate_every=2,
        final_average=3,
        target_accuracy=0.8,
        deadline_seconds=20.0,
    )
    tiers = assign_profiles(devices, cfg.tiers, cfg.seed)
    rng = np.random.default_rng(1)
    offset = rng.normal(0, 0.04, devices)
    history, records = RunHistory(), {}
    history.evaluate_metrics_serverapp[0] = {f"accuracy-bits{b}": 0.1 for b in cfg.bits}
    for rnd in range(1, rounds + 1):
        sampled = sorted(rng.choice(devices, per_round or devices, replace=False).tolist())
        record = RoundRecord()
        for pid in sampled:
            seconds = TIERS[tiers[pid]][3] * rng.uniform(0.7, 1.0)
            row = {"partition_id": pid, "tier": tiers[pid], "num_examples": 10, "bytes_down": 0}
            if rng.random() < 0.03 and tiers[pid] == "mcu-int2":
                record.dropped.append(ClientRow(**row, status="straggler"))
            else:
                record.train.append(ClientRow(**row, status="trained", sim_seconds=seconds))
        if rnd % 2 == 0 or rnd == rounds:
            for pid in sampled:
                acc = np.clip(_level(tiers[pid], rnd) + offset[pid], 0, 1)
                acc = round(acc * TEST_EXAMPLES) / TEST_EXAMPLES
                record.evaluation.append(
                    EvaluationRow(partition_id=pid, tier=tiers[pid], bits=TIERS[tiers[pid]][0],
                                  accuracy=acc, num_examples=TEST_EXAMPLES, loss=1 - acc)
                )  # fmt: skip
            by_tier = {t: [e.accuracy for e in record.evaluation if e.tier == t] for t in TIERS}
            history.evaluate_metrics_clientapp[rnd] = {
                f"accuracy-{t}": float(np.mean(a)) for t, a in by_tier.items() if a
            }
            history.evaluate_metrics_serverapp[rnd] = {
                f"accuracy-bits{bits}": _level(t, rnd) + 0.02 for t, (bits, *_) in TIERS.items()
            }
        records[rnd] = record
    return build_results(cfg, records, history, wall_seconds=1.0)


def comparison_at(arms: int, devices: int, seeds: int = 3, rounds: int = 30) -> Comparison:
    """comparison.json of made-up arms ``s0, s1, ...`` (``s0`` one run per tier, like
    ``per-tier``), each a little worse than the one before, over ``seeds`` seeds."""
    names = [f"s{i}" for i in range(arms)]
    rng = np.random.default_rng(2)
    evaluated = [r for r in range(1, rounds + 1) if r % 2 == 0 or r == rounds]
    rows, curves, per_device = [], {}, {}
    for name, seed in ((n, s) for s in range(seeds) for n in names):
        penalty = 0.01 * int(name[1:])
        key = f"{name}/seed{seed}"
        tier_sets = [[t] for t in TIERS] if name == "s0" else [list(TIERS)]
        curves[key] = []
        for run_tiers in tier_sets:
            slowest = max(TIERS[t][3] for t in run_tiers)
            elapsed = [slowest * r * (1 + 0.05 * seed) for r in range(1, rounds + 1)]
            curves[key].append(
                Curve(
                    participants="",
                    rounds=list(range(1, rounds + 1)),
                    sim_elapsed_seconds=elapsed,
                    central_accuracy_by_bits=[{} for _ in range(rounds)],
                    accuracy_by_tier=[
                        {t: _level(t, r) - penalty + rng.normal(0, 0.01) for t in run_tiers}
                        if r in evaluated
                        else {}
                        for r in range(1, rounds + 1)
                    ],
                )
            )
        for tier, (bits, *_) in TIERS.items():
            rows.append(
                ArmRow(arm=name, seed=seed, tier=tier, bits=bits,
                       accuracy=_level(tier, rounds) - penalty + rng.normal(0, 0.01),
                       accuracy_window_average_best_mode=_level(tier, rounds) - penalty / 2,
                       rounds_to_target=None, sim_seconds_to_target=None,
                       model_bytes=1000 * bits + 7 * int(name[1:]), bytes_per_round=0,
                       sim_seconds_per_round=TIERS[tier][3])
            )  # fmt: skip
        per_device[key] = [
            DeviceAccuracy(client=d, tier=list(TIERS)[d % 3], bits=2, accuracy=0.8,
                           num_examples=TEST_EXAMPLES)
            for d in range(devices)
        ]  # fmt: skip
    return Comparison(
        rows=rows,
        curves=curves,
        per_device=per_device,
        arms={n: f"made-up arm {n}" for n in names},
        seeds=list(range(seeds)),
        config={"num-clients": devices, "target-accuracy": 0.8},
        versions={},
        wall_seconds=1.0,
    )
