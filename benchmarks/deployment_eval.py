"""What evaluating a fleet's deployed models costs, with torch's default intra-op threads
against one thread (what ``fedqdnn.deployment.evaluate_devices`` uses).

A comparison evaluates every device under every deployment (each model of the final window,
their average, each at the policy's mode and at the device's best mode): thousands of small
forward passes, often while other runs' Ray workers use the same cores. The work here is one
``evaluate_devices`` pass over fleet-100 (100 devices, MNIST-1D) at the best mode, on a
freshly initialized model (the cost does not depend on the weights), timed alternately with
default threads and with one, ``--repeats`` times each (medians). Results must agree exactly.

Usage: python benchmarks/deployment_eval.py [--repeats 3] [--scenario fleet-100]
       --out benchmarks/results/deployment_eval.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import fedqdnn.deployment as deployment
from fedqdnn.fleet import build_model_for
from fedqdnn.policies import Deploy, ModeChoice
from fedqdnn.provenance import versions
from simulations.scenarios import load_scenario


def _timed(cfg, state, threads_default: bool) -> tuple[float, list]:
    keep = deployment.intra_op_threads
    if threads_default:  # what evaluation did before: torch's own thread count
        deployment.intra_op_threads = lambda count: contextlib.nullcontext()
    try:
        start = time.perf_counter()
        got = deployment.evaluate_devices(
            cfg, dict.fromkeys(range(cfg.num_clients), state), Deploy.TOP,
            choice=ModeChoice.BEST_ON_TRAIN,
        )  # fmt: skip
        return time.perf_counter() - start, got
    finally:
        deployment.intra_op_threads = keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenario", default="fleet-100")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = load_scenario(args.scenario)
    torch.manual_seed(0)
    state = {k: v.numpy().copy() for k, v in build_model_for(cfg).state_dict().items()}
    _timed(cfg, state, False)  # data splits cached, first-use costs paid
    seconds: dict[str, list[float]] = {"default_threads": [], "one_thread": []}
    results = {}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, default in (("default_threads", True), ("one_thread", False)):
            took, results[name] = _timed(cfg, state, default)
            seconds[name].append(round(took, 3))
        load.append(os.getloadavg()[0])
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    report = {
        "what": "one evaluate_devices pass (best mode on train, then test) over the fleet",
        "scenario": args.scenario,
        "devices": cfg.num_clients,
        "torch_default_threads": torch.get_num_threads(),
        "seconds": seconds,
        "median_seconds": medians,
        "one_thread_over_default": round(medians["one_thread"] / medians["default_threads"], 3),
        "same_results": results["default_threads"] == results["one_thread"],
        "load_average_1min": [round(v, 2) for v in load],
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("median_seconds", "one_thread_over_default",
                                               "same_results", "load_average_1min")}))  # fmt: skip


if __name__ == "__main__":
    main()
