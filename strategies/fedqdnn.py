"""FedQDNN: Flower strategy for one shared Quantizable DNN trained by a mixed fleet.

Sampling and message construction come from Flower's FedAvg; aggregation is ours
(:mod:`strategies.aggregation`): clients send different per-mode entries, which FedAvg's
identical-keys rule would reject. Bad replies (errors, non-finite values, wrong keys or
shapes) are excluded, counted and logged with the reason; a round never crashes on one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedqdnn.federated.compression import RANGE_SUFFIX, dequantize_arrays
from fedqdnn.federated.round_plan import select_partitions
from strategies.aggregation import ClientUpdate, State, aggregate, validate_update

log = logging.getLogger("fedqdnn")


@dataclass
class RoundRecord:
    """What happened in one round: client reports, exclusions, per-device evaluation."""

    train: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # offline / straggler, by design
    evaluation: list[dict] = field(default_factory=list)


def to_state(arrays: ArrayRecord) -> State:
    """ArrayRecord -> {name: numpy array}."""
    return {k: v.numpy() for k, v in arrays.items()}


def to_arrayrecord(state: State) -> ArrayRecord:
    """{name: numpy array} -> ArrayRecord (order kept)."""
    return ArrayRecord({k: Array(np.require(v, requirements="C")) for k, v in state.items()})


def _info(msg: Message) -> dict:
    records = msg.content.config_records
    return dict(records["info"]) if "info" in records else {}


def _metrics(msg: Message) -> dict:
    return dict(msg.content["metrics"])


class FedQDNN(FedAvg):
    """Aggregates shared weights over all replies and each mode's BN over its trainers.

    Parameters
    ----------
    num_clients : int
        Fleet size; sampling waits until this many nodes are connected.
    fraction_train, fraction_evaluate : float (default 1.0)
        Fraction of the fleet sampled per round for training / evaluation.
    seed : int (default 0)
        Seed of the per-round partition sample (used once ``node_of_partition`` is set;
        until then Flower's FedAvg sampling applies).
    bit_modes : tuple of int, optional
        The model's bit modes; replies claiming other modes are excluded. Default: the
        modes that own per-mode entries in the global state.
    """

    def __init__(
        self,
        num_clients: int,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        seed: int = 0,
        bit_modes: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=max(1, math.ceil(fraction_train * num_clients)),
            min_evaluate_nodes=max(1, math.ceil(fraction_evaluate * num_clients)),
            min_available_nodes=num_clients,
        )
        self.seed = seed
        self.bit_modes = bit_modes
        self.rounds: dict[int, RoundRecord] = {}
        self.node_of_partition: dict[int, int] = {}
        self._global: State = {}

    def _instructions(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        fraction: float,
        message_type: str,
        salt: int,
    ) -> list[Message]:
        """Messages to the partitions drawn by a seeded sample (reproducible, unlike
        sampling Flower's random node IDs)."""
        config["server-round"] = server_round
        chosen = select_partitions(
            sorted(self.node_of_partition), fraction, self.seed, server_round, salt
        )
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [
            Message(
                content=content, dst_node_id=self.node_of_partition[p], message_type=message_type
            )
            for p in chosen
        ]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global state the replies will be checked against, then sample."""
        self._global = to_state(arrays)
        if not self.node_of_partition:
            return super().configure_train(server_round, arrays, config, grid)
        return self._instructions(
            server_round, arrays, config, self.fraction_train, MessageType.TRAIN, 0
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation on a seeded sample of partitions (all by default)."""
        if not self.node_of_partition:
            return super().configure_evaluate(server_round, arrays, config, grid)
        return self._instructions(
            server_round, arrays, config, self.fraction_evaluate, MessageType.EVALUATE, 1
        )

    def _parse(self, msg: Message) -> tuple[ClientUpdate | None, dict, str | None]:
        """(update, report, reason-if-rejected) for one reply."""
        if msg.has_error():
            return None, {}, f"client error {msg.error.code}: {msg.error.reason[-200:]}"
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
                log.warning("round %d: excluded reply (%s)", server_round, reason)
                continue
            valid.append((int(report.get("partition-id", len(valid))), update))
            record.train.append(report)
        record.train.sort(key=lambda r: r.get("partition-id", 0))
        record.dropped.sort(key=lambda r: r.get("partition-id", 0))
        counts = {"num-rejected": len(record.rejected), "num-dropped": len(record.dropped)}
        if not valid:
            return None, MetricRecord({"num-valid": 0, **counts})
        # Sum in partition order: the result cannot depend on the order replies arrived.
        valid = [u for _, u in sorted(valid, key=lambda pair: pair[0])]
        new_state = aggregate(self._global, valid)
        examples = sum(u.num_examples for u in valid)
        loss = sum(r["loss"] * r["num-examples"] for r in record.train) / examples
        metrics = MetricRecord({"num-valid": len(valid), **counts, "train-loss": float(loss)})
        return to_arrayrecord(new_state), metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Per-device accuracy, aggregated overall and per tier (weighted by examples)."""
        record = self.rounds.setdefault(server_round, RoundRecord())
        for msg in replies:
            if msg.has_error():
                record.rejected.append({"phase": "evaluate", "reason": msg.error.reason[-200:]})
                continue
            record.evaluation.append({**_info(msg), **_metrics(msg)})
        record.evaluation.sort(key=lambda r: r.get("partition-id", 0))
        if not record.evaluation:
            return None
        out = {"accuracy": _weighted_accuracy(record.evaluation)}
        for tier in sorted({e["tier"] for e in record.evaluation}):
            rows = [e for e in record.evaluation if e["tier"] == tier]
            out[f"accuracy-{tier}"] = _weighted_accuracy(rows)
        return MetricRecord(out)


def _weighted_accuracy(rows: list[dict]) -> float:
    n = sum(r["num-examples"] for r in rows)
    return float(sum(r["accuracy"] * r["num-examples"] for r in rows) / max(1, n))
