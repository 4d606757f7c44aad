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
import io
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from fedqdnn.config import FederatedConfig
from fedqdnn.deployment import DeviceResult, accuracy_by_tier, evaluate_devices
from fedqdnn.federated.checkpoint import CheckpointError
from fedqdnn.federated.report import FINAL_MODELS_DIR, MODEL_FILE, load_model_state
from fedqdnn.federated.run_folder import COMPARISON_FILE, checkpoint_round, claim
from fedqdnn.files import write_json, write_text_atomic
from fedqdnn.fleet import build_model_for
from fedqdnn.hardware import get_profile
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
    "rounds_to_target",
    "sim_seconds_to_target",
    "model_bytes",
    "bytes_per_round",
    "sim_seconds_per_round",
)


def run_key(cfg: FederatedConfig) -> str:
    """Stable directory name of one Flower run."""
    digest = hashlib.sha1(json.dumps(cfg.to_flat(), sort_keys=True).encode()).hexdigest()
    return digest[:12]


def _run(cfg: FederatedConfig, out: Path, simulate_fn, log) -> dict:
    """The run of ``cfg``: reused when finished, resumed from its checkpoint when interrupted,
    else (run again) from the start."""
    run_dir = out / "runs" / run_key(cfg)
    kept = checkpoint_round(run_dir)
    if (run_dir / "results.json").exists() and (run_dir / MODEL_FILE).exists():
        log(f"    reusing {run_dir.name}")
    elif kept is not None:
        log(f"    resuming {run_dir.name} after round {kept}")
        try:
            simulate_fn(cfg, run_dir, resume=True)
        except CheckpointError as err:
            log(f"    its checkpoint is unusable ({err}); running {run_dir.name} again")
            simulate_fn(cfg, run_dir, overwrite=True)
    else:
        simulate_fn(cfg, run_dir, overwrite=True)  # nothing finished there
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


def _window_states(res: dict) -> list[dict]:
    """The models of a run's final window (final accuracy is their mean), oldest first."""
    run_dir, last = Path(res["run_dir"]), len(res["history"])
    paths = [
        run_dir / (MODEL_FILE if r == last else f"{FINAL_MODELS_DIR}/model-round{r}.safetensors")
        for r in res["final"].get("window_rounds", [last])
    ]
    return [load_model_state(p) for p in paths]


def _mean_over_window(per_model: list[list[DeviceResult]]) -> list[DeviceResult]:
    """Each device's accuracy averaged over the window's models."""
    return [
        replace(rows[0], accuracy=statistics.fmean(r.accuracy for r in rows))
        for rows in zip(*per_model, strict=True)
    ]


def _to_target(res: dict, tier: str, deployed_bits: int) -> dict:
    """Rounds / simulated seconds until the tier's devices reached the target during training,
    when what they measured in training is what they deploy (not so for PTQ or FP32 runs)."""
    measured = {d["bits"] for d in res["per_device"] if d["tier"] == tier}
    if measured != {deployed_bits}:
        return {"round": None, "sim_seconds": None}
    return res["convergence"]["by_tier"].get(tier, {"round": None, "sim_seconds": None})


def compare_one(cfg: FederatedConfig, name: str, out: Path, simulate_fn, log) -> dict:
    """Run one strategy at one seed; per-tier rows and its accuracy curves."""
    spec = get_strategy(name)
    window_states: list[dict[int, dict]] = []
    run_results, run_of_device = [], {}
    for run_cfg, devices in spec.plan(cfg):
        res = _run(run_cfg, out, simulate_fn, log)
        for k, state in enumerate(_window_states(res)):
            if k == len(window_states):
                window_states.append({})
            window_states[k].update({d: state for d in devices})
        run_of_device.update({d: res for d in devices})
        run_results.append(res)
    model_cfg = cfg.replace(**spec.changes)
    devices = _mean_over_window(
        [evaluate_devices(model_cfg, states, spec.deploy) for states in window_states]
    )
    costs = _per_device_costs(run_results, cfg.num_clients)
    model = build_model_for(model_cfg)
    rows = []
    for tier, accuracy in accuracy_by_tier(devices).items():
        members = [d for d in devices if d.tier == tier]
        bits = members[0].bits
        reached = _to_target(run_of_device[members[0].client], tier, bits)
        rows.append(
            {
                "strategy": name,
                "seed": cfg.seed,
                "tier": tier,
                "bits": bits,
                "accuracy": round(accuracy, 6),
                "rounds_to_target": reached["round"],
                "sim_seconds_to_target": reached["sim_seconds"],
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
            "rounds": [h["round"] for h in r["history"]],
            "sim_elapsed_seconds": [h["sim_elapsed_seconds"] for h in r["history"]],
            "central_accuracy_by_bits": [h["central_accuracy_by_bits"] for h in r["history"]],
            "accuracy_by_tier": [h["accuracy_by_tier"] for h in r["history"]],
        }
        for r in run_results
    ]
    return {"rows": rows, "curves": curves, "per_device": [d.__dict__ for d in devices]}


