"""FedQDNN's reply handling with real Flower Messages: parsing, exclusion, aggregation."""

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from fedqdnn.compression import quantize_arrays
from strategies.fedqdnn import FedQDNN, to_arrayrecord
from strategies.protocol import NodeRoute

BN = "body.0.bns"
STATE = {
    "stem.weight": np.zeros((2, 2), np.float32),
    f"{BN}.bits2.weight": np.ones(2, np.float32),
    f"{BN}.bits2.running_mean": np.zeros(2, np.float32),
    f"{BN}.bits2.running_var": np.ones(2, np.float32),
    f"{BN}.bits32.weight": np.ones(2, np.float32),
    f"{BN}.bits32.running_mean": np.zeros(2, np.float32),
    f"{BN}.bits32.running_var": np.ones(2, np.float32),
}


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """The identity a running ServerApp process has (instructions are stamped with it)."""
    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def _instruction(node: int = 1) -> Message:
    return Message(content=RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)


def _reply(pid: int, modes, n: int, fill: float, status="trained", arrays=None):
    if arrays is None:
        arrays = {
            k: np.full_like(v, fill)
            for k, v in STATE.items()
            if ".bits" not in k or any(f".bits{b}." in k for b in modes)
        }
    metrics = {"num-examples": n, "bytes-down": 0, "trained-modes": list(modes), "loss": 0.5}
    content = {
        "metrics": MetricRecord(metrics),
        "info": ConfigRecord({"tier": "t", "partition-id": pid, "status": status}),
    }
    if status == "trained":
        content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return Message(content=RecordDict(content), reply_to=_instruction(pid + 1))


def _strategy() -> FedQDNN:
    strategy = FedQDNN(num_clients=4, bit_modes=(2, 32))
    strategy._global = {k: v.copy() for k, v in STATE.items()}
    return strategy


