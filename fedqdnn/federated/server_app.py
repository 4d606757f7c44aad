"""Flower ServerApp: FedQDNN rounds, central evaluation of every bit mode, results on disk.

Under ``flwr run`` the configuration comes from ``context.run_config``
(``[tool.flwr.app.config]`` + ``--run-config``); under the in-process simulation runner
(:mod:`fedqdnn.federated.simulation`), whose contexts carry no run config, it is handed
over through :data:`PENDING_RUN` in this same process.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedqdnn.data import DatasetSplits, load_dataset
from fedqdnn.federated.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    RunHistory,
    check_matches,
    save_checkpoint,
)
from fedqdnn.federated.config import FederatedConfig, from_flat
from fedqdnn.federated.report import MODEL_FILE, build_results, save_model, write_results
from fedqdnn.models import QuantizableModel, build_model
from fedqdnn.training import evaluate
from strategies.fedqdnn import FedQDNN, RoundRecord

app = ServerApp()
PENDING_RUN: dict[str, object] = {}
OUT_DIR_KEY = "out-dir"
REPLY_TIMEOUT = 3600.0  # seconds to wait for a round's replies (as Strategy.start)


def federated_data(cfg: FederatedConfig) -> DatasetSplits:
    """The run's data set (cached per process)."""
    return load_dataset(
        cfg.dataset,
        data_root=cfg.data_root or None,
        num_samples=cfg.num_samples or None,
        data_seed=cfg.data_seed,
    )


def initial_model(cfg: FederatedConfig) -> QuantizableModel:
    """The global model at round 0, reproducible from the seed."""
    data = federated_data(cfg)
    torch.manual_seed(cfg.seed)
    return build_model(
        cfg.model_name,
        cfg.bits,
        data.num_classes,
        data.in_channels,
        bit_specific_bn=cfg.bit_specific_bn,
        learnable_clip=cfg.learnable_clip,
    )


def central_evaluator(cfg: FederatedConfig, model: QuantizableModel, log=print):
    """evaluate_fn for Strategy.start: every bit mode on the held-out test set."""
    data = federated_data(cfg)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        accuracy = {b: evaluate(model, data.x_test, data.y_test, b)[0] for b in cfg.bits}
        shown = "  ".join(f"{b}-bit {a:.3f}" for b, a in accuracy.items())
        log(f"round {server_round}/{cfg.rounds}: central accuracy {shown}")
        return MetricRecord({f"accuracy-bits{b}": a for b, a in accuracy.items()})

    return evaluate_fn


def make_strategy(cfg: FederatedConfig) -> FedAvg:
    """FedQDNN, or Flower's plain FedAvg (identical reply keys only, e.g. uniform-fp32)."""
    if cfg.server_strategy == "fedavg":
        nodes = cfg.num_nodes
        return FedAvg(
            fraction_train=cfg.fraction_train,
            fraction_evaluate=cfg.fraction_evaluate,
            min_train_nodes=max(1, math.ceil(cfg.fraction_train * nodes)),
            min_evaluate_nodes=max(1, math.ceil(cfg.fraction_evaluate * nodes)),
            min_available_nodes=nodes,
        )
    return FedQDNN(cfg.num_nodes, cfg.fraction_train, cfg.fraction_evaluate, cfg.seed, cfg.bits)


