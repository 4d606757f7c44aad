"""Run FedQDNN and every other arm (:mod:`strategies.arms`) on the same scenario, partitions
and seeds; tabulate.

Writes ``comparison.json`` (:class:`fedqdnn.schema.Comparison`) and ``comparison.csv`` (arm,
seed, tier, bits, accuracy, bytes, simulated time) and the plots of
:mod:`simulations.compare_plots`. Each Flower run keeps its own directory under ``runs/`` keyed
by its config, so an interrupted comparison resumes where it stopped and arms that share a run
(shared-bn, shared-bn-recal) train it once.
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
from dataclasses import dataclass, replace
from pathlib import Path

from fedqdnn.config import FederatedConfig, from_flat
from fedqdnn.console import logger
from fedqdnn.convergence import largest_drop
from fedqdnn.deployment import (
    DeviceResult,
    accuracy_by_tier,
    average_states,
    evaluate_devices,
    evaluated_model,
)
from fedqdnn.federated.checkpoint import CheckpointError
from fedqdnn.federated.report import load_model_state, read_results
from fedqdnn.federated.run_folder import checkpoint_round, claim
from fedqdnn.files import read_json_checked, write_json, write_text_atomic
from fedqdnn.fleet import build_model_for
from fedqdnn.hardware import get_profile
from fedqdnn.model_size import deployed_model_bytes
from fedqdnn.policies import ModeChoice, Statistics
from fedqdnn.provenance import versions
from fedqdnn.round_plan import final_window
from fedqdnn.schema import (
    COMPARISON_CSV,
    COMPARISON_FILE,
    FINAL_MODELS_DIR,
    MODEL_FILE,
    RESULTS_FILE,
    RUNS_DIR,
    ArmRow,
    Comparison,
    Curve,
    DeviceAccuracy,
    Reached,
    RunResults,
    model_file,
    run_key,
)
from fedqdnn.tables import markdown_table, mean_std_cell
from strategies.arms import ARMS, get_arm

CSV_FIELDS = tuple(ArmRow.model_fields)

log = logger(__name__)  # progress lines ("[1/8] fedqdnn seed 0 ...", "reusing ...")


def run_folder_name(cfg: FederatedConfig) -> str:
    """Stable directory name of one Flower run: a hash of the config's keys that differ from
    the defaults, so a key added at its default later leaves every cached run's name alone
    (a changed default is caught when the run is reused: :func:`check_reusable`)."""
    default = FederatedConfig().to_flat()
    changed = {k: v for k, v in cfg.to_flat().items() if default[k] != v}
    digest = hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def check_reusable(results: RunResults, cfg: FederatedConfig, run_dir: Path) -> None:
    """Refuse, in one line, a finished run whose config is not ``cfg`` (keys it lacks count
    as their defaults): its folder name matched, but a default changed since it ran."""
    try:
        kept = from_flat(results.config).to_flat()
    except ValueError as err:
        raise ValueError(f"{run_dir} holds a run of another fedqdnn's config ({err})") from None
    wanted = cfg.to_flat()
    differ = [f"{k} = {kept[k]!r} there, {v!r} asked" for k, v in wanted.items() if kept[k] != v]
    if differ:
        raise ValueError(
            f"{run_dir} holds a run of another config ({'; '.join(differ)}); "
            "move it away to run this one"
        )


@dataclass(frozen=True)
class FinishedRun:
    """A run of the comparison: its results and the folder holding its models."""

    results: RunResults
    folder: Path


def _run(cfg: FederatedConfig, out: Path, simulate_fn) -> FinishedRun:
    """The run of ``cfg``: reused when finished, resumed from its checkpoint when interrupted,
    else (run again) from the start."""
    run_dir = out / RUNS_DIR / run_folder_name(cfg)
    kept = checkpoint_round(run_dir)
    if (run_dir / RESULTS_FILE).exists() and (run_dir / MODEL_FILE).exists():
        log.info("    reusing %s", run_dir.name)
    elif kept is not None:
        log.info("    resuming %s after round %d", run_dir.name, kept)
        try:
            simulate_fn(cfg, run_dir, resume=True)
        except CheckpointError as err:
            log.info("    its checkpoint is unusable (%s); running %s again", err, run_dir.name)
            simulate_fn(cfg, run_dir, overwrite=True)
    else:
        simulate_fn(cfg, run_dir, overwrite=True)  # nothing finished there
    results = read_results(run_dir / RESULTS_FILE)
    check_reusable(results, cfg, run_dir)
    return FinishedRun(results, run_dir)


def _per_device_costs(runs: Sequence[FinishedRun], devices: int) -> dict[int, tuple[float, float]]:
    """Mean (bytes up+down, simulated seconds) per round for each device that trained."""
    totals: dict[int, list[float]] = {}
    for run in runs:
        rounds = len(run.results.history)
        for h in run.results.history:
            for c in h.clients:
                t = totals.setdefault(c.partition_id, [0.0, 0.0])
                t[0] += (c.bytes_up + c.bytes_down) / rounds
                t[1] += c.sim_seconds / rounds
    return {d: tuple(totals.get(d, [0.0, 0.0])) for d in range(devices)}


def _window_states(run: FinishedRun) -> list[dict]:
    """The models of a run's final window (final accuracy is their mean), oldest first."""
    last = len(run.results.history)
    paths = [
        run.folder / (MODEL_FILE if r == last else f"{FINAL_MODELS_DIR}/{model_file(r)}")
        for r in run.results.final.window_rounds
    ]
    return [load_model_state(p) for p in paths]


