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

from fedqdnn.compression import RANGE_SUFFIX, dequantize_arrays
from fedqdnn.policies import SharedWeighting
from fedqdnn.round_plan import select_partitions
from strategies.aggregation import (
    ClientUpdate,
    State,
    aggregate,
    model_modes,
    shared_keys,
    validate_update,
)
from strategies.fedavg import PlainFedAvg
from strategies.protocol import NodeRoute, RoundRecord, records_from_json, records_to_json
from strategies.records import to_arrayrecord, to_state
from strategies.server_step import ServerStep


def _info(msg: Message) -> dict:
    records = msg.content.config_records
    return dict(records["info"]) if "info" in records else {}


def _metrics(msg: Message) -> dict:
    return dict(msg.content["metrics"])


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
        assert self.route is not None
        config["server-round"] = server_round
        chosen = select_partitions(self.route.devices, fraction, self.seed, server_round, salt)
        self._sent = []
        for pid, node in zip(chosen, self.route.nodes_for(chosen), strict=True):
            device_config = ConfigRecord({**config, "partition-id": pid})
            content = RecordDict(
                {self.arrayrecord_key: arrays, self.configrecord_key: device_config}
            )
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
        if self.route is None:
            return super().configure_train(server_round, arrays, config, grid)
        return self._instructions(
            server_round, arrays, config, self.fraction_train, MessageType.TRAIN, 0
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation on a seeded sample of partitions (all by default)."""
        if self.route is None:
            return super().configure_evaluate(server_round, arrays, config, grid)
        return self._instructions(
            server_round, arrays, config, self.fraction_evaluate, MessageType.EVALUATE, 1
        )

    def _parse(self, msg: Message) -> tuple[ClientUpdate | None, dict, str | None]:
        """(update, report, reason-if-rejected) for one reply."""
        if msg.has_error():
            pid = self._device_of(msg)
            reason = f"client error {msg.error.code}: {msg.error.reason[-200:]}"
            return None, {"partition-id": pid}, reason
        try:
            metrics, info = _metrics(msg), _info(msg)
            if info.get("status", "trained") != "trained":
                return None, {**info, **metrics}, None
            arrays = to_state(msg.content["arrays"])
            if any(k.endswith(RANGE_SUFFIX) for k in arrays):  # 8-bit upload
                arrays = dequantize_arrays(arrays, {k: v.dtype for k, v in self._global.items()})
            update = ClientUpdate(
                arrays,
                int(metrics["num-examples"]),
                tuple(int(b) for b in metrics["trained-modes"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            return None, {}, f"malformed reply: {err!r}"
        report = {**info, **{k: v for k, v in metrics.items()}}
        return update, report, validate_update(self._global, update, self.bit_modes)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate every reply, aggregate the valid ones, record the rest."""
        record = self.rounds.setdefault(server_round, RoundRecord())
        valid: list[tuple[int, ClientUpdate]] = []
        for msg in replies:
            update, report, reason = self._parse(msg)
            if update is None and reason is None:  # offline or straggler: dropped, counted
                record.dropped.append(report)
                continue
            if reason is not None:
                rejected = {"partition-id": report.get("partition-id"), "reason": reason}
                record.rejected.append(rejected)
                continue
            valid.append((int(report.get("partition-id", len(valid))), update))
            record.train.append(report)
        # Records in partition order: results cannot depend on the order replies arrived.
        for rows in (record.train, record.dropped, record.rejected):
            rows.sort(key=_partition_order)
        counts = {"num-rejected": len(record.rejected), "num-dropped": len(record.dropped)}
        if not valid:
            return None, MetricRecord({"num-valid": 0, **counts})
        # Sum in partition order: the result cannot depend on the order replies arrived.
        valid = [u for _, u in sorted(valid, key=lambda pair: pair[0])]
        new_state = self._aggregate(server_round, valid)
        examples = sum(u.num_examples for u in valid)
        loss = sum(r["loss"] * r["num-examples"] for r in record.train) / examples
        metrics = MetricRecord({"num-valid": len(valid), **counts, "train-loss": float(loss)})
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
                record.rejected.append({"partition-id": pid, "phase": "evaluate", "reason": reason})
                continue
            record.evaluation.append({**_info(msg), **_metrics(msg)})
        record.evaluation.sort(key=_partition_order)
        record.rejected.sort(key=_partition_order)
        if not record.evaluation:
            return None
        out = {"accuracy": _weighted_accuracy(record.evaluation)}
        for tier in sorted({e["tier"] for e in record.evaluation}):
            rows = [e for e in record.evaluation if e["tier"] == tier]
            out[f"accuracy-{tier}"] = _weighted_accuracy(rows)
        return MetricRecord(out)


def _partition_order(row: dict) -> tuple:
    pid = row.get("partition-id")
    return (pid is None, pid if pid is not None else 0, str(row.get("reason", "")))


def _weighted_accuracy(rows: list[dict]) -> float:
    n = sum(r["num-examples"] for r in rows)
    return float(sum(r["accuracy"] * r["num-examples"] for r in rows) / max(1, n))
