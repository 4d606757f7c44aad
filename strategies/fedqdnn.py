"""FedQDNN: Flower strategy for one shared Quantizable DNN trained by a mixed fleet.

Sampling and message construction come from Flower's FedAvg (through
:class:`~strategies.fedavg.PlainFedAvg`); aggregation is ours
(:mod:`strategies.aggregation`): clients send different per-mode entries, which FedAvg's
identical-keys rule would reject. Bad replies (errors, non-finite values, wrong keys or
shapes) are excluded, counted and logged with the reason; a round never crashes on one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from pydantic import ValidationError

from fedqdnn.compression import RANGE_SUFFIX, dequantize_arrays
from fedqdnn.policies import SharedWeighting
from fedqdnn.round_plan import select_stratified
from fedqdnn.schema import (
    ACCURACY,
    ARRAYS,
    CONFIG,
    INFO,
    METRICS,
    NUM_DROPPED,
    NUM_REJECTED,
    NUM_VALID,
    TRAIN_LOSS,
    ClientRow,
    EvaluationRow,
    Rejection,
    RoundRecord,
    instruction,
    tier_accuracy_key,
)
from fedqdnn.validation import one_line
from strategies.aggregation import (
    ClientUpdate,
    State,
    aggregate,
    model_modes,
    shared_keys,
    validate_update,
)
from strategies.fedavg import PlainFedAvg
from strategies.protocol import NodeRoute, records_from_json, records_to_json
from strategies.records import to_arrayrecord, to_state
from strategies.server_step import ServerStep


class FedQDNN(PlainFedAvg):
    """Aggregates shared weights over all replies and each mode's BN over its trainers.

    Parameters
    ----------
    num_clients : int
        Fleet size; sampling waits until this many nodes are connected.
    fraction_train, fraction_evaluate : float (default 1.0)
        Fraction of the fleet sampled per round for training / evaluation.
    seed : int (default 0)
        Seed of the per-round device sample (used once :meth:`bind_nodes` has been
        called; until then Flower's FedAvg sampling applies).
    bit_modes : tuple of int, optional
        The model's bit modes; replies claiming other modes are excluded. Default: the
        modes that own per-mode entries in the global state.
    shared_weighting : SharedWeighting (default examples)
        Weight of a client's shared entries: its examples, or examples x modes trained.
    mode_state_decay : float in [0, 1) (default 0)
        A mode's previous global entries join its average with weight decay x the data
        behind them (0: replaced by this round's trainers).
    server_step : ServerStep, optional
        Server optimizer applied to the shared floating-point entries (Flower's math).
    """

    def __init__(
        self,
        num_clients: int,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        seed: int = 0,
        bit_modes: tuple[int, ...] | None = None,
        shared_weighting: SharedWeighting = SharedWeighting.EXAMPLES,
        mode_state_decay: float = 0.0,
        server_step: ServerStep | None = None,
    ) -> None:
        super().__init__(num_clients, fraction_train, fraction_evaluate)
        self.seed = seed
        self.bit_modes = bit_modes
        self.shared_weighting = SharedWeighting(shared_weighting)
        self.mode_state_decay = mode_state_decay
        self.server_step = server_step
        self.mode_data: dict[int, float] = {}  # data behind each mode's global state
        self.route: NodeRoute | None = None
        self._sent: list[tuple[Message, int]] = []  # this round's instructions and devices
        self._global: State = {}

    def bind_nodes(self, route: NodeRoute) -> None:
        """Sample devices (seeded) rather than Flower's random node IDs from now on."""
        self.route = route

    def _instructions(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        fraction: float,
        message_type: str,
        salt: int,
    ) -> list[Message]:
        """Messages to the devices drawn by a seeded sample (reproducible, unlike sampling
        Flower's random node IDs); each message names its device (``partition-id``)."""
        if self.route is None:
            raise RuntimeError("FedQDNN samples devices, not nodes: call bind_nodes() first")
        strata = self.route.strata or (self.route.devices,)
        chosen = select_stratified(strata, fraction, self.seed, server_round, salt)
        self._sent = []
        for pid, node in zip(chosen, self.route.nodes_for(chosen), strict=True):
            planned = None if self.route.modes is None else self.route.modes[pid]
            device_config = ConfigRecord(instruction(dict(config), server_round, pid, planned))
            content = RecordDict({ARRAYS: arrays, CONFIG: device_config})
            message = Message(content=content, dst_node_id=node, message_type=message_type)
            self._sent.append((message, pid))
        return [message for message, _ in self._sent]

    def _device_of(self, reply: Message) -> int | None:
        """The device an (error) reply answers for: found by the instruction it replies to."""
        for message, pid in self._sent:
            if message.metadata.message_id == reply.metadata.reply_to_message_id:
                return pid
        return None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global state the replies will be checked against, then sample."""
        self._global = to_state(arrays)
        return self._instructions(
            server_round, arrays, config, self.fraction_train, MessageType.TRAIN, 0
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation on a seeded sample of partitions (all by default)."""
        return self._instructions(
            server_round, arrays, config, self.fraction_evaluate, MessageType.EVALUATE, 1
        )

    def _parse(self, msg: Message) -> tuple[ClientUpdate | None, ClientRow | None, str | None]:
        """(update, report, reason-if-rejected) for one reply; an offline or straggling
        device gives (None, its report, None)."""
        if msg.has_error():
            return None, None, f"client error {msg.error.code}: {msg.error.reason[-200:]}"
        try:
            content = msg.content
            row = ClientRow.model_validate({**content[INFO], **content[METRICS]})
            if row.status != "trained":
                return None, row, None
            arrays = to_state(content[ARRAYS])
            if any(k.endswith(RANGE_SUFFIX) for k in arrays):  # 8-bit upload
                arrays = dequantize_arrays(arrays, {k: v.dtype for k, v in self._global.items()})
            update = ClientUpdate(arrays, row.num_examples, tuple(row.trained_modes or ()))
        except (KeyError, TypeError, ValueError) as err:
            detail = one_line(err) if isinstance(err, ValidationError) else repr(err)
            return None, None, f"malformed reply: {detail}"
        beyond = self._beyond_plan(msg, update)
        if beyond is not None:
            return None, row, beyond
        return update, row, validate_update(self._global, update, self.bit_modes)

    def _beyond_plan(self, msg: Message, update: ClientUpdate) -> str | None:
        """Why a declared device's update is refused: it trained modes the server did not
        plan for the device the instruction was for (None: within the plan, or no plan)."""
        if self.route is None or self.route.modes is None:
            return None
        allowed = self.route.modes.get(self._device_of(msg), ())
        if set(update.trained_modes) <= set(allowed):
            return None
        return f"trained modes {update.trained_modes}, beyond its planned modes {allowed}"

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate every reply, aggregate the valid ones, record the rest."""
        record = self.rounds.setdefault(server_round, RoundRecord())
        valid: list[tuple[int, ClientUpdate]] = []
        for msg in replies:
            update, row, reason = self._parse(msg)
            if reason is not None:
                pid = row.partition_id if row is not None else self._device_of(msg)
                record.rejected.append(Rejection(partition_id=pid, reason=reason))
            elif update is None:  # offline or straggler: dropped, counted
                record.dropped.append(row)
            else:
                valid.append((row.partition_id, update))
                record.train.append(row)
        # Records in partition order: results cannot depend on the order replies arrived.
        for rows in (record.train, record.dropped, record.rejected):
            rows.sort(key=_partition_order)
        counts = {NUM_REJECTED: len(record.rejected), NUM_DROPPED: len(record.dropped)}
        if not valid:
            return None, MetricRecord({NUM_VALID: 0, **counts})
        # Sum in partition order: the result cannot depend on the order replies arrived.
        valid = [u for _, u in sorted(valid, key=lambda pair: pair[0])]
        new_state = self._aggregate(server_round, valid)
        examples = sum(u.num_examples for u in valid)
        loss = sum(r.loss * r.num_examples for r in record.train) / examples
        metrics = MetricRecord({NUM_VALID: len(valid), **counts, TRAIN_LOSS: float(loss)})
        return to_arrayrecord(new_state), metrics

    def _aggregate(self, server_round: int, valid: list[ClientUpdate]) -> State:
        """The new global state: averages (with the configured weighting and per-mode carry),
        then the server optimizer on the shared floating-point entries."""
        shared_weights = [
            u.num_examples * (len(u.trained_modes) if self._weigh_by_modes else 1) for u in valid
        ]
        decay = self.mode_state_decay
        carry = {b: decay * c for b, c in self.mode_data.items()} if decay else None
        new_state = aggregate(self._global, valid, shared_weights, carry)
        if decay:
            for bits in model_modes(self._global) | set(self.bit_modes or ()):
                trained = sum(u.num_examples for u in valid if bits in u.trained_modes)
                self.mode_data[bits] = decay * self.mode_data.get(bits, 0.0) + trained
        if self.server_step is not None:
            keys = self._optimized_keys()
            current = {k: self._global[k] for k in keys}
            new_state.update(
                self.server_step.apply(server_round, current, {k: new_state[k] for k in keys})
            )
        return new_state

    @property
    def _weigh_by_modes(self) -> bool:
        return self.shared_weighting == SharedWeighting.EXAMPLES_X_MODES

    def _optimized_keys(self) -> list[str]:
        """Shared floating-point entries: what the server optimizer updates."""
        return [k for k in shared_keys(self._global) if self._global[k].dtype.kind == "f"]

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Round records and per-mode data (JSON); the server optimizer's moments (arrays)."""
        state = {
            "rounds": records_to_json(self.rounds),
            "mode_data": {str(b): c for b, c in self.mode_data.items()},
        }
        arrays = self.server_step.state() if self.server_step is not None else {}
        return state, arrays

    def load_state_dict(self, state: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` (the optimizer's keys follow the global model's)."""
        self.rounds = records_from_json(state.get("rounds", {}))
        self.mode_data = {int(b): float(c) for b, c in state.get("mode_data", {}).items()}
        if self.server_step is not None:
            self.server_step.load_state(arrays)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Per-device accuracy, aggregated overall and per tier (weighted by examples)."""
        record = self.rounds.setdefault(server_round, RoundRecord())
        for msg in replies:
            if msg.has_error():
                pid = self._device_of(msg)
                reason = msg.error.reason[-200:]
                record.rejected.append(Rejection(partition_id=pid, reason=reason, phase="evaluate"))
                continue
            content = msg.content
            record.evaluation.append(
                EvaluationRow.model_validate({**content[INFO], **content[METRICS]})
            )
        record.evaluation.sort(key=_partition_order)
        record.rejected.sort(key=_partition_order)
        if not record.evaluation:
            return None
        out = {ACCURACY: _weighted_accuracy(record.evaluation)}
        for tier in sorted({e.tier for e in record.evaluation}):
            rows = [e for e in record.evaluation if e.tier == tier]
            out[tier_accuracy_key(tier)] = _weighted_accuracy(rows)
        return MetricRecord(out)


def _partition_order(row: ClientRow | Rejection | EvaluationRow) -> tuple:
    pid = row.partition_id
    return (pid is None, pid if pid is not None else 0, getattr(row, "reason", ""))


def _weighted_accuracy(rows: list[EvaluationRow]) -> float:
    n = sum(r.num_examples for r in rows)
    return float(sum(r.accuracy * r.num_examples for r in rows) / max(1, n))