def _averaged_per_device(window_states: list[dict[int, dict]]) -> dict[int, dict]:
    """Each device's deployed model as the average of its run's window models (devices of one
    run share one averaged state, as they share the run's models)."""
    averaged: dict[int, dict] = {}
    by_run: dict[tuple[int, ...], dict] = {}
    for device in window_states[0]:
        key = tuple(id(states[device]) for states in window_states)
        if key not in by_run:
            by_run[key] = average_states([states[device] for states in window_states])
        averaged[device] = by_run[key]
    return averaged


def _mean_over_window(per_model: list[list[DeviceResult]]) -> list[DeviceResult]:
    """Each device's accuracy averaged over the window's models."""
    return [
        replace(rows[0], accuracy=statistics.fmean(r.accuracy for r in rows))
        for rows in zip(*per_model, strict=True)
    ]


def _to_target(res: RunResults, tier: str, deployed_bits: int) -> Reached:
    """Rounds / simulated seconds until the tier's devices reached the target during training,
    when what they measured in training is what they deploy (not so for PTQ or FP32 runs)."""
    never = Reached(round=None, sim_seconds=None)
    measured = {d.bits for d in res.per_device if d.tier == tier}
    if measured != {deployed_bits}:
        return never
    return res.convergence.by_tier.get(tier, never)


@dataclass(frozen=True)
class ArmResult:
    """One arm at one seed: per-tier rows, its runs' curves, the deployed devices."""

    rows: list[ArmRow]
    curves: list[Curve]
    per_device: list[DeviceAccuracy]


def _deployed_by_tier(
    model_cfg: FederatedConfig,
    window_states: list[dict[int, dict]],
    averaged_states: dict[int, dict],
    deploy,
    choice: ModeChoice,
) -> tuple[list[DeviceResult], dict[str, float]]:
    """Devices' accuracy under one mode choice: each window model deployed (mean over the
    window, per device), and the window's average deployed as one model (per tier)."""
    devices = _mean_over_window(
        [evaluate_devices(model_cfg, states, deploy, choice=choice) for states in window_states]
    )
    averaged = evaluate_devices(model_cfg, averaged_states, deploy, choice=choice)
    return devices, accuracy_by_tier(averaged)


