"""Flower ServerApp: rounds of a strategy, central evaluation of every bit mode, results on disk.

A run is described by a :class:`RunSpec` (config, output folder, optional checkpoint to
resume, optional per-round hook). ``flwr run`` uses the module-level :data:`app`, which builds
the spec from ``context.run_config``; the in-process simulation runner builds its own app with
:func:`build_app` (its contexts carry no run config).

Progress goes to this module's logger (:mod:`fedqdnn.console`): per round the central
accuracy, and warnings for the replies excluded and the devices dropped, all from the
strategy's round record (:func:`round_warnings`).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp

from fedqdnn.accelerator import model_device, select_device
from fedqdnn.config import Aggregation, FederatedConfig, FleetSource, from_flat
from fedqdnn.console import setup_console
from fedqdnn.deployment import average_states, exponential_average
from fedqdnn.federated.checkpoint import (
    Checkpoint,
    RunHistory,
    save_checkpoint,
)
from fedqdnn.federated.report import build_results, load_model_state, save_model, write_results
from fedqdnn.federated.run_folder import claim, run_identity
from fedqdnn.fleet import initial_model, run_data
from fedqdnn.models import QuantizableModel
from fedqdnn.node_declaration import check_fleet_declarations, declared_profile, planned_modes
from fedqdnn.policies import ServerOptimizer
from fedqdnn.round_plan import evaluation_rounds, final_window
from fedqdnn.sampling import sampling_strata
from fedqdnn.schema import (
    CHECKPOINT_DIR,
    CONFIG,
    DECLARATION,
    FINAL_MODELS_DIR,
    INFO,
    MODEL_FILE,
    WINDOW_AVERAGE_MODEL_FILE,
    ClientRow,
    Declaration,
    DeclaredDevice,
    Identity,
    Rejection,
    RoundRecord,
    mode_accuracy_key,
    model_file,
)
from fedqdnn.training import evaluate
from strategies.fedavg import PlainFedAvg
from strategies.fedqdnn import FedQDNN
from strategies.protocol import NodeRoute, ServerStrategy
from strategies.records import to_arrayrecord, to_state, to_torch_state
from strategies.server_step import ServerStep

OUT_DIR_KEY = "out-dir"
REPLY_TIMEOUT = 3600.0  # seconds to wait for a round's replies (as Strategy.start)
NAMED_PARTITIONS = 6  # a warning names at most this many partitions, then "..."

log = logging.getLogger(__name__)


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
    # seconds between checks for replies; Flower's grids check every 0.1 s, the in-memory grid
    # of a simulation is cheap to ask more often (a round waits for replies twice)
    reply_poll_seconds: float = 0.1


def central_evaluator(cfg: FederatedConfig, model: QuantizableModel):
    """Every bit mode of the global model on the held-out test set (on the model's device).

    Clients wait while the server evaluates, so the modes are evaluated at once, each on its
    own copy of the model in its own thread. Every forward pass still runs on one torch
    thread (the server's setting), so the accuracy is exactly that of one mode after another.
    """
    data = run_data(cfg)
    x_test, y_test = data.x_test.to(model_device(model)), data.y_test.to(model_device(model))
    copies = {bits: copy.deepcopy(model) for bits in cfg.bits}
    # torch imports some modules on first use; do that here, not in several threads at once
    # (a concurrent first import has failed with a partially initialised torch._inductor)
    for bits, replica in copies.items():
        evaluate(replica, x_test[:2], y_test[:2], bits)
    threads = min(len(copies), len(os.sched_getaffinity(0)))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> dict[int, float]:
        state = to_torch_state(arrays)

        def accuracy_at(bits: int) -> float:
            copies[bits].load_state_dict(state)
            return evaluate(copies[bits], x_test, y_test, bits)[0]

        with ThreadPoolExecutor(threads) as pool:
            accuracy = dict(zip(cfg.bits, pool.map(accuracy_at, cfg.bits), strict=True))
        shown = "  ".join(f"{b}-bit {a:.3f}" for b, a in accuracy.items())
        log.info("round %d/%d: central accuracy %s", server_round, cfg.rounds, shown)
        return accuracy

    return evaluate_fn


def _central_metrics(accuracy: dict[int, float]) -> dict[str, float]:
    return {mode_accuracy_key(b): a for b, a in accuracy.items()}


def round_warnings(rnd: int, cfg: FederatedConfig, record: RoundRecord | None) -> list[str]:
    """What a user must know of round ``rnd`` beyond its accuracy, from its record: the
    replies excluded (one line per reason, naming the partitions) and the devices dropped
    (one line per status: offline, or stragglers cut by the deadline). None when the
    strategy keeps no records (Flower's FedAvg)."""
    if record is None:
        return []
    where = f"round {rnd}/{cfg.rounds}"
    lines = []
    for reason, pids in _grouped(record.rejected, lambda r: _concise_reason(r.reason)).items():
        lines.append(f"{where}: excluded {_count(pids, 'reply', 'replies')}: {reason}")
    for status, pids in _grouped(record.dropped, lambda r: str(r.status)).items():
        if status == "straggler":
            cut = f"cut by the {cfg.deadline_seconds:g} s deadline"
            lines.append(f"{where}: dropped {_count(pids, 'straggler', 'stragglers')} {cut}")
        else:
            lines.append(
                f"{where}: dropped {_count(pids, f'{status} device', f'{status} devices')}"
            )
    return lines


def _grouped(rows: list[ClientRow] | list[Rejection], label: Callable) -> dict[str, list]:
    """Partition ids of ``rows`` by their label, in order of first appearance."""
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(label(row), []).append(row.partition_id)
    return groups


def _count(pids: list, one: str, many: str) -> str:
    """``1 reply (partition 4)``, ``2 replies (partitions 5, 7)``, ``9 replies (partitions
    0, 1, 2, 3, 4, 5, ...)``: the count, and the partitions while they are few."""
    named = ", ".join("?" if p is None else str(p) for p in pids[:NAMED_PARTITIONS])
    if len(pids) == 1:
        return f"1 {one} (partition {named})"
    more = ", ..." if len(pids) > NAMED_PARTITIONS else ""
    return f"{len(pids)} {many} (partitions {named}{more})"


def _concise_reason(reason: object) -> str:
    """A reason in one line: a client error keeps its code and the last line of Flower's
    wrapped traceback, whose tail is the ClientApp's message."""
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else "?"
    head = lines[0].split(":", 1)[0]  # "client error 2"
    tail = lines[-1].rsplit("Message: ", 1)[-1].removesuffix("'>")
    return f"{head}: {tail}"


def client_error_text(reason: str) -> str:
    """The ClientApp's own message from Flower's error reason (``<class 'ValueError'>:<'...'>``
    in 1.42), else the reason in one line."""
    match = re.fullmatch(r"<class '[\w.]+'>:<'(.*)'>", reason.strip(), flags=re.DOTALL)
    return match.group(1) if match else _concise_reason(reason)


def make_strategy(cfg: FederatedConfig) -> ServerStrategy:
    """FedQDNN, or Flower's plain FedAvg (identical reply keys only, e.g. uniform-fp32)."""
    if cfg.aggregation == Aggregation.FEDAVG:
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


def node_route(grid: Grid, cfg: FederatedConfig) -> tuple[NodeRoute, list[DeclaredDevice] | None]:
    """How devices reach nodes: a pool of interchangeable nodes, or (``max-nodes = 0``) each
    device's own node, found by asking every node for its partition id, or (``fleet =
    "declared"``) each node is the device it declares; then also the declarations."""
    if cfg.fleet == FleetSource.DECLARED:
        return discover_declared_fleet(grid, cfg)
    devices = tuple(sorted(cfg.participant_ids))
    strata = sampling_strata(cfg)
    if cfg.pooled:
        return NodeRoute(devices, pool=tuple(sorted(grid.get_node_ids())), strata=strata), None
    return NodeRoute(devices, bound=discover_partitions(grid, cfg), strata=strata), None


def discover_declared_fleet(
    grid: Grid, cfg: FederatedConfig
) -> tuple[NodeRoute, list[DeclaredDevice]]:
    """Ask every node what device it is (fedqdnn.node_declaration); check the fleet and plan
    each device's modes from its declared hardware. A bad or conflicting declaration fails
    the run here, in one line naming the node and the key."""
    nodes = sorted(grid.get_node_ids())
    if len(nodes) != cfg.num_clients:
        raise ValueError(
            f"{len(nodes)} SuperNodes are connected but num-clients = {cfg.num_clients}; with "
            "fleet = 'declared' every SuperNode is one device: allowed: num-clients = the "
            "number of SuperNodes"
        )
    replies = ask_every_node(grid, nodes, RecordDict({CONFIG: ConfigRecord(cfg.to_flat())}))
    declarations = {
        node: Declaration.model_validate_json(str(content[INFO][DECLARATION]))
        for node, content in replies.items()
    }
    missing = sorted(set(nodes) - set(declarations))
    if missing:
        raise ValueError(f"SuperNodes {missing} did not declare themselves within the timeout")
    data = run_data(cfg)
    device_nodes = check_fleet_declarations(cfg, declarations, data.num_classes, data.input_shape)
    profiles = {device: declared_profile(declarations[n]) for device, n in device_nodes.items()}
    plans = planned_modes(cfg, profiles)
    devices = [
        DeclaredDevice(
            **declarations[node].model_dump(),
            device_id=device,
            node_id=node,
            planned_modes=list(plans[device]),
        )
        for device, node in sorted(device_nodes.items())
    ]
    for d in devices:
        log.info(
            "device %d = SuperNode %d: %s, %s (%d train / %d test examples), trains modes %s",
            d.device_id, d.node_id, d.device_name, d.hardware, d.train_examples,
            d.test_examples, d.planned_modes,
        )  # fmt: skip
    route = NodeRoute(
        tuple(sorted(device_nodes)),
        bound=device_nodes,
        modes=plans,
        strata=sampling_strata(cfg, plans),
    )
    return route, devices


def ask_every_node(grid: Grid, nodes: list[int], content: RecordDict) -> dict[int, RecordDict]:
    """Each node's answer to one query (node id -> reply content); a node that answers with an
    error fails the run in one line naming it and the ClientApp's message."""
    messages = [
        Message(content=content, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes
    ]
    answers = {}
    for reply in grid.send_and_receive(messages, timeout=REPLY_TIMEOUT):
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise ValueError(f"SuperNode {node}: {client_error_text(reply.error.reason)}")
        answers[node] = reply.content
    return answers


def discover_partitions(grid: Grid, cfg: FederatedConfig) -> dict[int, int]:
    """partition id -> node id, asked once from every node (node IDs are random per run).
    A node whose partition-id is out of range, or given twice, fails the run in one line."""
    participants = cfg.participant_ids
    mapping: dict[int, int] = {}
    for node, content in ask_every_node(grid, list(grid.get_node_ids()), RecordDict()).items():
        index = Identity.model_validate(dict(content[INFO])).partition_id
        if not 0 <= index < len(participants):
            raise ValueError(
                f"SuperNode {node}: partition-id = {index} is out of range; allowed: "
                f"0..{len(participants) - 1} (one per participating device)"
            )
        device = participants[index]
        if device in mapping:
            raise ValueError(
                f"SuperNodes {mapping[device]} and {node} both declare partition-id = {index}; "
                "allowed: one node per partition-id"
            )
        mapping[device] = node
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
    checkpoint: Checkpoint, model: QuantizableModel
) -> tuple[ArrayRecord, RunHistory, int]:
    """Global arrays (in the model's key order), history and next round of a checkpoint that
    :func:`~fedqdnn.federated.simulation.prepare` checked against the run and the model."""
    record = to_arrayrecord({k: checkpoint.arrays[k] for k in model.state_dict()})
    return record, checkpoint.history, checkpoint.round + 1


class Served:
    """The model the server serves: the latest aggregate, or with ``serve-ema`` > 0 the
    exponential average of the aggregates since round 1 (:func:`exponential_average`). What
    is evaluated, kept in the final window and deployed; training goes on from the aggregate.
    ``ema``: the average so far (None before round 1 and without ``serve-ema``), resumed from
    a checkpoint."""

    def __init__(self, decay: float, resumed: dict | None = None) -> None:
        self.decay = decay
        self.ema: dict | None = dict(resumed) if decay and resumed else None

    def update(self, arrays: ArrayRecord) -> None:
        """Fold the round's aggregate into the average."""
        if not self.decay:
            return
        latest = {k: np.array(v) for k, v in to_state(arrays).items()}
        self.ema = latest if self.ema is None else exponential_average(self.ema, latest, self.decay)

    def state(self, arrays: ArrayRecord) -> dict:
        """The served model's arrays, given the round's aggregate ``arrays``."""
        return to_state(arrays) if self.ema is None else self.ema

    def record(self, arrays: ArrayRecord) -> ArrayRecord:
        """The served model as an ArrayRecord (``arrays`` itself without an average)."""
        return arrays if self.ema is None else to_arrayrecord(self.ema)


def run_server(grid: Grid, spec: RunSpec) -> dict:
    """Run every round on ``grid`` (checkpointing as configured); write results and plots.

    A resumed run continues after its checkpoint's round and ends exactly as an
    uninterrupted run would.
    """
    cfg, out = spec.config, spec.out
    started = time.perf_counter()
    torch.set_num_threads(1)
    model = initial_model(cfg)
    strategy = make_strategy(cfg)
    arrays = ArrayRecord(model.state_dict())
    evaluate_fn = central_evaluator(cfg, model.to(select_device(cfg.device)))
    history, first = RunHistory(), 1
    if spec.resume is not None:
        arrays, history, first = _restore(spec.resume, model)
        strategy.load_state_dict(spec.resume.strategy, spec.resume.strategy_arrays)
        started -= spec.resume.elapsed_seconds  # wall time counts every session of the run
        log.info("resuming after round %d", first - 1)
    resumed_ema = spec.resume.served_arrays if spec.resume else {}
    served = Served(
        cfg.serve_ema, {k: resumed_ema[k] for k in model.state_dict()} if resumed_ema else None
    )
    route, declared = node_route(grid, cfg)
    strategy.bind_nodes(route)

    def central(server_round: int, served_record: ArrayRecord) -> dict[int, float]:
        accuracy = evaluate_fn(server_round, served_record)
        history.evaluate_metrics_serverapp[server_round] = _central_metrics(accuracy)
        return accuracy

    def round_ended(server_round: int, accuracy: dict[int, float]) -> None:
        if spec.on_round_end is not None:
            spec.on_round_end(RoundEnd(server_round, accuracy, time.perf_counter() - started))

    if first == 1:
        round_ended(0, central(0, served.record(arrays)))
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
        for line in round_warnings(rnd, cfg, strategy.rounds.get(rnd)):
            log.warning(line)
        if new_arrays is not None:
            arrays = new_arrays
        served.update(arrays)
        if train_metrics is not None:
            history.train_metrics_clientapp[rnd] = dict(train_metrics)
        accuracy: dict[int, float] = {}
        if rnd in evaluated:
            served_record = served.record(arrays)  # once: devices and the server evaluate it
            instructions = strategy.configure_evaluate(rnd, served_record, ConfigRecord(flat), grid)
            federated = strategy.aggregate_evaluate(
                rnd, exchange(grid, instructions, spec.reply_poll_seconds)
            )
            if federated is not None:
                history.evaluate_metrics_clientapp[rnd] = dict(federated)
            accuracy = central(rnd, served_record)
        if rnd in window and rnd != cfg.rounds:  # the last round's model is model.safetensors
            save_model(out / FINAL_MODELS_DIR / model_file(rnd), served.state(arrays), cfg)
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
                time.perf_counter() - started,
                served.ema,
            )
    wall = time.perf_counter() - started
    results = build_results(cfg, strategy.rounds, history, wall, declared)
    final = served.state(arrays)
    save_model(out / MODEL_FILE, final, cfg)
    if len(window) > 1:  # the final window's models averaged into one (docs/results.md §6)
        earlier = [load_model_state(out / FINAL_MODELS_DIR / model_file(r)) for r in window[:-1]]
        save_model(out / WINDOW_AVERAGE_MODEL_FILE, average_states([*earlier, final]), cfg)
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
        f"start {expected} SuperNodes (deployment), or give a simulation "
        f"--federation-config 'num-supernodes={expected}'"
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
    setup_console(verbose=True)  # fedqdnn's lines on stderr; Flower's logs are Flower's
    # one run per folder, never over a finished one (fedqdnn.federated.run_folder)
    with claim(out, identity=run_identity(spec.config, run_data(spec.config).fingerprint)):
        wait_for_nodes(grid, spec.config.num_nodes)
        run_server(grid, spec)