def discover_partitions(grid: Grid, cfg: FederatedConfig) -> dict[int, int]:
    """partition id -> node id, asked once from every node (node IDs are random per run)."""
    nodes = list(grid.get_node_ids())
    queries = [
        Message(content=RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes
    ]
    mapping = {}
    for reply in grid.send_and_receive(queries, timeout=REPLY_TIMEOUT):
        if reply.has_error():
            raise RuntimeError(f"a node failed to identify itself: {reply.error.reason[-300:]}")
        index = int(reply.content["info"]["partition-id"])
        mapping[cfg.participant_ids[index]] = reply.metadata.src_node_id
    return mapping


def _restore(
    cfg: FederatedConfig, payload: dict, arrays: dict, model: QuantizableModel, strategy
) -> tuple[ArrayRecord, RunHistory, int]:
    """Global arrays, history and next round from a checkpoint, checked against the model."""
    if from_flat(payload["config"]) != cfg:
        raise CheckpointError("checkpoint config differs from this run's config")
    reference = {k: v.numpy() for k, v in model.state_dict().items()}
    check_matches(arrays, reference)
    if isinstance(strategy, FedQDNN):
        strategy.rounds = {int(r): RoundRecord(**v) for r, v in payload["strategy_rounds"].items()}
    record = ArrayRecord({k: Array(np.require(arrays[k], requirements="C")) for k in reference})
    return record, RunHistory.from_json(payload["history"]), int(payload["round"]) + 1


def run_server(
    grid: Grid, cfg: FederatedConfig, out: Path, log=print, resume: tuple[dict, dict] | None = None
) -> dict:
    """Run every round on ``grid`` (checkpointing as configured); write results and plots.

    ``resume`` is a loaded checkpoint (state.json content, model arrays): the run continues
    after its round and ends exactly as an uninterrupted run would.
    """
    started = time.perf_counter()
    torch.set_num_threads(1)
    model = initial_model(cfg)
    strategy = make_strategy(cfg)
    evaluate_fn = central_evaluator(cfg, model, log)
    arrays = ArrayRecord(model.state_dict())
    history, first = RunHistory(), 1
    if resume is not None:
        arrays, history, first = _restore(cfg, *resume, model, strategy)
        log(f"resuming after round {first - 1}")
    if isinstance(strategy, FedQDNN):
        strategy.node_of_partition = discover_partitions(grid, cfg)
    if first == 1:
        history.evaluate_metrics_serverapp[0] = dict(evaluate_fn(0, arrays))
    for rnd in range(first, cfg.rounds + 1):
        round_start = time.perf_counter()
        instructions = strategy.configure_train(rnd, arrays, ConfigRecord(cfg.to_flat()), grid)
        replies = grid.send_and_receive(instructions, timeout=REPLY_TIMEOUT)
        replies = list(replies)
        if replies and all(r.has_error() for r in replies):
            raise RuntimeError(
                f"every client failed in round {rnd}; first error: "
                f"{replies[0].error.reason.strip().splitlines()[-1][:300]}"
            )
        new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        if new_arrays is not None:
            arrays = new_arrays
        if train_metrics is not None:
            history.train_metrics_clientapp[rnd] = dict(train_metrics)
        instructions = strategy.configure_evaluate(rnd, arrays, ConfigRecord(cfg.to_flat()), grid)
        federated = strategy.aggregate_evaluate(
            rnd, grid.send_and_receive(instructions, timeout=REPLY_TIMEOUT)
        )
        if federated is not None:
            history.evaluate_metrics_clientapp[rnd] = dict(federated)
        history.evaluate_metrics_serverapp[rnd] = dict(evaluate_fn(rnd, arrays))
        history.round_seconds[rnd] = round(time.perf_counter() - round_start, 3)
        if cfg.checkpoint_every and (rnd % cfg.checkpoint_every == 0 or rnd == cfg.rounds):
            rounds = {r: asdict(v) for r, v in getattr(strategy, "rounds", {}).items()}
            save_checkpoint(
                out / CHECKPOINT_DIR,
                rnd,
                {k: v.numpy() for k, v in arrays.items()},
                history,
                rounds,
                cfg.to_flat(),
            )
    results = build_results(cfg, strategy, history, time.perf_counter() - started)
    write_results(out, results)
    save_model(out / MODEL_FILE, arrays, cfg)
    return results


def wait_for_nodes(grid: Grid, expected: int, timeout: float = 60.0) -> None:
    """Block until ``expected`` SuperNodes are connected; fail in one line if they never are
    (e.g. ``num-clients`` larger than the federation's ``num-supernodes``)."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = len(list(grid.get_node_ids()))
        if count >= expected:
            return
        time.sleep(0.5)
    raise ValueError(
        f"num-clients = {expected} but only {count} SuperNodes connected within {timeout:.0f}s; "
        f"start the federation with --federation-config 'num-supernodes={expected}'"
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for both ``flwr run`` and the in-process simulation runner."""
    resume = None
    if context.run_config:
        flat = dict(context.run_config)
        out = Path(str(flat.pop(OUT_DIR_KEY, "outputs/flwr-run")))
        cfg = from_flat(flat)
    else:
        cfg = PENDING_RUN["config"]  # type: ignore[assignment]
        out = Path(str(PENDING_RUN["out"]))
        resume = PENDING_RUN.get("resume")  # type: ignore[assignment]
    wait_for_nodes(grid, cfg.num_nodes)
    run_server(grid, cfg, out, _log, resume)
