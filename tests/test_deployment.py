"""Deploy policies: which mode each device runs and what PTQ / recalibration change."""

import numpy as np
import pytest
import torch

from fedqdnn.config import FederatedConfig
from fedqdnn.deployment import accuracy_by_tier, best_mode, evaluate_devices
from fedqdnn.device import device_for, load_state
from fedqdnn.fleet import initial_model, run_data
from fedqdnn.policies import Deploy, ModeChoice
from fedqdnn.training import evaluate, fit

CFG = FederatedConfig(num_clients=6, seed=1)


def _state(cfg=CFG):
    return {k: v.numpy().copy() for k, v in initial_model(cfg).state_dict().items()}


def test_deploy_bits_hand_cases():
    assert Deploy.TOP.bits(4, 2) == 4
    assert Deploy.PTQ.bits(4, 2) == 4
    assert Deploy.LOWEST_COMMON.bits(32, 2) == 2
    assert Deploy.FP32.bits(2, 2) == 32


def test_top_policy_equals_evaluating_each_device_at_its_top_mode():
    state = _state()
    results = evaluate_devices(CFG, {p: state for p in range(6)}, Deploy.TOP)
    for r in results:
        device = device_for(CFG, r.client)
        load_state(device.model, initial_model(CFG).state_dict())
        assert r.bits == device.top_mode
        assert r.accuracy == evaluate(device.model, device.x_test, device.y_test, r.bits)[0]
    assert {r.bits for r in evaluate_devices(CFG, {p: state for p in range(6)}, "fp32")} == {32}
    lowest = evaluate_devices(CFG, {p: state for p in range(6)}, Deploy.LOWEST_COMMON)
    assert {r.bits for r in lowest} == {2}


@pytest.mark.parametrize("head", ["shared", "bit-specific"])
def test_ptq_ignores_the_low_bit_bn_and_head_it_replaces(head):
    cfg = CFG.replace(head=head)
    state = _state(cfg)
    scrambled = {k: v.copy() for k, v in state.items()}
    for key in scrambled:
        if ".bits2." in key and scrambled[key].dtype.kind == "f":
            scrambled[key] = np.full_like(scrambled[key], 7.0)
    assert any(".heads.bits2." in k for k in scrambled) == (head == "bit-specific")
    a = evaluate_devices(cfg, {p: state for p in range(6)}, Deploy.PTQ)
    b = evaluate_devices(cfg, {p: scrambled for p in range(6)}, Deploy.PTQ)
    assert [r.accuracy for r in a] == [r.accuracy for r in b]
    top = evaluate_devices(cfg, {p: scrambled for p in range(6)}, Deploy.TOP)
    two_bit = [i for i, r in enumerate(top) if r.bits == 2]
    assert any(top[i].accuracy != b[i].accuracy for i in two_bit)  # TOP uses the scrambled BN


def test_recalibrate_policy_recomputes_shared_bn_statistics():
    cfg = CFG.replace(bn="shared")
    state = _state(cfg)
    stale = {
        k: (np.full_like(v, 5.0) if k.endswith("running_mean") else v) for k, v in state.items()
    }
    a = evaluate_devices(cfg, {p: state for p in range(6)}, Deploy.RECALIBRATE)
    b = evaluate_devices(cfg, {p: stale for p in range(6)}, Deploy.RECALIBRATE)
    assert [r.accuracy for r in a] == [r.accuracy for r in b]


def test_accuracy_by_tier_is_example_weighted():
    from fedqdnn.deployment import DeviceResult

    rows = [DeviceResult(0, "a", 2, 0.5, 10), DeviceResult(1, "a", 2, 1.0, 30)]
    assert accuracy_by_tier(rows) == {"a": pytest.approx(0.875)}


def test_average_states_means_floats_and_keeps_the_last_integer_buffers():
    from fedqdnn.deployment import average_states

    a = {"w": np.array([1.0, 2.0], np.float32), "n": np.array(3, np.int64)}
    b = {"w": np.array([3.0, 6.0], np.float32), "n": np.array(7, np.int64)}
    out = average_states([a, b])
    assert out["w"].dtype == np.float32 and out["w"].tolist() == [2.0, 4.0]
    assert out["n"].dtype == np.int64 and int(out["n"]) == 7
    assert average_states([a])["w"].tolist() == [1.0, 2.0]


