"""Every benchmark in one JSON: step-time ratios and simulation overhead, with targets.

Headline keys: ``steady_round_ratio_vs_bare``, ``startup_seconds``,
``peak_rss_ratio_1000_vs_10_clients``, ``two_actor_speedup``, ``startup_seconds_1000_clients``
(benchmarks/sim_overhead.py), ``quant_step_ratio``, ``joint_step_ratio``
(benchmarks/step_time.py); ``targets``, ``meets_target``, the full per-benchmark ``details``
(with the quantized step's floor, benchmarks/quant_floor.py) and ``versions``.
Usage: python benchmarks/run_all.py [--quick] --out benchmarks/results/all.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quant_floor, sim_overhead, step_time  # noqa: E402
from fedqdnn.files import write_json  # noqa: E402
from fedqdnn.provenance import versions  # noqa: E402

HEADLINE = (
    "steady_round_ratio_vs_bare",
    "startup_seconds",
    "peak_rss_ratio_1000_vs_10_clients",
    "two_actor_speedup",
    "startup_seconds_1000_clients",
    "quant_step_ratio",
    "joint_step_ratio",
)
STEP_TARGETS = {"quant_step_ratio": {"max": 1.25}, "joint_step_ratio": {"max": 4.5}}


def run_all(out: Path, quick: bool = False) -> dict:
    """Run step_time and sim_overhead; write one JSON to ``out``; return it.

    ``quick`` uses fewer rounds and steps (about half the time).
    """
    started = time.perf_counter()
    steps = step_time.run(None, steps=10, repeats=3) if quick else step_time.run(None)
    floor = quant_floor.run(None, steps=10, repeats=3) if quick else quant_floor.run(None)
    sim = sim_overhead.run(None, quick=quick)
    targets = {**sim["targets"], **STEP_TARGETS}
    result: dict = {k: sim.get(k, steps.get(k)) for k in HEADLINE}
    for name, target in STEP_TARGETS.items():
        value = steps[name]
        sim["meets_target"][name] = value <= target["max"]
    result.update(
        {
            "targets": targets,
            "meets_target": sim["meets_target"],
            "problems": sim["problems"],
            "definitions": sim["definitions"],
            "details": {
                "step_time": {k: v for k, v in steps.items() if k != "versions"},
                "quant_floor": {k: v for k, v in floor.items() if k != "versions"},
                "sim_overhead": sim["details"],
            },
            "quick": quick,
            "seconds": round(time.perf_counter() - started, 1),
            "date": time.strftime("%Y-%m-%d"),
            "versions": versions(),
        }
    )
    write_json(Path(out), result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/all.json"))
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    args = parser.parse_args()
    res = run_all(args.out, args.quick)
    print(json.dumps({k: res[k] for k in (*HEADLINE, "meets_target")}, indent=2))
