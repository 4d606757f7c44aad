"""Where a fleet-100 round's time goes: local training, device evaluation, aggregation,
central evaluation, checkpoint, and the rest (Flower + Ray), measured side by side.

The bare side runs the work of ``rounds`` rounds of a scenario in this process with one torch
thread, timing each phase with the same code the apps run (:mod:`fedqdnn.device`,
:mod:`strategies.aggregation`, the server's central evaluation and checkpoint); the Flower side
is the real simulation of the same rounds with one actor (clients one after another, as the
bare side) and with two. The difference of the one-actor round and the bare round is what
Flower and Ray cost. Writes JSON (seconds per round, amortized over evaluation cadence).

Usage: python benchmarks/round_breakdown.py [--scenario fleet-100] [--rounds 10] --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.process_tree import run_child  # noqa: E402
from benchmarks.workloads import bare_rounds, steady_round_seconds  # noqa: E402
from fedqdnn.files import write_json  # noqa: E402
from fedqdnn.provenance import versions  # noqa: E402


def _bare_phases(cfg) -> dict[str, float]:
    """Seconds per round of each phase, the rounds' work done here sequentially, one thread."""
    from fedqdnn.device import device_for

    for pid in sorted(cfg.participant_ids):  # build every device once, as warm workers have
        device_for(cfg, pid)
    phases = bare_rounds(cfg, client_threads=1, checkpoints=True)["phase_seconds"]
    return {k: round(v / cfg.rounds, 4) for k, v in phases.items()}


def _flower_round(cfg, cpus: float, work: Path, name: str) -> float | None:
    spec = {"kind": "flower", "config": cfg.to_flat(), "cpus_per_client": cpus}
    return steady_round_seconds(run_child(name, {**spec, "out_dir": str(work / name)}, work))


def run(scenario: str, rounds: int, out: Path | None) -> dict:
    """Bare phases and the Flower round (one and two actors) for ``rounds`` of ``scenario``."""
    from simulations.scenarios import load_scenario

    cfg = load_scenario(scenario).replace(rounds=rounds)
    started = time.perf_counter()
    phases = _bare_phases(cfg)
    with tempfile.TemporaryDirectory(prefix="fedqdnn-breakdown-") as tmp:
        one = _flower_round(cfg, 2, Path(tmp), "one_actor")
        two = _flower_round(cfg, 1, Path(tmp), "two_actors")
    bare = sum(phases.values())
    result = {
        "scenario": scenario,
        "rounds": rounds,
        "bare_seconds_per_round": phases,
        "bare_round_seconds": round(bare, 3),
        "flower_round_seconds_one_actor": round(one, 3) if one else None,
        "flower_round_seconds_two_actors": round(two, 3) if two else None,
        "flower_overhead_seconds_per_round": round(one - bare, 3) if one else None,
        "definitions": {
            "bare_seconds_per_round": "each phase's seconds over all rounds / rounds, one "
            "thread, this process (device evaluation and central evaluation only in evaluated "
            "rounds, checkpoints every checkpoint-every rounds: amortized)",
            "flower_round_seconds_*": "median seconds per round of the real simulation over "
            "rounds 2..R (server hook timestamps)",
        },
        "seconds": round(time.perf_counter() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
        "versions": versions(),
    }
    if out is not None:
        write_json(out, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="fleet-100")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/round_breakdown.json"))
    args = parser.parse_args()
    print(json.dumps(run(args.scenario, args.rounds, args.out), indent=2))
