"""Run FedQDNN and every baseline on the same scenario, partitions and seeds; tabulate.

Writes ``comparison.json`` and ``comparison.csv`` (strategy, seed, tier, bits, accuracy,
bytes, simulated time) and the plots of :mod:`simulations.compare_plots`. Each Flower run
keeps its own directory under ``runs/`` keyed by its config, so an interrupted comparison
resumes where it stopped and strategies that share a run (shared-bn, shared-bn-recal)
train it once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fedqdnn.config import FederatedConfig
from fedqdnn.deployment import accuracy_by_tier, evaluate_devices
from fedqdnn.device import build_model_for
from fedqdnn.federated.report import MODEL_FILE, load_model_state
from fedqdnn.files import write_json
from fedqdnn.model_size import deployed_model_bytes
from fedqdnn.provenance import versions
from fedqdnn.tables import markdown_table, mean_std_cell
from strategies.baselines import STRATEGIES, get_strategy

CSV_FIELDS = (
    "strategy",
    "seed",
    "tier",
    "bits",
    "accuracy",
    "model_bytes",
    "bytes_per_round",
    "sim_seconds_per_round",
)


def run_key(cfg: FederatedConfig) -> str:
    """Stable directory name of one Flower run."""
    digest = hashlib.sha1(json.dumps(cfg.to_flat(), sort_keys=True).encode()).hexdigest()
    return digest[:12]


def _run(cfg: FederatedConfig, out: Path, simulate_fn, log) -> dict:
    run_dir = out / "runs" / run_key(cfg)
    if (run_dir / "results.json").exists() and (run_dir / MODEL_FILE).exists():
        log(f"    reusing {run_dir.name}")
    else:
        simulate_fn(cfg, run_dir)
    return json.loads((run_dir / "results.json").read_text()) | {"run_dir": str(run_dir)}


def _per_device_costs(results: Sequence[dict], devices: int) -> dict[int, tuple[float, float]]:
    """Mean (bytes up+down, simulated seconds) per round for each device that trained."""
    totals: dict[int, list[float]] = {}
    for res in results:
        rounds = len(res["history"])
        for h in res["history"]:
            for c in h["clients"]:
                t = totals.setdefault(int(c["partition-id"]), [0.0, 0.0])
                t[0] += (c["bytes-up"] + c["bytes-down"]) / rounds
                t[1] += c["sim-seconds"] / rounds
    return {d: tuple(totals.get(d, [0.0, 0.0])) for d in range(devices)}


def compare_one(cfg: FederatedConfig, name: str, out: Path, simulate_fn, log) -> dict:
    """Run one strategy at one seed; per-tier rows and its accuracy curves."""
    spec = get_strategy(name)
    state_for_device: dict[int, dict] = {}
    run_results = []
    for run_cfg, devices in spec.plan(cfg):
        res = _run(run_cfg, out, simulate_fn, log)
        state = load_model_state(Path(res["run_dir"]) / MODEL_FILE)
        state_for_device.update({d: state for d in devices})
        run_results.append(res)
    model_cfg = cfg.replace(**spec.changes)
    devices = evaluate_devices(model_cfg, state_for_device, spec.deploy)
    costs = _per_device_costs(run_results, cfg.num_clients)
    model = build_model_for(model_cfg)
    rows = []
    for tier, accuracy in accuracy_by_tier(devices).items():
        members = [d for d in devices if d.tier == tier]
        bits = members[0].bits
        rows.append(
            {
                "strategy": name,
                "seed": cfg.seed,
                "tier": tier,
                "bits": bits,
                "accuracy": round(accuracy, 6),
                "model_bytes": deployed_model_bytes(model, bits),
                "bytes_per_round": round(statistics.mean(costs[d.client][0] for d in members)),
                "sim_seconds_per_round": round(
                    statistics.mean(costs[d.client][1] for d in members), 4
                ),
            }
        )
    curves = [
        {
            "participants": r["config"]["participants"],
            "central_accuracy_by_bits": [h["central_accuracy_by_bits"] for h in r["history"]],
        }
        for r in run_results
    ]
    return {"rows": rows, "curves": curves, "per_device": [d.__dict__ for d in devices]}


def run_comparison(
    cfg: FederatedConfig,
    strategies: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    simulate_fn: Callable[[FederatedConfig, Path], dict] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Every strategy x seed; writes comparison.json/.csv and plots; returns the JSON."""
    for name in strategies:
        get_strategy(name)  # fail before any work
    if simulate_fn is None:
        from fedqdnn.federated.simulation import simulate as simulate_fn  # noqa: N811
    started = time.perf_counter()
    rows, curves, devices = [], {}, {}
    total = len(strategies) * len(seeds)
    for i, (seed, name) in enumerate(((s, n) for s in seeds for n in strategies), 1):
        log(f"[{i}/{total}] {name} seed {seed} ({time.perf_counter() - started:.0f}s elapsed)")
        part = compare_one(cfg.replace(seed=seed), name, out, simulate_fn, log)
        rows += part["rows"]
        curves[f"{name}/seed{seed}"] = part["curves"]
        devices[f"{name}/seed{seed}"] = part["per_device"]
    result = {
        "rows": rows,
        "curves": curves,
        "per_device": devices,
        "strategies": {n: STRATEGIES[n].description for n in strategies},
        "seeds": list(seeds),
        "config": cfg.to_flat(),
        "versions": versions(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "comparison.json", result)
    write_csv(out / "comparison.csv", rows)
    from simulations.compare_plots import plot_comparison

    plot_comparison(out, result)
    return result


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """comparison.csv, one row per strategy x seed x tier."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def summary_table(result: dict) -> str:
    """Markdown: mean ± std accuracy (%) per tier and strategy over seeds."""
    tiers = list(dict.fromkeys(r["tier"] for r in result["rows"]))
    bits = {r["tier"]: r["bits"] for r in result["rows"] if r["strategy"] == "fedqdnn"}
    header = ["strategy", *(f"{t} ({bits.get(t, '?')}-bit)" for t in tiers)]
    rows = []
    for name in result["strategies"]:
        cells = [
            mean_std_cell(
                [r["accuracy"] for r in result["rows"] if r["strategy"] == name and r["tier"] == t]
            )
            for t in tiers
        ]
        rows.append([name, *cells])
    return markdown_table(header, rows)
