"""Fleet scale: does a round cost what its sampled clients cost, whatever the fleet size?

Runs, each in a fresh process tree (:mod:`benchmarks.process_tree`), a few rounds of
``fleet-100`` (10 clients a round) and of ``fleet-1000`` with 10 clients a round (1 %) and
with its preset's share (3 %, 30 clients), then ``fleet-1000`` on a two-node local Ray cluster
(head + one worker node). For each: start-up (process start to the end of the server's round-0
evaluation: Ray, node registration, data in the driver), the first round (workers build data,
partitions and models), the steady round (median of the later rounds), seconds per sampled
client, and the peak memory of the whole process tree. Device evaluation is limited to the
clients a round samples, so the figures are about training rounds.

Targets (issue "fleet scale"): round time grows with the clients sampled per round, not with
the fleet size (``steady_round_ratio_1000_vs_100_same_clients`` about 1); memory within 1.2x
(``peak_rss_ratio_1000_vs_100``).

Usage: python benchmarks/fleet_scale.py [--rounds 6] --out benchmarks/results/fleet_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.process_tree import REPO, run_child  # noqa: E402
from benchmarks.workloads import steady_round_seconds  # noqa: E402
from fedqdnn.files import write_json  # noqa: E402
from fedqdnn.provenance import versions  # noqa: E402

TARGETS = {
    "steady_round_ratio_1000_vs_100_same_clients": {"max": 1.2},
    "peak_rss_ratio_1000_vs_100": {"max": 1.2},
}


def _config(preset: str, rounds: int, per_round: int) -> dict:
    """A preset's flat config for a timing run: ``per_round`` clients train and evaluate."""
    from simulations.scenarios import load_scenario

    cfg = load_scenario(preset)
    fraction = per_round / cfg.num_clients
    return cfg.replace(
        rounds=rounds,
        fraction_train=fraction,
        fraction_evaluate=fraction,
        evaluate_every=1,
        final_average=1,
        checkpoint_every=0,
    ).to_flat()


def _figures(record: dict, per_round: int) -> dict:
    stamps = {int(k): v for k, v in record.get("round_stamps", {}).items()}
    steady = steady_round_seconds(record)
    return {
        "clients_per_round": per_round,
        "startup_seconds": round(stamps[0], 2) if 0 in stamps else None,
        "first_round_seconds": round(stamps[1] - stamps[0], 2) if 1 in stamps else None,
        "steady_round_seconds": round(steady, 3) if steady else None,
        "seconds_per_sampled_client": round(steady / per_round, 4) if steady else None,
        "peak_tree_rss_mb": record.get("peak_tree_rss_mb"),
        "process_wall_seconds": record.get("process_wall_seconds"),
        "returncode": record.get("returncode"),
    }


def _cluster_run(rounds: int, work: Path) -> dict:
    """``fedqdnn simulate --scenario fleet-1000`` on a head + worker node Ray cluster."""
    import ray
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="fqray", dir="/tmp")  # short: Ray's socket paths
    os.environ["RAY_TMPDIR"] = tmp
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = work / "cluster"
        started = time.perf_counter()
        cmd = [str(Path(sys.executable).parent / "fedqdnn"), "simulate", "--scenario"]
        cmd += ["fleet-1000", "--rounds", str(rounds), "--out", str(out)]
        cmd += ["--ray-address", cluster.address, "--evaluate-every", "1000"]
        cmd += ["--fraction-evaluate", "0.03", "--checkpoint-every", "0"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - started
        record = {"returncode": proc.returncode, "wall_seconds": round(wall, 1)}
        if proc.returncode == 0:
            results = json.loads((out / "results.json").read_text())
            record["round_seconds"] = [h["round_seconds"] for h in results["history"]]
            record["clients_per_round"] = [h["num_trained"] for h in results["history"]]
        else:
            record["error"] = proc.stdout[-1500:] + proc.stderr[-1500:]
        record["nodes"] = 2
        return record
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def run(out: Path | None, rounds: int = 6, cluster: bool = True) -> dict:
    """Measure the fleets one after another; write JSON to ``out``; return it."""
    t0 = time.perf_counter()
    plan = [
        ("fleet-100, 10 a round", "fleet-100", 10),
        ("fleet-1000, 10 a round", "fleet-1000", 10),
        ("fleet-1000, 30 a round", "fleet-1000", 30),
    ]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="fedqdnn-fleet-") as tmp:
        work = Path(tmp)
        for i, (name, preset, per_round) in enumerate(plan):
            spec = {
                "kind": "flower",
                "config": _config(preset, rounds, per_round),
                "cpus_per_client": 1,
                "out_dir": str(work / f"run{i}"),
            }
            record = run_child(f"run{i}", spec, work)
            runs[name] = {**_figures(record, per_round), "load_avg": record.get(
                "load_avg_1min_before_after")}  # fmt: skip
            print(f"[fleet_scale] {name}: {runs[name]}", file=sys.stderr, flush=True)
        cluster_record = _cluster_run(3, work) if cluster else None
    small, same = runs["fleet-100, 10 a round"], runs["fleet-1000, 10 a round"]

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    figures = {
        "steady_round_ratio_1000_vs_100_same_clients": ratio(
            same["steady_round_seconds"], small["steady_round_seconds"]
        ),
        "peak_rss_ratio_1000_vs_100": ratio(same["peak_tree_rss_mb"], small["peak_tree_rss_mb"]),
    }
    result = {
        **figures,
        "targets": TARGETS,
        "meets_target": {
            k: (figures[k] <= t["max"] if figures[k] is not None else None)
            for k, t in TARGETS.items()
        },
        "runs": runs,
        "two_node_cluster_fleet_1000": cluster_record,
        "rounds": rounds,
        "seconds": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%d"),
        "versions": versions(),
    }
    if out is not None:
        write_json(Path(out), result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fleet_scale.json"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-cluster", action="store_true", help="skip the two-node run")
    args = parser.parse_args()
    res = run(args.out, args.rounds, cluster=not args.no_cluster)
    print(json.dumps({k: res[k] for k in (*TARGETS, "meets_target")}, indent=2))
