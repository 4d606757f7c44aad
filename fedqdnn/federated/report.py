"""Results of a federated run: results.json (with config, seed, versions); plots drawn by
:mod:`fedqdnn.federated.report_plots`."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedqdnn.config import FederatedConfig
from fedqdnn.convergence import (
    first_reaching,
    mean_by_key,
    simulated_round_seconds,
    window_mean,
)
from fedqdnn.federated.checkpoint import RunHistory
from fedqdnn.federated.report_plots import plot_results
from fedqdnn.files import read_json_checked, write_bytes_atomic, write_json
from fedqdnn.provenance import versions
from fedqdnn.round_plan import final_window
from fedqdnn.schema import (
    ACCURACY,
    RESULTS_FILE,
    TRAIN_LOSS,
    Convergence,
    DeclaredDevice,
    DeviceAccuracy,
    EvaluationRow,
    FinalAccuracy,
    LastRound,
    Reached,
    RoundRecord,
    RoundResult,
    RunResults,
    mode_accuracies,
    tier_accuracies,
)


def save_model(path: Path, state: Mapping[str, np.ndarray], cfg: FederatedConfig) -> None:
    """A global model as safetensors (never pickle), config in the metadata; atomic."""
    from safetensors.numpy import save

    tensors = {k: np.require(v, requirements="C") for k, v in state.items()}
    write_bytes_atomic(path, save(tensors, metadata={"config": json.dumps(cfg.to_flat())}))


def load_model_state(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors model file (no code execution)."""
    from safetensors.numpy import load_file

    return load_file(str(path))


def build_results(
    cfg: FederatedConfig,
    rounds: dict[int, RoundRecord],
    result: RunHistory,
    wall_seconds: float,
    declared: list[DeclaredDevice] | None = None,
) -> RunResults:
    """Assemble results.json from the strategy's round records (empty for Flower's FedAvg,
    which keeps none) and the run history.

    ``final`` holds means over the last ``final-average`` evaluations (``window_rounds``);
    ``last_round`` the single final evaluation; ``convergence`` the first evaluated round
    and simulated time at which each tier (device accuracy) and each mode (central accuracy)
    reached ``target-accuracy``.
    """
    central = result.evaluate_metrics_serverapp
    federated = result.evaluate_metrics_clientapp
    train = result.train_metrics_clientapp
    history = []
    elapsed = 0.0
    for rnd in range(1, cfg.rounds + 1):
        record = rounds.get(rnd, RoundRecord())
        fed = federated.get(rnd, {})
        sim_round = simulated_round_seconds(
            [c.sim_seconds for c in record.train if c.sim_seconds is not None],
            sum(d.status == "straggler" for d in record.dropped),
            cfg.deadline_seconds,
        )
        elapsed += sim_round
        history.append(
            RoundResult(
                round=rnd,
                central_accuracy_by_bits=mode_accuracies(central.get(rnd, {})),
                federated_accuracy=float(fed[ACCURACY]) if ACCURACY in fed else None,
                accuracy_by_tier=tier_accuracies(fed),
                train_loss=train.get(rnd, {}).get(TRAIN_LOSS),
                num_trained=len(record.train) if rnd in rounds else None,
                num_rejected=len(record.rejected),
                num_dropped=len(record.dropped),
                round_seconds=result.round_seconds.get(rnd),
                sim_round_seconds=round(sim_round, 6),
                sim_elapsed_seconds=round(elapsed, 6),
                deadline_seconds=cfg.deadline_seconds,
                clients=record.train,
                rejected=record.rejected,
                dropped=record.dropped,
            )
        )
    window = final_window(cfg.rounds, cfg.evaluate_every, cfg.final_average)
    in_window = [history[r - 1] for r in window]
    return RunResults(
        final=FinalAccuracy(
            accuracy_by_bits=mean_by_key([h.central_accuracy_by_bits for h in in_window]),
            accuracy_by_tier=mean_by_key([h.accuracy_by_tier for h in in_window]),
            federated_accuracy=window_mean([h.federated_accuracy for h in in_window]),
            window_rounds=window,
        ),
        last_round=LastRound(
            accuracy_by_bits=history[-1].central_accuracy_by_bits,
            accuracy_by_tier=history[-1].accuracy_by_tier,
        ),
        convergence=_convergence(cfg, history),
        initial_accuracy_by_bits=mode_accuracies(central.get(0, {})),
        per_device=_per_device([rounds.get(r) for r in window]),
        history=history,
        config=cfg.to_flat(),
        seed=cfg.seed,
        versions=versions(),
        wall_seconds=round(wall_seconds, 2),
        untrained_modes=list(
            cfg.untrained_modes() if declared is None else declared_untrained_modes(cfg, declared)
        ),
        declared_devices=declared,
    )


def declared_untrained_modes(
    cfg: FederatedConfig, declared: list[DeclaredDevice]
) -> tuple[int, ...]:
    """The model's modes no declared device was planned to train."""
    trained = {b for d in declared for b in d.planned_modes}
    return tuple(b for b in cfg.bits if b not in trained)


def _per_device(records: list[RoundRecord | None]) -> list[DeviceAccuracy]:
    """Each device's accuracy: the mean over the window's evaluations that included it."""
    rows: dict[int, list[EvaluationRow]] = {}
    for record in records:
        for e in record.evaluation if record else []:
            rows.setdefault(e.partition_id, []).append(e)
    return [
        DeviceAccuracy(
            client=pid,
            tier=evals[-1].tier,
            bits=evals[-1].bits,
            accuracy=statistics.fmean(e.accuracy for e in evals),
            num_examples=evals[-1].num_examples,
        )
        for pid, evals in sorted(rows.items())
    ]


def _convergence(cfg: FederatedConfig, history: list[RoundResult]) -> Convergence:
    """First evaluated round / simulated time reaching the target, per tier and per mode."""
    target = cfg.target_accuracy

    def first(series) -> Reached:
        by_round = [(h.round, series(h)) for h in history]
        by_time = [(h.sim_elapsed_seconds, series(h)) for h in history]
        return Reached(
            round=first_reaching(by_round, target), sim_seconds=first_reaching(by_time, target)
        )

    tiers = sorted({t for h in history for t in h.accuracy_by_tier})
    modes = sorted({b for h in history for b in h.central_accuracy_by_bits}, key=int)
    return Convergence(
        target_accuracy=target,
        by_tier={t: first(lambda h, t=t: h.accuracy_by_tier.get(t)) for t in tiers},
        by_bits={b: first(lambda h, b=b: h.central_accuracy_by_bits.get(b)) for b in modes},
    )


def write_results(out: Path, results: RunResults) -> None:
    """results.json plus the plots of :mod:`fedqdnn.federated.report_plots`."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULTS_FILE, results.to_json())
    plot_results(out, results)


def read_results(path: Path) -> RunResults:
    """results.json, checked: one-line ``ValueError`` naming what is missing or wrong."""
    return RunResults.model_validate(read_json_checked(path, RunResults))