def compare_one(cfg: FederatedConfig, name: str, out: Path, simulate_fn) -> ArmResult:
    """Run one arm at one seed; per-tier rows (every deployment: as trained and window
    average, each at the policy's mode and at the best mode on local training data) and its
    accuracy curves."""
    arm = get_arm(name)
    window_states: list[dict[int, dict]] = []
    runs: list[FinishedRun] = []
    run_of_device: dict[int, RunResults] = {}
    for run_cfg, devices in arm.plan(cfg):
        run = _run(run_cfg, out, simulate_fn)
        for k, state in enumerate(_window_states(run)):
            if k == len(window_states):
                window_states.append({})
            window_states[k].update({d: state for d in devices})
        run_of_device.update({d: run.results for d in devices})
        runs.append(run)
    model_cfg = cfg.replace(**arm.changes)
    averaged_states = _averaged_per_device(window_states)
    devices, averaged = _deployed_by_tier(
        model_cfg, window_states, averaged_states, arm.deploy, ModeChoice.POLICY
    )
    best_devices, best_averaged = _deployed_by_tier(
        model_cfg, window_states, averaged_states, arm.deploy, ModeChoice.BEST_ON_TRAIN
    )
    best = accuracy_by_tier(best_devices)
    pooled, best_pooled = (
        accuracy_by_tier(
            evaluate_devices(
                model_cfg, averaged_states, arm.deploy, choice=c, statistics=Statistics.POOLED
            )
        )
        for c in (ModeChoice.POLICY, ModeChoice.BEST_ON_TRAIN)
    )
    costs = _per_device_costs(runs, cfg.num_clients)
    model = build_model_for(model_cfg)
    rows = []
    for tier, accuracy in accuracy_by_tier(devices).items():
        members = [d for d in devices if d.tier == tier]
        bits = members[0].bits
        reached = _to_target(run_of_device[members[0].client], tier, bits)
        rows.append(
            ArmRow(
                arm=name,
                seed=cfg.seed,
                tier=tier,
                bits=bits,
                accuracy=round(accuracy, 6),
                accuracy_window_average=round(averaged[tier], 6),
                accuracy_best_mode=round(best[tier], 6),
                accuracy_window_average_best_mode=round(best_averaged[tier], 6),
                accuracy_window_average_pooled_bn=round(pooled[tier], 6),
                accuracy_window_average_best_mode_pooled_bn=round(best_pooled[tier], 6),
                rounds_to_target=reached.round,
                sim_seconds_to_target=reached.sim_seconds,
                model_bytes=deployed_model_bytes(model, bits),
                bytes_per_round=round(statistics.mean(costs[d.client][0] for d in members)),
                sim_seconds_per_round=round(
                    statistics.mean(costs[d.client][1] for d in members), 4
                ),
            )
        )
    curves = [
        Curve(
            participants=str(r.results.config["participants"]),
            rounds=[h.round for h in r.results.history],
            sim_elapsed_seconds=[h.sim_elapsed_seconds for h in r.results.history],
            central_accuracy_by_bits=[h.central_accuracy_by_bits for h in r.results.history],
            accuracy_by_tier=[h.accuracy_by_tier for h in r.results.history],
        )
        for r in runs
    ]
    per_device = [DeviceAccuracy(**vars(d)) for d in devices]
    return ArmResult(rows, curves, per_device)


def _work(cfg: FederatedConfig, name: str) -> float:
    """Relative cost of a strategy's runs: rounds x devices trained per round."""
    return sum(
        run_cfg.rounds * max(1, math.ceil(run_cfg.fraction_train * len(run_cfg.participant_ids)))
        for run_cfg, _ in get_arm(name).plan(cfg)
    )


def _eta(started: float, done: float, total: float) -> str:
    """``(120s elapsed, ETA 300s)``: the remaining share of the work at the pace so far."""
    elapsed = time.perf_counter() - started
    if done <= 0 or elapsed < 1:
        return f" ({elapsed:.0f}s elapsed)"
    return f" ({elapsed:.0f}s elapsed, ETA {elapsed * (total - done) / done:.0f}s)"