def test_aggregate_train_weights_shared_by_all_and_modes_by_their_trainers():
    strategy = _strategy()
    replies = [
        _reply(0, (2,), 1, 2.0),  # a 2-bit device
        _reply(1, (2, 32), 3, 6.0),  # an FP32 device training both modes
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    out = {k: v.numpy() for k, v in arrays.items()}
    assert np.allclose(out["stem.weight"], (1 * 2 + 3 * 6) / 4)  # 5.0
    assert np.allclose(out[f"{BN}.bits2.weight"], 5.0)
    assert np.allclose(out[f"{BN}.bits32.weight"], 6.0)  # only the FP32 device trained it
    # pooled variance of means 2 and 6 with weights 1, 3, variances 2 and 6:
    # mean 5, var = (1 * (2 + 9) + 3 * (6 + 1)) / 4 = 8
    assert np.allclose(out[f"{BN}.bits2.running_var"], 8.0)
    assert metrics["num-valid"] == 2 and metrics["train-loss"] == 0.5
    assert [r.partition_id for r in strategy.rounds[1].train] == [0, 1]


def test_bad_replies_are_excluded_with_reasons_and_offline_ones_dropped():
    strategy = _strategy()
    nan = {k: np.full_like(v, np.nan) for k, v in STATE.items() if ".bits32." not in k}
    wrong_shape = {k: v.copy() for k, v in STATE.items() if ".bits32." not in k}
    wrong_shape["stem.weight"] = np.zeros(5, np.float32)
    replies = [
        _reply(0, (2,), 1, 2.0),
        _reply(1, (2,), 1, 0.0, arrays=nan),
        _reply(2, (2,), 1, 0.0, arrays=wrong_shape),
        _reply(3, (), 1, 0.0, status="offline"),
        Message(Error(code=0, reason="Traceback ... RuntimeError: boom"), reply_to=_instruction()),
        _reply(5, (8,), 1, 0.0),
    ]
    arrays, metrics = strategy.aggregate_train(2, replies)
    rejected = strategy.rounds[2].rejected
    reasons = [r.reason for r in rejected]
    assert len(reasons) == 4
    # in partition order; the client error names its device through its instruction (None here:
    # the error replies to an instruction this strategy did not send)
    assert [r.partition_id for r in rejected] == [1, 2, 5, None]
    assert any("non-finite" in r for r in reasons) and any("shape" in r for r in reasons)
    assert any("client error" in r and "boom" in r for r in reasons)
    assert any("not modes of the model" in r for r in reasons)
    assert strategy.rounds[2].dropped[0].status == "offline"
    assert metrics["num-valid"] == 1 and metrics["num-rejected"] == 4
    assert np.allclose(arrays["stem.weight"].numpy(), 2.0)


def test_eight_bit_upload_is_decoded_before_aggregation():
    strategy = _strategy()
    arrays = {k: v + 0.25 for k, v in STATE.items() if ".bits32." not in k}
    packed = quantize_arrays(arrays)
    new, metrics = strategy.aggregate_train(1, [_reply(0, (2,), 2, 0.0, arrays=packed)])
    assert metrics["num-valid"] == 1
    assert new["stem.weight"].numpy().dtype == np.float32
    assert np.allclose(new["stem.weight"].numpy(), 0.25)


def test_no_valid_reply_keeps_the_global_model():
    strategy = _strategy()
    arrays, metrics = strategy.aggregate_train(1, [_reply(0, (), 1, 0.0, status="straggler")])
    assert arrays is None and metrics["num-valid"] == 0 and metrics["num-dropped"] == 1


def test_seeded_device_sampling_and_routes():
    strategy = FedQDNN(num_clients=10, fraction_train=0.3, seed=7)
    strategy.bind_nodes(NodeRoute(tuple(range(10)), bound={p: 100 + p for p in range(10)}))
    instructions = strategy.configure_train(
        3, to_arrayrecord(STATE), ConfigRecord({"lr": 0.1}), grid=None
    )
    expected = sorted(np.random.default_rng([7, 3, 0, 1]).choice(10, 3, replace=False))
    assert [m.metadata.dst_node_id for m in instructions] == [100 + p for p in expected]
    assert [m.content["config"]["partition-id"] for m in instructions] == expected
    assert all(m.content["config"]["server-round"] == 3 for m in instructions)
    # a pool of two nodes serves the sampled devices in turn; the messages name the devices
    pooled = FedQDNN(num_clients=2, fraction_train=0.3, seed=7)
    pooled.bind_nodes(NodeRoute(tuple(range(10)), pool=(5, 9)))
    sent = pooled.configure_train(3, to_arrayrecord(STATE), ConfigRecord({}), grid=None)
    assert [m.metadata.dst_node_id for m in sent] == [5, 9, 5]
    assert [m.content["config"]["partition-id"] for m in sent] == expected


def test_strategy_state_round_trip_resumes_identically():
    from fedqdnn.policies import ServerOptimizer
    from strategies.server_step import ServerStep

    def strategy():
        s = FedQDNN(
            num_clients=4,
            bit_modes=(2, 32),
            mode_state_decay=0.5,
            server_step=ServerStep(ServerOptimizer.FEDAVGM, 0.7, 0.9),
        )
        s._global = {k: v.copy() for k, v in STATE.items()}
        return s

    def round_replies(r):
        return [_reply(0, (2,), 1, 1.0 + r), _reply(1, (2, 32), 3, 2.0 * r)]

    a = strategy()
    new, _ = a.aggregate_train(1, round_replies(1))
    json_state, arrays = a.state_dict()
    assert json_state["mode_data"] == {"2": 4.0, "32": 3.0} and arrays  # momentum kept
    b = strategy()
    b.load_state_dict(json_state, arrays)
    for s in (a, b):
        s._global = {k: v.numpy() for k, v in new.items()}
    out_a, _ = a.aggregate_train(2, round_replies(2))
    out_b, _ = b.aggregate_train(2, round_replies(2))
    for key in STATE:
        assert np.array_equal(out_a[key].numpy(), out_b[key].numpy()), key
    # the 2-bit entries blend the previous global value (weight 0.5 * 4) with 4 new examples
    expected = (2.0 * new[f"{BN}.bits2.weight"].numpy() + 1 * 3.0 + 3 * 4.0) / 6
    assert np.allclose(out_a[f"{BN}.bits2.weight"].numpy(), expected)


def test_declared_devices_are_sent_their_plan_and_held_to_it():
    """A declared fleet: every instruction carries the device's planned modes, and an update
    with a mode beyond the plan (a 2-bit MCU uploading FP32 entries) is refused."""
    strategy = FedQDNN(num_clients=2, bit_modes=(2, 32))
    plan = {0: (2,), 1: (2, 32)}
    strategy.bind_nodes(NodeRoute((0, 1), bound={0: 10, 1: 11}, modes=plan))
    sent = strategy.configure_train(1, to_arrayrecord(STATE), ConfigRecord({}), grid=None)
    assert [list(m.content["config"]["modes"]) for m in sent] == [[2], [2, 32]]
    first, second = sent
    for message, message_id in ((first, "m0"), (second, "m1")):  # ids the SuperLink gives
        message.metadata.__dict__["_message_id"] = message_id

    def reply_to(instruction: Message, pid: int, modes) -> Message:
        reply = _reply(pid, modes, 1, 1.0)
        return Message(content=reply.content, reply_to=instruction)

    _, metrics = strategy.aggregate_train(
        1, [reply_to(first, 0, (2, 32)), reply_to(second, 1, (2, 32))]
    )
    rejected = strategy.rounds[1].rejected
    assert metrics["num-valid"] == 1 and [r.partition_id for r in rejected] == [0]
    assert rejected[0].reason == "trained modes (2, 32), beyond its planned modes (2,)"


def test_stratified_sampling_draws_each_group_in_proportion():
    """Ten devices in groups of 5 / 3 / 2, 4 a round: shares 2 / 1.2 / 0.8, so the first
    group gives exactly 2 every round, and the other two (2, 0) with probability 0.2 and
    (1, 1) with 0.8 (the fractional parts), never (0, 2); seeded: same round, same devices."""
    strata = ((0, 1, 2, 3, 4), (5, 6, 7), (8, 9))

    def strategy() -> FedQDNN:
        s = FedQDNN(num_clients=10, fraction_train=0.4, seed=3)
        s.bind_nodes(NodeRoute(tuple(range(10)), pool=(1,), strata=strata))
        return s

    sampler = strategy()
    counts = []
    for rnd in range(1, 401):
        sent = sampler.configure_train(rnd, to_arrayrecord(STATE), ConfigRecord({}), None)
        ids = [m.content["config"]["partition-id"] for m in sent]
        assert ids == sorted(set(ids)) and len(ids) == 4
        counts.append(tuple(sum(p in group for p in ids) for group in strata))
    assert set(counts) == {(2, 2, 0), (2, 1, 1)}
    assert 0.15 <= counts.count((2, 2, 0)) / len(counts) <= 0.25  # 0.2 expected
    again = [strategy().configure_train(7, to_arrayrecord(STATE), ConfigRecord({}), None)]
    again.append(sampler.configure_train(7, to_arrayrecord(STATE), ConfigRecord({}), None))
    first, second = ([m.content["config"]["partition-id"] for m in sent] for sent in again)
    assert first == second
