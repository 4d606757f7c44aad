"""The ServerApp's own work, without Flower's engine: central evaluation, reply exchange, the
per-round warnings."""

import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedqdnn.config import FederatedConfig
from fedqdnn.data_source import DataSource
from fedqdnn.federated.server_app import (
    Served,
    central_evaluator,
    discover_partitions,
    exchange,
    round_warnings,
)
from fedqdnn.fleet import initial_model, run_data
from fedqdnn.schema import ClientRow, Rejection, RoundRecord
from fedqdnn.training import evaluate, fit


def test_central_evaluation_of_modes_at_once_equals_one_after_another(caplog):
    cfg = FederatedConfig(data=DataSource(dataset="digits"), bits="2,4,8,32", rounds=1)
    torch.set_num_threads(1)  # as the ServerApp
    model = initial_model(cfg)
    data = run_data(cfg)
    # a little training, so that the modes predict differently
    fit(model, data.x_train[:300], data.y_train[:300], cfg.bits, cfg.loss, cfg.optim, 1, 0)
    arrays = ArrayRecord(model.state_dict())
    expected = {b: evaluate(model, data.x_test, data.y_test, b)[0] for b in cfg.bits}
    fresh = initial_model(cfg)  # the evaluator loads the arrays into its own copies
    with caplog.at_level(logging.INFO, logger="fedqdnn"):
        got = central_evaluator(cfg, fresh)(1, arrays)
    assert got == expected
    shown = "  ".join(f"{b}-bit {a:.3f}" for b, a in expected.items())
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("fedqdnn.federated.server_app", logging.INFO, f"round 1/1: central accuracy {shown}")
    ]
    assert len(set(got.values())) > 1  # the modes really differ
    assert all(0.0 <= a <= 1.0 for a in got.values()) and np.isfinite(list(got.values())).all()


class _SlowGrid:
    """Replies to one pushed message per pull, starting at the third pull (a real Message
    each, replying to its instruction), so ``exchange`` has to keep asking."""

    def __init__(self) -> None:
        self.pulls = 0
        self.pushed: list[Message] = []

    def push_messages(self, messages):
        self.pushed = list(messages)
        for i, msg in enumerate(self.pushed):
            msg.metadata.__dict__["_message_id"] = f"m{i}"
        return [m.metadata.message_id for m in self.pushed]

    def pull_messages(self, message_ids):
        self.pulls += 1
        if self.pulls < 3:
            return []
        pending = [m for m in self.pushed if m.metadata.message_id in set(message_ids)]
        return [Message(RecordDict(), reply_to=pending[0])] if pending else []


def test_exchange_keeps_asking_until_every_reply_arrived(monkeypatch):
    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)
    grid = _SlowGrid()
    messages = [
        Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in (5, 6, 7)
    ]
    replies = exchange(grid, messages, poll_seconds=0.001)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert grid.pulls == 5  # two empty pulls, then one reply per pull


# A crashed client's reason as the strategy records it (Flower wraps the ClientApp's error).
CRASH = (
    'client error 2: actor.py", line 65, in run\n    raise ClientAppException(str(ex)) from ex\n'
    "flwr.clientapp.client_app.ClientAppException: \nException ClientAppException occurred. "
    "Message: injected fault: client crashed'>"
)


def _dropped(pid: int, status: str) -> ClientRow:
    return ClientRow(partition_id=pid, tier="t", status=status, num_examples=1, bytes_down=0)


def test_round_warnings_name_the_excluded_replies_and_the_dropped_devices():
    cfg = FederatedConfig(rounds=12, deadline_seconds=12.0)
    shape = "stem.weight has shape (289,), expected (32, 1, 3, 3)"
    record = RoundRecord(
        rejected=[
            Rejection(partition_id=4, reason=shape),
            Rejection(partition_id=5, reason=CRASH),
            Rejection(partition_id=7, reason=CRASH),
            Rejection(partition_id=None, reason="malformed reply: KeyError('loss')"),
        ],
        dropped=[_dropped(p, "offline") for p in range(10, 18)]
        + [_dropped(3, "straggler"), _dropped(9, "straggler")],
    )
    assert round_warnings(2, cfg, record) == [
        f"round 2/12: excluded 1 reply (partition 4): {shape}",
        "round 2/12: excluded 2 replies (partitions 5, 7): client error 2: injected fault: "
        "client crashed",
        "round 2/12: excluded 1 reply (partition ?): malformed reply: KeyError('loss')",
        "round 2/12: dropped 8 offline devices (partitions 10, 11, 12, 13, 14, 15, ...)",
        "round 2/12: dropped 2 stragglers (partitions 3, 9) cut by the 12 s deadline",
    ]
    trained = _dropped(0, "trained")
    assert round_warnings(2, cfg, RoundRecord(train=[trained])) == []
    assert round_warnings(2, cfg, None) == []  # Flower's FedAvg keeps no records


class _IdentityGrid:
    """Nodes 10, 11, 12 answering the identity query with the given partition ids."""

    def __init__(self, partition_ids: list[int]) -> None:
        self.partition_ids = dict(zip((10, 11, 12), partition_ids, strict=True))

    def get_node_ids(self):
        return list(self.partition_ids)

    def send_and_receive(self, messages, timeout):
        replies = []
        for msg in messages:
            info = ConfigRecord({"partition-id": self.partition_ids[msg.metadata.dst_node_id]})
            replies.append(Message(RecordDict({"info": info}), reply_to=msg))
        return replies


@pytest.mark.parametrize(
    ("partition_ids", "message"),
    [
        ([0, 1, 2], None),
        ([0, 3, 2], "SuperNode 11: partition-id = 3 is out of range; allowed: 0..2"),
        ([0, 1, 1], "SuperNodes 11 and 12 both declare partition-id = 1; allowed: one node"),
    ],
)
def test_node_discovery_refuses_bad_partition_ids(monkeypatch, partition_ids, message):
    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)
    cfg = FederatedConfig(num_clients=3, max_nodes=0)
    if message is None:
        assert discover_partitions(_IdentityGrid(partition_ids), cfg) == {0: 10, 1: 11, 2: 12}
        return
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.")):
        discover_partitions(_IdentityGrid(partition_ids), cfg)


def test_the_served_model_is_the_aggregate_or_its_running_average_from_round_one():
    def record(value: float) -> ArrayRecord:
        return ArrayRecord({"w": torch.full((2,), value)})

    latest = Served(0.0)
    latest.update(record(4.0))
    assert latest.ema is None and latest.state(record(8.0))["w"].tolist() == [8.0, 8.0]
    averaged = Served(0.5)
    assert averaged.state(record(1.0))["w"].tolist() == [1.0, 1.0]  # round 0: the initial model
    seen = []
    for value in (0.0, 4.0, 8.0):  # aggregates of rounds 1, 2, 3
        averaged.update(record(value))
        seen.append(float(averaged.state(record(-1.0))["w"][0]))
    assert seen == [0.0, 2.0, 5.0]  # 0; 0.5 * 0 + 0.5 * 4; 0.5 * 2 + 0.5 * 8
    assert averaged.record(record(-1.0))["w"].numpy().tolist() == [5.0, 5.0]
    resumed = Served(0.5, {"w": np.full(2, 5.0, np.float32)})  # from a checkpoint
    resumed.update(record(1.0))
    assert resumed.state(record(-1.0))["w"].tolist() == [3.0, 3.0]