def parse_seeds(text: str) -> list[int]:
    """``--seeds`` as a list: ``ValueError`` (one line) unless a comma list of integers."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r} is not a comma list of integers") from None
    if not seeds:
        raise ValueError("--seeds is empty; give e.g. 0,1,2")
    return seeds


def check_arms_and_seeds(arms: Sequence[str], seeds: Sequence[int]) -> None:
    """At least one arm and one seed, none given twice: a repeated seed would count one run
    as several in every mean and std (a one-seed result dressed as a multi-seed one)."""
    if not arms or not seeds:
        raise ValueError("a comparison needs at least one arm and one seed")
    for what, values in (("arm", arms), ("seed", seeds)):
        repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if repeated is not None:
            given = ",".join(str(v) for v in values)
            raise ValueError(
                f"{what} {repeated!r} is given twice ({what}s {given}); give each once"
            )


def check_comparison(cfg: FederatedConfig, arms: Sequence[str], seeds: Sequence[int]) -> None:
    """``ValueError`` (one line) unless every run each arm needs is valid at each seed: a
    comparison, or a sweep of them, fails before any work."""
    check_arms_and_seeds(arms, seeds)
    for name in arms:
        for seed in seeds:
            try:
                get_arm(name).plan(cfg.replace(seed=seed))
            except ValueError as err:
                raise ValueError(f"arm {name!r}: {err}") from None


def run_comparison(
    cfg: FederatedConfig,
    arms: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    simulate_fn: Callable[..., RunResults] | None = None,
    overwrite: bool = False,
) -> Comparison:
    """Every arm x seed; writes comparison.json/.csv and plots; returns the comparison.

    ``out`` is held for the comparison (:func:`~fedqdnn.federated.run_folder.claim`): one
    comparison at a time, a finished one replaced only with ``overwrite``. ``simulate_fn``
    (default :func:`~fedqdnn.federated.supervisor.simulate_supervised`) has the signature
    of :func:`~fedqdnn.federated.simulation.simulate`.
    """
    check_comparison(cfg, arms, seeds)
    with claim(Path(out), overwrite=overwrite):
        return _compare(cfg, arms, seeds, Path(out), simulate_fn)


def _compare(
    cfg: FederatedConfig,
    arms: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    simulate_fn: Callable[..., RunResults] | None,
) -> Comparison:
    if simulate_fn is None:  # each run in a supervised child: Ctrl-C ends it at once
        from fedqdnn.federated.supervisor import simulate_supervised as simulate_fn
    started = time.perf_counter()
    rows: list[ArmRow] = []
    curves: dict[str, list[Curve]] = {}
    devices: dict[str, list[DeviceAccuracy]] = {}
    jobs = [(seed, name) for seed in seeds for name in arms]
    work = [_work(cfg.replace(seed=seed), name) for seed, name in jobs]
    for i, ((seed, name), done) in enumerate(zip(jobs, itertools.accumulate(work), strict=True)):
        eta = _eta(started, done - work[i], sum(work))
        log.info("[%d/%d] %s seed %d%s", i + 1, len(jobs), name, seed, eta)
        part = compare_one(cfg.replace(seed=seed), name, out, simulate_fn)
        rows += part.rows
        curves[run_key(name, seed)] = part.curves
        devices[run_key(name, seed)] = part.per_device
    result = Comparison(
        rows=rows,
        curves=curves,
        per_device=devices,
        arms={n: ARMS[n].description for n in arms},
        seeds=list(seeds),
        distinct_seeds=len(set(seeds)),
        config=cfg.to_flat(),
        versions=versions(),
        wall_seconds=round(time.perf_counter() - started, 1),
    )
    write_comparison(out, result)
    return result


def write_comparison(out: Path, result: Comparison) -> None:
    """Plots, comparison.csv, then comparison.json (last: it marks a complete comparison)."""
    from simulations.compare_plots import plot_comparison

    plot_comparison(out, result)
    write_csv(out / COMPARISON_CSV, result.rows)
    write_json(out / COMPARISON_FILE, result.to_json())


def read_comparison(path: Path) -> Comparison:
    """comparison.json, checked: one-line ``ValueError`` naming what is missing or wrong."""
    return Comparison.model_validate(read_json_checked(path, Comparison))


def write_csv(path: Path, rows: Sequence[ArmRow]) -> None:
    """comparison.csv, one row per arm x seed x tier; atomic."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(row.model_dump() for row in rows)
    write_text_atomic(path, text.getvalue())


def _cells(result: Comparison, name: str, tier: str) -> list[ArmRow]:
    return [r for r in result.rows if r.arm == name and r.tier == tier]


