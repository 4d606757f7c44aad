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
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.process_tree import run_child  # noqa: E402
from fedqdnn.files import write_json  # noqa: E402
from fedqdnn.provenance import versions  # noqa: E402


def _bare_phases(cfg) -> dict[str, float]:
    """Seconds per round of each phase, the rounds' work done here sequentially."""
    import numpy as np
    import torch

    from fedqdnn.device import (
        device_for,
        evaluate_locally,
        evaluation_mode,
        load_state,
        plan_round,
        train_round,
    )
    from fedqdnn.federated.checkpoint import RunHistory, save_checkpoint
    from fedqdnn.fleet import initial_model, run_data
    from fedqdnn.round_plan import evaluation_rounds, select_partitions
    from fedqdnn.training import evaluate
    from strategies.aggregation import ClientUpdate, aggregate, validate_update

    torch.set_num_threads(1)
    data = run_data(cfg)
    model = initial_model(cfg)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    bytes_down = int(sum(v.nbytes for v in state.values()))
    evaluated = set(evaluation_rounds(cfg.rounds, cfg.evaluate_every))
    phases = dict.fromkeys(
        ("local_training", "device_evaluation", "aggregation", "central_evaluation",
         "checkpoint"), 0.0)  # fmt: skip
    devices = sorted(cfg.participant_ids)
    for pid in devices:  # build every device once, as warm workers have
        device_for(cfg, pid)
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(1, cfg.rounds + 1):
            torch_state = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
            updates = []
            started = time.perf_counter()
            for pid in select_partitions(devices, cfg.fraction_train, cfg.seed, rnd, 0):
                device = device_for(cfg, pid)
                plan = plan_round(cfg, device, rnd, bytes_down)
                load_state(device.model, torch_state)
                upload = train_round(cfg, device, plan, rnd)
                arrays = {k: np.array(v, copy=True) for k, v in upload.state.items()}
                updates.append(ClientUpdate(arrays, len(device.y_train), plan.modes))
            phases["local_training"] += time.perf_counter() - started
            started = time.perf_counter()
            valid = [u for u in updates if validate_update(state, u, cfg.bits) is None]
            state = {k: np.require(v, requirements="C") for k, v in aggregate(state, valid).items()}
            phases["aggregation"] += time.perf_counter() - started
            if rnd in evaluated:
                torch_state = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
                started = time.perf_counter()
                for pid in select_partitions(devices, cfg.fraction_evaluate, cfg.seed, rnd, 1):
                    device = device_for(cfg, pid)
                    load_state(device.model, torch_state)
                    evaluate_locally(device, evaluation_mode(cfg, device))
                phases["device_evaluation"] += time.perf_counter() - started
                started = time.perf_counter()
                load_state(model, torch_state)
                for bits in cfg.bits:
                    evaluate(model, data.x_test, data.y_test, bits)
                phases["central_evaluation"] += time.perf_counter() - started
            if cfg.checkpoint_every and rnd % cfg.checkpoint_every == 0:
                started = time.perf_counter()
                save_checkpoint(Path(tmp), rnd, state, RunHistory(), {}, {}, cfg.to_flat())
                phases["checkpoint"] += time.perf_counter() - started
    return {k: round(v / cfg.rounds, 4) for k, v in phases.items()}


def _flower_round(cfg, cpus: float, work: Path, name: str) -> float | None:
    spec = {"kind": "flower", "config": cfg.to_flat(), "cpus_per_client": cpus}
    record = run_child(name, {**spec, "out_dir": str(work / name)}, work)
    stamps = {int(k): v for k, v in record.get("round_stamps", {}).items()}
    if len(stamps) < 3:
        return None
    # rounds 2..R: the first round also builds data, partitions and models in the workers
    return statistics.fmean(stamps[r] - stamps[r - 1] for r in sorted(stamps)[2:])


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
            "flower_round_seconds_*": "mean seconds per round of the real simulation over "
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
