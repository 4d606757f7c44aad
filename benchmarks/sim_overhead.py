"""Cost of the simulation machinery itself: Flower + Ray against the same work in bare PyTorch.

Four figures, each measured side by side in one run:

``steady_round_ratio_vs_bare``
    Steady-state seconds per round of the real Flower + Ray simulation
    (:func:`fedqdnn.federated.simulation.simulate`) with ONE Ray actor (``cpus_per_client``
    = all CPUs, so clients run one after another), divided by the seconds per round of the
    same work done sequentially in one plain Python process (:mod:`benchmarks.workloads`):
    per client, load the global state into the model, plan and train the round with the
    device code the ClientApp runs (:mod:`fedqdnn.device`), take the upload, then
    :func:`strategies.aggregation.validate_update` + :func:`~strategies.aggregation.aggregate`,
    each client's local evaluation at its top mode and the server's evaluation of every mode
    (a Flower round does all of these). The median over rounds 2..R counts; round 1 also
    builds the data and models. Flower's per-round times come from the server's per-round hook
    (``simulate(on_round_end=...)``), called after each round's central evaluation; the
    difference of an R-round and a 1-round run is reported as a cross-check. The server's
    per-round checkpoint is off in these runs (bare writes none); its cost is a separate
    figure (full mode). Bare client work uses as many torch threads as the one-actor ClientApp
    (its CPU share).
``two_actor_speedup``
    Steady seconds per round with one actor divided by that with two actors (``cpus_per_client``
    = 1 on a 2-CPU machine), same work. Its bare-PyTorch limit on the same machine at the same
    time, ``bare_two_process_speedup`` (two bare runs at once, half the CPU share each), is
    reported next to it: on a shared machine it shows how much parallelism was there to get.
``peak_rss_ratio_1000_vs_10_clients``
    Peak memory of the whole process tree (driver, Ray's GCS/raylet and every worker: RSS
    summed over all descendants, sampled with psutil) for 1,000 virtual clients divided by that
    for 10, with 10 clients sampled per round in both (``fraction-train`` =
    ``fraction-evaluate`` = 10 / clients), one round, two actors, MNIST-1D (8,000 training
    samples: 8 per client at 1,000 clients). PSS (shared pages split between processes) is
    reported too.
``startup_seconds_1000_clients``
    In the 1,000-client run above: seconds from the simulate() call to the end of round 1
    (Ray, the SuperNodes, the actors with their data and model, the round-0 evaluation, then
    a round of 10 clients with 8 samples each: the server's round 0 does not wait for Ray, so
    the first round carries the start-up).

Every run, bare ones included, is a fresh child process with a timeout (its whole process
tree is killed on timeout). Children start their own local Ray instance (``RAY_ADDRESS=local``)
so they never join a cluster someone else started on this machine.

Usage: python benchmarks/sim_overhead.py [--quick] --out sim_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.process_tree import Child, run_child  # noqa: E402
from benchmarks.workloads import (  # noqa: E402
    memory_config,
    steady_round_seconds,
    timing_config,
)
from fedqdnn.files import write_json  # noqa: E402

TARGETS = {
    "steady_round_ratio_vs_bare": {"max": 1.2},
    "two_actor_speedup": {"min": 1.6},
    "peak_rss_ratio_1000_vs_10_clients": {"max": 1.2},
    "startup_seconds_1000_clients": {"max": 20.0},
}


def _problems(spec: dict, record: dict) -> list[str]:
    """Why a finished run did not do the intended work (empty if it did)."""
    flat = spec["config"]
    problems = []
    if record.get("rejected"):
        problems.append(f"{record['rejected']} client replies were rejected or failed")
    if spec["kind"] == "flower":
        expected = max(1, int(flat["num-clients"] * flat["fraction-train"]))
        got = record.get("clients_per_round", [])
        if got != [expected] * flat["rounds"]:
            problems.append(f"clients trained per round {got}, expected {expected}")
        if len(record.get("round_stamps", {})) != flat["rounds"] + 1:
            problems.append("no per-round timestamps from the server's round hook")
    return problems


# ---------------------------------------------------------------- analysis


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _check(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    target = TARGETS[name]
    return value <= target["max"] if "max" in target else value >= target["min"]


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through Child.wait, which kills its tree


def run(out: Path | None = None, quick: bool = False) -> dict:
    """Measure the three figures side by side; write JSON to ``out`` (if given); return it."""
    rounds = 3 if quick else 8
    cpus = len(os.sched_getaffinity(0))  # CPUs this process may use (Ray sees the same)
    t0 = time.perf_counter()
    previous = None
    if threading.current_thread() is threading.main_thread():  # kill -TERM ends the children too
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        runs = _measure(quick, rounds, cpus)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return _report(runs, out, quick, rounds, cpus, t0)


def _measure(quick: bool, rounds: int, cpus: int) -> dict[str, dict]:
    """Run every measurement (fresh child process trees, one after another)."""
    timing = timing_config(rounds).to_flat()
    one_round = timing_config(1).to_flat()
    checkpointed = timing_config(rounds, checkpoints=True).to_flat()
    with tempfile.TemporaryDirectory(prefix="fedqdnn-simbench-") as tmp:
        work = Path(tmp)

        def flower(flat: dict, cpus_per_client: float, name: str) -> dict:
            spec = {"kind": "flower", "config": flat, "cpus_per_client": cpus_per_client}
            return {**spec, "out_dir": str(work / name)}

        plan = [  # interleaved so that load changes hit both sides
            ("bare_a", {"kind": "bare", "config": timing}, False),
            ("flower_1actor", flower(timing, cpus, "f1"), False),
            ("flower_2actors", flower(timing, cpus / 2, "f2"), False),
            ("flower_1actor_1round", flower(one_round, cpus, "f11"), False),
            ("bare_b", {"kind": "bare", "config": timing}, False),
            ("bare_pair", {"kind": "bare", "config": timing}, False),
        ]
        if not quick and "checkpoint-every" in checkpointed:
            plan.append(("flower_1actor_checkpoints", flower(checkpointed, cpus, "fc"), False))
        plan += [
            ("memory_10_clients", flower(memory_config(10).to_flat(), cpus / 2, "m10"), True),
            ("memory_1000_clients", flower(memory_config(1000).to_flat(), cpus / 2, "m1k"), True),
        ]
        runs = {}
        for name, spec, pss in plan:
            if name == "bare_pair":  # two bare runs at once
                children = {
                    f"bare_pair_{i}": Child(f"bare_pair_{i}", spec, work, check=_problems)
                    for i in (1, 2)
                }
                try:
                    runs.update({n: child.wait() for n, child in children.items()})
                except BaseException:
                    for child in children.values():
                        child.kill()
                    raise
                name = "bare_pair_2"
            else:
                runs[name] = run_child(name, spec, work, pss, _problems)
            r = runs[name]
            status = "ok" if r["returncode"] == 0 else f"FAILED rc={r['returncode']}"
            print(
                f"[sim_overhead] {name}: {status}, {r['process_wall_seconds']:.1f}s wall, "
                f"peak tree RSS {r['peak_tree_rss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )

    return runs


def _report(runs: dict, out: Path | None, quick: bool, rounds: int, cpus: int, t0: float) -> dict:
    """The figures, their definitions and every run's record; written to ``out`` if given."""
    from fedqdnn.provenance import versions

    bare_steady = [s for s in map(steady_round_seconds, (runs["bare_a"], runs["bare_b"])) if s]
    bare = statistics.mean(bare_steady) if bare_steady else None
    f1, f2, f11 = runs["flower_1actor"], runs["flower_2actors"], runs["flower_1actor_1round"]
    flower1 = steady_round_seconds(f1)
    flower2 = steady_round_seconds(f2)
    method = "round timestamps (rounds 2..R)"
    diff = None
    if "seconds" in f1 and "seconds" in f11:
        diff = (f1["seconds"] - f11["seconds"]) / (rounds - 1)
    if flower1 is None and diff is not None:
        flower1, method = diff, "difference of an R-round and a 1-round run"
    if flower2 is None and "seconds" in f2 and "seconds" in f1 and flower1 is not None:
        flower2 = flower1 * f2["seconds"] / f1["seconds"]  # fallback: whole-run ratio
    startup = None
    if "seconds" in f11 and bare is not None:
        startup = f11["seconds"] - bare
    bare_proc_1round = None
    ba = runs["bare_a"]
    if bare is not None and "process_wall_seconds" in ba:
        bare_proc_1round = ba["process_wall_seconds"] - (rounds - 1) * bare
    m10, m1000 = runs["memory_10_clients"], runs["memory_1000_clients"]
    ok10 = m10["returncode"] == 0 and m1000["returncode"] == 0
    rss_ratio = _ratio(m1000["peak_tree_rss_mb"], m10["peak_tree_rss_mb"]) if ok10 else None
    pss_ratio = _ratio(m1000.get("peak_tree_pss_mb"), m10.get("peak_tree_pss_mb")) if ok10 else None

    figures = {
        "steady_round_ratio_vs_bare": _round(_ratio(flower1, bare)),
        "startup_seconds": _round(startup, 2),
        "two_actor_speedup": _round(_ratio(flower1, flower2)),
        "peak_rss_ratio_1000_vs_10_clients": _round(rss_ratio),
        "startup_seconds_1000_clients": _round((m1000.get("round_stamps") or {}).get(1), 2),
    }
    inputs = {  # a figure is void when a run it rests on did not do the intended work
        "steady_round_ratio_vs_bare": ("bare_a", "bare_b", "flower_1actor"),
        "startup_seconds": ("bare_a", "bare_b", "flower_1actor_1round"),
        "two_actor_speedup": ("flower_1actor", "flower_2actors"),
        "peak_rss_ratio_1000_vs_10_clients": ("memory_10_clients", "memory_1000_clients"),
        "startup_seconds_1000_clients": ("memory_1000_clients",),
    }
    problems = {name: r["problems"] for name, r in runs.items() if r.get("problems")}
    for figure, names in inputs.items():
        if any(n in problems for n in names):
            figures[figure] = None
    loads = [x for r in runs.values() for x in r["load_avg_1min_before_after"]]
    pair = [steady_round_seconds(runs[f"bare_pair_{i}"]) for i in (1, 2)]
    bare_pair_speedup = 2 * bare / statistics.mean(pair) if bare and all(pair) else None
    stamps11 = f11.get("round_stamps") or {}
    checkpoint_cost = None
    if "flower_1actor_checkpoints" in runs:
        with_checkpoints = steady_round_seconds(runs["flower_1actor_checkpoints"])
        if with_checkpoints is not None and flower1 is not None:
            checkpoint_cost = with_checkpoints - flower1
    result = {
        **figures,
        "targets": TARGETS,
        "meets_target": {k: _check(k, figures[k]) for k in TARGETS},
        "problems": problems,
        "definitions": {
            "steady_round_ratio_vs_bare": "flower_round_seconds_1actor / bare_round_seconds",
            "bare_round_seconds": "median s/round over rounds 2..R of the same work in one "
            "process (train, validate+aggregate, local and central evaluation), mean of two "
            "runs (before and after the Flower runs)",
            "flower_round_seconds": f"median s/round over rounds 2..R, {method}",
            "flower_round_seconds_1actor_from_two_runs": "(simulate() wall of the R-round run "
            "- that of the 1-round run) / (R-1): a cross-check, only meaningful on a quiet "
            "machine (start-up varies by seconds between runs)",
            "startup_seconds": "wall of simulate() for a 1-round run (Ray start, actors, "
            "data/model build in workers, round 0+1, Ray shutdown, results and plots) minus "
            "bare_round_seconds",
            "startup_process_seconds_vs_bare": "whole-process wall of the 1-round Flower run "
            "minus the whole-process wall of a 1-round bare run (interpreter start, imports "
            "and data load on both sides)",
            "two_actor_speedup": "flower_round_seconds with 1 actor / with 2 actors",
            "bare_two_process_speedup": "2 x bare_round_seconds / the mean s/round of two "
            "bare runs started together: the bare-PyTorch limit of two_actor_speedup on this "
            "machine at that moment (about 2 with two idle CPUs, about 1 when other work "
            "holds them)",
            "checkpoint_seconds_per_round": "flower_round_seconds with the default per-round "
            "checkpoint minus without (the timing runs above write none)",
            "peak_rss_ratio_1000_vs_10_clients": "peak summed RSS of the whole process tree, "
            "1,000 vs 10 virtual clients, 10 sampled per round, 1 round, MNIST-1D",
            "startup_seconds_1000_clients": "seconds from the simulate() call to the end of "
            "round 1 of run memory_1000_clients: Ray, the SuperNodes, the actors with their "
            "data and model, the round-0 evaluation, and a first round whose 10 clients hold "
            "8 samples each (the server's round 0 does not wait for Ray, so round 1 carries "
            "the start-up); first_round_end_seconds_10_clients is the same mark of the "
            "10-client run, whose clients hold 800 samples each",
        },
        "details": {
            "quick": quick,
            "rounds": rounds,
            "cpus": cpus,
            "load_avg_1min_min_max": [min(loads), max(loads)],
            "bare_round_seconds": _round(bare),
            "bare_round_seconds_each_run": [_round(s) for s in bare_steady],
            "flower_round_seconds_1actor": _round(flower1),
            "flower_round_seconds_1actor_from_two_runs": _round(diff),
            "flower_round_seconds_2actors": _round(flower2),
            "checkpoint_seconds_per_round": _round(checkpoint_cost),
            "bare_two_process_speedup": _round(bare_pair_speedup),
            "torch_threads_per_client": 1,
            "flower_1round_simulate_seconds": _round(f11.get("seconds"), 2),
            "flower_1round_until_round0_seconds": _round(stamps11.get(0), 2),
            "first_round_end_seconds_10_clients": _round((m10.get("round_stamps") or {}).get(1), 2),
            "flower_1round_teardown_seconds": _round(
                f11["seconds"] - stamps11[1] if 1 in stamps11 and "seconds" in f11 else None, 2
            ),
            "startup_process_seconds_vs_bare": _round(
                f11["process_wall_seconds"] - bare_proc_1round if bare_proc_1round else None, 2
            ),
            "peak_tree_pss_ratio_1000_vs_10_clients": _round(pss_ratio),
            "runs": runs,
            "benchmark_seconds": round(time.perf_counter() - t0, 1),
        },
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if out is not None:
        write_json(Path(out), result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sim_overhead.json"))
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    res = run(args.out, args.quick)
    print(json.dumps({k: res[k] for k in ("meets_target", *TARGETS, "startup_seconds")}, indent=2))