def summary_table(result: Comparison, field: str = "accuracy") -> str:
    """Markdown: mean ± std accuracy (%) per tier and arm over seeds; each tier named
    with the mode it runs at its best (its top mode). ``field``: ``accuracy`` (the final
    window's models, each deployed, mean) or ``accuracy_window_average`` (their average
    deployed as one model), or either ``..._best_mode`` (each device at its best mode on its
    training data)."""
    tiers = list(dict.fromkeys(r.tier for r in result.rows))
    modes = [int(b) for b in str(result.config["bits"]).split(",")]
    header = ["arm", *(f"{t} ({get_profile(t).top_mode(modes)}-bit)" for t in tiers)]
    rows = []
    for name in result.arms:
        cells = [mean_std_cell([getattr(r, field) for r in _cells(result, name, t)]) for t in tiers]
        rows.append([name, *cells])
    return markdown_table(header, rows)


def convergence_table(result: Comparison) -> str:
    """Markdown: per tier and arm, the rounds (and simulated minutes) until the tier's
    devices first reached the target, mean over seeds; "–" where a seed never did (or where
    what devices measured in training is not what they deploy: PTQ, FP32 reference)."""
    tiers = list(dict.fromkeys(r.tier for r in result.rows))
    rows = []
    for name in result.arms:
        cells = []
        for tier in tiers:
            mine = _cells(result, name, tier)
            reached = [r for r in mine if r.rounds_to_target is not None]
            if not mine or len(reached) < len(mine):
                cells.append("–")
                continue
            rounds = statistics.fmean(r.rounds_to_target for r in reached)
            minutes = statistics.fmean(r.sim_seconds_to_target for r in reached) / 60
            cells.append(f"{rounds:.0f} ({minutes:.0f} min)")
        rows.append([name, *cells])
    target = result.config.get("target-accuracy")
    header = ["arm", *(f"{t}: rounds to {target:.0%}" if target else t for t in tiers)]
    return markdown_table(header, rows)


def final_window_rounds(result: Comparison) -> set[int]:
    """The evaluated rounds a comparison's final window spans (``final-average`` of them)."""
    cfg = from_flat(result.config)
    return set(final_window(cfg.rounds, cfg.evaluate_every, cfg.final_average))


def window_evaluations(
    result: Comparison, window: set[int], name: str, seed: int, tier: str
) -> list[float]:
    """A tier's evaluations during training in ``window`` of one arm at one seed; empty where
    no run of the arm evaluated that tier (an arm that deploys one tier's model elsewhere, as
    fp32-exclusive does)."""
    return [
        by_tier[tier]
        for curve in result.curves.get(run_key(name, seed), [])
        for rnd, by_tier in zip(curve.rounds, curve.accuracy_by_tier, strict=True)
        if rnd in window and tier in by_tier
    ]


def stability_table(result: Comparison) -> str:
    """Markdown, one row per arm and tier (percentage points): how steady the evaluated model
    (as trained, or the served average with ``serve-ema``) is over the final window — the
    largest drop of one evaluation below the window's mean (worst seed), the evaluations' std
    (mean over seeds) — and what deploying the window's models averaged into one gains over
    deploying them one by one (mean over seeds). A steadier curve usually leaves the average
    less to gain (docs/results.md §6)."""
    tiers = list(dict.fromkeys(r.tier for r in result.rows))
    window = final_window_rounds(result)  # once: parsing the config is not per cell
    rows = []
    for name in result.arms:
        for tier in tiers:
            windows = [
                w for s in result.seeds if (w := window_evaluations(result, window, name, s, tier))
            ]
            drop = f"{100 * max(map(largest_drop, windows)):.1f}" if windows else "–"
            spread = (
                f"{100 * statistics.fmean(statistics.pstdev(w) for w in windows):.1f}"
                if windows
                else "–"
            )
            gains = [
                r.accuracy_window_average - r.accuracy
                for r in _cells(result, name, tier)
                if r.accuracy_window_average is not None
            ]
            gain = f"{100 * statistics.fmean(gains):+.1f}" if gains else "–"
            rows.append([name, tier, drop, spread, gain])
    evaluated = evaluated_model(result.config)
    header = [
        "arm",
        "tier",
        f"{evaluated}: largest drop below the window mean (worst seed)",
        f"{evaluated}: window std (mean over seeds)",
        "window average − its models one by one (mean over seeds)",
    ]
    return markdown_table(header, rows)
