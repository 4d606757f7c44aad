"""The ServerApp's own work, without Flower's engine: central evaluation, reply exchange."""

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedqdnn.config import FederatedConfig
from fedqdnn.data_source import DataSource
from fedqdnn.federated.server_app import central_evaluator, exchange
from fedqdnn.fleet import initial_model, run_data
from fedqdnn.training import evaluate, fit


def test_central_evaluation_of_modes_at_once_equals_one_after_another():
    cfg = FederatedConfig(data=DataSource(dataset="digits"), bits="2,4,8,32", rounds=1)
    torch.set_num_threads(1)  # as the ServerApp
    model = initial_model(cfg)
    data = run_data(cfg)
    # a little training, so that the modes predict differently
    fit(model, data.x_train[:300], data.y_train[:300], cfg.bits, cfg.loss, cfg.optim, 1, 0)
    arrays = ArrayRecord(model.state_dict())
    expected = {b: evaluate(model, data.x_test, data.y_test, b)[0] for b in cfg.bits}
    fresh = initial_model(cfg)  # the evaluator loads the arrays into its own copies
    got = central_evaluator(cfg, fresh, log=lambda message: None)(1, arrays)
    assert got == expected
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