def _work(cfg: FederatedConfig, name: str) -> float:
    """Relative cost of a strategy's runs: rounds x devices trained per round."""
    return sum(
        run_cfg.rounds * max(1, math.ceil(run_cfg.fraction_train * len(run_cfg.participant_ids)))
        for run_cfg, _ in get_strategy(name).plan(cfg)
    )


def _eta(started: float, done: float, total: float) -> str:
    """``(120s elapsed, ETA 300s)``: the remaining share of the work at the pace so far."""
    elapsed = time.perf_counter() - started
    if done <= 0 or elapsed < 1:
        return f" ({elapsed:.0f}s elapsed)"
    return f" ({elapsed:.0f}s elapsed, ETA {elapsed * (total - done) / done:.0f}s)"


def run_comparison(
    cfg: FederatedConfig,
    strategies: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    simulate_fn: Callable[..., dict] | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> dict:
    """Every strategy x seed; writes comparison.json/.csv and plots; returns the JSON.

    ``out`` is held for the comparison (:func:`~fedqdnn.federated.run_folder.claim`): one
    comparison at a time, a finished one replaced only with ``overwrite``. ``simulate_fn``
    (default :func:`~fedqdnn.federated.supervisor.simulate_supervised`) has the signature
    of :func:`~fedqdnn.federated.simulation.simulate`.
    """
    if not strategies or not seeds:
        raise ValueError("a comparison needs at least one strategy and one seed")
    for name in strategies:
        get_strategy(name)  # fail before any work
    for seed in seeds:
        cfg.replace(seed=seed)
    with claim(Path(out), overwrite=overwrite):
        return _compare(cfg, strategies, seeds, Path(out), simulate_fn, log)


def _compare(
    cfg: FederatedConfig,
    strategies: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    simulate_fn: Callable[..., dict] | None,
    log: Callable[[str], None],
) -> dict:
    if simulate_fn is None:  # each run in a supervised child: Ctrl-C ends it at once
        from fedqdnn.federated.supervisor import simulate_supervised as simulate_fn
    started = time.perf_counter()
    rows, curves, devices = [], {}, {}
    jobs = [(seed, name) for seed in seeds for name in strategies]
    work = [_work(cfg.replace(seed=seed), name) for seed, name in jobs]
    for i, ((seed, name), done) in enumerate(zip(jobs, itertools.accumulate(work), strict=True)):
        log(f"[{i + 1}/{len(jobs)}] {name} seed {seed}{_eta(started, done - work[i], sum(work))}")
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
    from simulations.compare_plots import plot_comparison

    plot_comparison(out, result)
    write_csv(out / "comparison.csv", rows)
    write_json(out / COMPARISON_FILE, result)  # last: comparison.json marks a complete one
    return result


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """comparison.csv, one row per strategy x seed x tier; atomic."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def summary_table(result: dict) -> str:
    """Markdown: mean ± std accuracy (%) per tier and strategy over seeds; each tier named
    with the mode it runs at its best (its top mode)."""
    tiers = list(dict.fromkeys(r["tier"] for r in result["rows"]))
    modes = [int(b) for b in str(result["config"]["bits"]).split(",")]
    header = ["strategy", *(f"{t} ({get_profile(t).top_mode(modes)}-bit)" for t in tiers)]
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


def convergence_table(result: dict) -> str:
    """Markdown: per tier and strategy, the rounds (and simulated minutes) until the tier's
    devices first reached the target, mean over seeds; "–" where a seed never did (or where
    what devices measured in training is not what they deploy: PTQ, FP32 reference)."""
    tiers = list(dict.fromkeys(r["tier"] for r in result["rows"]))
    rows = []
    for name in result["strategies"]:
        cells = []
        for tier in tiers:
            mine = [r for r in result["rows"] if r["strategy"] == name and r["tier"] == tier]
            reached = [r for r in mine if r.get("rounds_to_target") is not None]
            if not mine or len(reached) < len(mine):
                cells.append("–")
                continue
            rounds = statistics.fmean(r["rounds_to_target"] for r in reached)
            minutes = statistics.fmean(r["sim_seconds_to_target"] for r in reached) / 60
            cells.append(f"{rounds:.0f} ({minutes:.0f} min)")
        rows.append([name, *cells])
    target = result["config"].get("target-accuracy")
    header = ["strategy", *(f"{t}: rounds to {target:.0%}" if target else t for t in tiers)]
    return markdown_table(header, rows)
