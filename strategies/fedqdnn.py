"""FedQDNN: Flower strategy for one shared Quantizable DNN trained by a mixed fleet.

Sampling and message construction come from Flower's FedAvg (through
:class:`~strategies.fedavg.PlainFedAvg`); aggregation is ours
(:mod:`strategies.aggregation`): clients send different per-mode entries, which FedAvg's
identical-keys rule would reject. Bad replies (errors, non-finite values, wrong keys or
shapes) are excluded, counted and logged with the reason; a round never crashes on one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

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
from fedqdnn.round_plan import select_partitions
from strategies.aggregation import ClientUpdate, State, aggregate, validate_update
from strategies.fedavg import PlainFedAvg
from strategies.protocol import RoundRecord
from strategies.records import to_arrayrecord, to_state

log = logging.getLogger("fedqdnn")


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
        Seed of the per-round partition sample (used once :meth:`bind_partitions` has been
        called; until then Flower's FedAvg sampling applies).
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
        super().__init__(num_clients, fraction_train, fraction_evaluate)
        self.seed = seed
        self.bit_modes = bit_modes
        self.node_of_partition: dict[int, int] = {}
        self._partition_of_node: dict[int, int] = {}
        self._global: State = {}

    def bind_partitions(self, node_of_partition: Mapping[int, int]) -> None:
        """Sample partitions (seeded) rather than Flower's random node IDs from now on."""
        self.node_of_partition = dict(node_of_partition)
        self._partition_of_node = {n: p for p, n in self.node_of_partition.items()}

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
            pid = self._partition_of_node.get(msg.metadata.src_node_id)
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
                log.warning("round %d: excluded reply (%s)", server_round, reason)
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
                pid = self._partition_of_node.get(msg.metadata.src_node_id)
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
