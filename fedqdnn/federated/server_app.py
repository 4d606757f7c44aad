"""Flower ServerApp: rounds of a strategy, central evaluation of every bit mode, results on disk.

A run is described by a :class:`RunSpec` (config, output folder, optional checkpoint to
resume, optional per-round hook). ``flwr run`` uses the module-level :data:`app`, which builds
the spec from ``context.run_config``; the in-process simulation runner builds its own app with
:func:`build_app` (its contexts carry no run config).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp

from fedqdnn.accelerator import model_device, select_device
from fedqdnn.config import FederatedConfig, ServerStrategy, from_flat
from fedqdnn.federated.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    CheckpointError,
    RunHistory,
    check_matches,
    save_checkpoint,
)
from fedqdnn.federated.report import (
    FINAL_MODELS_DIR,
    MODEL_FILE,
    build_results,
    save_model,
    write_results,
)
from fedqdnn.federated.run_folder import claim, run_identity
from fedqdnn.fleet import initial_model, run_data
from fedqdnn.models import QuantizableModel
from fedqdnn.policies import ServerOptimizer
from fedqdnn.round_plan import evaluation_rounds, final_window
from fedqdnn.training import evaluate
from strategies.fedavg import PlainFedAvg
from strategies.fedqdnn import FedQDNN
from strategies.protocol import NodeRoute
from strategies.protocol import ServerStrategy as StrategyProtocol
from strategies.records import to_state, to_torch_state
from strategies.server_step import ServerStep

OUT_DIR_KEY = "out-dir"
REPLY_TIMEOUT = 3600.0  # seconds to wait for a round's replies (as Strategy.start)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RoundEnd:
    """What the per-round hook learns when a round (round 0: the initial evaluation) ends."""

    server_round: int
    central_accuracy: dict[int, float]  # empty in rounds without evaluation
    seconds_since_start: float


@dataclass(frozen=True)
class RunSpec:
    """Everything one server run needs."""

    config: FederatedConfig
    out: Path
    resume: Checkpoint | None = None
    on_round_end: Callable[[RoundEnd], None] | None = None
    log: Callable[[str], None] = field(default=_log)
    # seconds between checks for replies; Flower's grids check every 0.1 s, the in-memory grid
    # of a simulation is cheap to ask more often (a round waits for replies twice)
    reply_poll_seconds: float = 0.1


def central_evaluator(cfg: FederatedConfig, model: QuantizableModel, log=_log):
    """Every bit mode of the global model on the held-out test set (on the model's device).

    Clients wait while the server evaluates, so the modes are evaluated at once, each on its
    own copy of the model in its own thread. Every forward pass still runs on one torch
    thread (the server's setting), so the accuracy is exactly that of one mode after another.
    """
    data = run_data(cfg)
    x_test, y_test = data.x_test.to(model_device(model)), data.y_test.to(model_device(model))
    copies = {bits: copy.deepcopy(model) for bits in cfg.bits}
    threads = min(len(copies), len(os.sched_getaffinity(0)))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> dict[int, float]:
        state = to_torch_state(arrays)

        def accuracy_at(bits: int) -> float:
            copies[bits].load_state_dict(state)
            return evaluate(copies[bits], x_test, y_test, bits)[0]

        with ThreadPoolExecutor(threads) as pool:
            accuracy = dict(zip(cfg.bits, pool.map(accuracy_at, cfg.bits), strict=True))
        shown = "  ".join(f"{b}-bit {a:.3f}" for b, a in accuracy.items())
        log(f"round {server_round}/{cfg.rounds}: central accuracy {shown}")
        return accuracy

    return evaluate_fn


def _central_metrics(accuracy: dict[int, float]) -> dict[str, float]:
    return {f"accuracy-bits{b}": a for b, a in accuracy.items()}


def make_strategy(cfg: FederatedConfig) -> StrategyProtocol:
    """FedQDNN, or Flower's plain FedAvg (identical reply keys only, e.g. uniform-fp32)."""
    if cfg.server_strategy == ServerStrategy.FEDAVG:
        return PlainFedAvg(cfg.num_nodes, cfg.fraction_train, cfg.fraction_evaluate)
    step = (
        None
        if cfg.server_optimizer == ServerOptimizer.NONE
        else ServerStep(cfg.server_optimizer, cfg.server_lr, cfg.server_momentum)
    )
    return FedQDNN(
        cfg.num_nodes,
        cfg.fraction_train,
        cfg.fraction_evaluate,
        cfg.seed,
        cfg.bits,
        shared_weighting=cfg.shared_weighting,
        mode_state_decay=cfg.mode_state_decay,
        server_step=step,
    )


def node_route(grid: Grid, cfg: FederatedConfig) -> NodeRoute:
    """How devices reach nodes: a pool of interchangeable nodes, or (``max-nodes = 0``) each
    device's own node, found by asking every node for its partition id."""
    devices = tuple(sorted(cfg.participant_ids))
    if cfg.pooled:
        return NodeRoute(devices, pool=tuple(sorted(grid.get_node_ids())))
    return NodeRoute(devices, bound=discover_partitions(grid, cfg))


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


def exchange(grid: Grid, messages: Iterable[Message], poll_seconds: float) -> list[Message]:
    """Send ``messages`` and wait for every reply, checking every ``poll_seconds`` (what
    ``Grid.send_and_receive`` does at a fixed 0.1 s)."""
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + REPLY_TIMEOUT
    replies: list[Message] = []
    while pending and time.monotonic() < deadline:
        arrived = list(grid.pull_messages(pending))
        replies += arrived
        pending -= {m.metadata.reply_to_message_id for m in arrived}
        if pending:
            time.sleep(poll_seconds)
    return replies


def _restore(
    cfg: FederatedConfig, checkpoint: Checkpoint, model: QuantizableModel
) -> tuple[ArrayRecord, RunHistory, int]:
    """Global arrays, history and next round from a checkpoint, checked against the model."""
    if from_flat(checkpoint.config) != cfg:
        raise CheckpointError("checkpoint config differs from this run's config")
    reference = {k: v.cpu().numpy() for k, v in model.state_dict().items()}
    check_matches(checkpoint.arrays, reference)
    arrays = checkpoint.arrays
    record = ArrayRecord({k: Array(np.require(arrays[k], requirements="C")) for k in reference})
    return record, checkpoint.history, checkpoint.round + 1


def run_server(grid: Grid, spec: RunSpec) -> dict:
    """Run every round on ``grid`` (checkpointing as configured); write results and plots.

    A resumed run continues after its checkpoint's round and ends exactly as an
    uninterrupted run would.
    """
    cfg, out, log = spec.config, spec.out, spec.log
    started = time.perf_counter()
    torch.set_num_threads(1)
    model = initial_model(cfg)
    strategy = make_strategy(cfg)
    arrays = ArrayRecord(model.state_dict())
    evaluate_fn = central_evaluator(cfg, model.to(select_device(cfg.device)), log)
    history, first = RunHistory(), 1
    if spec.resume is not None:
        arrays, history, first = _restore(cfg, spec.resume, model)
        strategy.load_state_dict(spec.resume.strategy, spec.resume.strategy_arrays)
        log(f"resuming after round {first - 1}")
    strategy.bind_nodes(node_route(grid, cfg))

    def central(server_round: int) -> dict[int, float]:
        accuracy = evaluate_fn(server_round, arrays)
        history.evaluate_metrics_serverapp[server_round] = _central_metrics(accuracy)
        return accuracy

    def round_ended(server_round: int, accuracy: dict[int, float]) -> None:
        if spec.on_round_end is not None:
            spec.on_round_end(RoundEnd(server_round, accuracy, time.perf_counter() - started))

    if first == 1:
        round_ended(0, central(0))
    evaluated = set(evaluation_rounds(cfg.rounds, cfg.evaluate_every))
    window = final_window(cfg.rounds, cfg.evaluate_every, cfg.final_average)
    flat = cfg.to_flat()  # sent with every instruction: clients need no run config
    for rnd in range(first, cfg.rounds + 1):
        round_start = time.perf_counter()
        instructions = strategy.configure_train(rnd, arrays, ConfigRecord(flat), grid)
        replies = exchange(grid, instructions, spec.reply_poll_seconds)
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
        accuracy: dict[int, float] = {}
        if rnd in evaluated:
            instructions = strategy.configure_evaluate(rnd, arrays, ConfigRecord(flat), grid)
            federated = strategy.aggregate_evaluate(
                rnd, exchange(grid, instructions, spec.reply_poll_seconds)
            )
            if federated is not None:
                history.evaluate_metrics_clientapp[rnd] = dict(federated)
            accuracy = central(rnd)
        if rnd in window and rnd != cfg.rounds:  # the last round's model is model.safetensors
            save_model(out / FINAL_MODELS_DIR / f"model-round{rnd}.safetensors", arrays, cfg)
        history.round_seconds[rnd] = round(time.perf_counter() - round_start, 3)
        round_ended(rnd, accuracy)
        if cfg.checkpoint_every and (rnd % cfg.checkpoint_every == 0 or rnd == cfg.rounds):
            save_checkpoint(
                out / CHECKPOINT_DIR,
                rnd,
                to_state(arrays),
                history,
                *strategy.state_dict(),
                cfg.to_flat(),
            )
    results = build_results(cfg, strategy.rounds, history, time.perf_counter() - started)
    save_model(out / MODEL_FILE, arrays, cfg)
    write_results(out, results)  # last: results.json marks a finished run
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


def build_app(spec: RunSpec) -> ServerApp:
    """A ServerApp that runs ``spec`` (for the in-process simulation runner)."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        wait_for_nodes(grid, spec.config.num_nodes)
        run_server(grid, spec)

    return server_app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run``: the spec comes from the run config."""
    flat = dict(context.run_config)
    out = Path(str(flat.pop(OUT_DIR_KEY, "outputs/flwr-run")))
    spec = RunSpec(from_flat(flat), out)
    # one run per folder, never over a finished one (fedqdnn.federated.run_folder)
    with claim(out, identity=run_identity(spec.config, run_data(spec.config).fingerprint)):
        wait_for_nodes(grid, spec.config.num_nodes)
        run_server(grid, spec)
