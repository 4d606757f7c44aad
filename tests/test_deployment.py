"""Deploy policies: which mode each device runs and what PTQ / recalibration change."""

import numpy as np
import pytest

from fedqdnn.config import FederatedConfig
from fedqdnn.deployment import accuracy_by_tier, evaluate_devices
from fedqdnn.device import device_for, load_state
from fedqdnn.fleet import initial_model
from fedqdnn.policies import Deploy
from fedqdnn.training import evaluate

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


def test_ptq_ignores_the_low_bit_bn_it_replaces():
    state = _state()
    scrambled = {k: v.copy() for k, v in state.items()}
    for key in scrambled:
        if ".bits2." in key and scrambled[key].dtype.kind == "f":
            scrambled[key] = np.full_like(scrambled[key], 7.0)
    a = evaluate_devices(CFG, {p: state for p in range(6)}, Deploy.PTQ)
    b = evaluate_devices(CFG, {p: scrambled for p in range(6)}, Deploy.PTQ)
    assert [r.accuracy for r in a] == [r.accuracy for r in b]
    top = evaluate_devices(CFG, {p: scrambled for p in range(6)}, Deploy.TOP)
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