def test_exponential_average_blends_floats_by_the_decay_and_keeps_the_latest_integers():
    from fedqdnn.deployment import exponential_average

    served = {"w": np.array([1.0, 3.0], np.float32), "n": np.array(4, np.int64)}
    latest = {"w": np.array([3.0, 7.0], np.float32), "n": np.array(9, np.int64)}
    out = exponential_average(served, latest, 0.75)
    assert out["w"].tolist() == [1.5, 4.0]  # 0.75 * 1 + 0.25 * 3, 0.75 * 3 + 0.25 * 7
    assert out["w"].dtype == np.float32 and out["n"] == 9
    assert exponential_average(served, latest, 0.0)["w"].tolist() == [3.0, 7.0]


def test_best_mode_breaks_ties_toward_precision():
    assert best_mode({2: 0.5, 4: 0.7, 32: 0.6}) == 4
    assert best_mode({2: 0.7, 4: 0.7, 32: 0.6}) == 4


def test_best_on_train_picks_each_devices_best_mode_on_its_training_data():
    """A trained model whose 32-bit BN statistics are scrambled: devices that run FP32 pick,
    by their own training accuracy, the mode that scores best there, and are then scored on
    their test split at that mode; devices with one mode are unchanged."""
    trained = initial_model(CFG)
    data = run_data(CFG)
    fit(trained, data.x_train, data.y_train, CFG.bits, CFG.loss, CFG.optim, 3, seed=0)
    state = {k: v.detach().numpy().copy() for k, v in trained.state_dict().items()}
    for key in state:
        if ".bits32." in key and key.endswith("running_mean"):
            state[key] = np.full_like(state[key], 9.0)
    states = {p: state for p in range(6)}
    policy = evaluate_devices(CFG, states, Deploy.TOP)
    chosen = evaluate_devices(CFG, states, Deploy.TOP, choice=ModeChoice.BEST_ON_TRAIN)
    model = initial_model(CFG)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    for before, after in zip(policy, chosen, strict=True):
        device = device_for(CFG, after.client)
        train = {b: evaluate(model, device.x_train, device.y_train, b)[0] for b in device.modes}
        assert after.bits == max(train, key=lambda b: (train[b], b))
        assert after.accuracy == evaluate(model, device.x_test, device.y_test, after.bits)[0]
        if len(device.modes) == 1:
            assert after == before
    assert any(r.bits != 32 for r in chosen if device_for(CFG, r.client).top_mode == 32)


@pytest.mark.parametrize("policy", [Deploy.TOP, Deploy.LOWEST_COMMON])
def test_pooled_statistics_are_those_of_every_device_that_can_run_the_mode(policy):
    """Each mode's BN statistics re-estimated on the training data of all devices able to run
    it (an independent recalibration here), whatever the model carried (scrambled here)."""
    import copy

    from fedqdnn.calibration import recalibrate_bn
    from fedqdnn.deployment import _model_with
    from fedqdnn.policies import Statistics

    state = _state()
    stale = {k: (np.full_like(v, 3.0) if "running" in k else v) for k, v in state.items()}
    states = {p: stale for p in range(6)}
    got = evaluate_devices(CFG, states, policy, statistics=Statistics.POOLED)
    carried = evaluate_devices(CFG, states, policy)
    devices = [device_for(CFG, p) for p in range(6)]
    model = _model_with(CFG, stale, torch.device("cpu"))
    for r in got:
        users = [d for d in devices if r.bits in d.modes]
        assert len(users) >= (6 if r.bits == 2 else 1)  # every device runs 2-bit
        expected = copy.deepcopy(model)
        recalibrate_bn(expected, torch.cat([d.x_train for d in users]), r.bits)
        device = devices[r.client]
        assert r.accuracy == evaluate(expected, device.x_test, device.y_test, r.bits)[0]
    assert [r.bits for r in got] == [r.bits for r in carried]
    assert [r.accuracy for r in got] != [r.accuracy for r in carried]  # the stale stats mattered
