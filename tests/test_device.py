"""The simulated device without Flower: tier, data, the round plan, training and upload."""

import numpy as np
import pytest
import torch

from fedqdnn.config import FederatedConfig
from fedqdnn.device import (
    device_for,
    inject_fault,
    load_state,
    modes_to_train,
    plan_round,
    skipped_round_report,
    train_round,
    trained_state,
)
from fedqdnn.fleet import fleet_partitions, fleet_tiers, initial_model
from fedqdnn.models import build_model
from fedqdnn.policies import TrainModes
from fedqdnn.rng import client_seed

CFG = FederatedConfig(num_clients=9, rounds=2, local_epochs=1, seed=3)


def test_tiers_follow_proportions_and_seed():
    tiers = fleet_tiers(CFG)
    assert sorted(tiers.count(t) for t in set(tiers)) == [3, 3, 3]
    assert tiers == fleet_tiers(CFG)
    assert fleet_tiers(CFG.replace(seed=4)) != tiers  # reshuffled by the seed


def test_device_holds_its_partition_split_into_train_and_test():
    """Hand-computed: digits has 1437 training examples = 9 * 159 + 6, so the iid shards
    0..5 hold 160 and 6..8 hold 159; device 5 keeps round(160 * 0.2) = 32 for its local
    test. Tiers: 3 of each, shuffled by random.Random(3) into the order below."""
    assert [len(p) for p in fleet_partitions(CFG)] == [160] * 6 + [159] * 3
    device = device_for(CFG, 5)
    assert (len(device.y_train), len(device.y_test)) == (128, 32)
    mcu, npu, cpu = "mcu-int2", "phone-npu-int4", "cpu-fp32"
    assert fleet_tiers(CFG) == [mcu, npu, cpu, mcu, cpu, npu, cpu, mcu, npu]
    assert device.tier == "phone-npu-int4"
    expected_modes = {"mcu-int2": (2,), "phone-npu-int4": (2, 4), "cpu-fp32": (2, 4, 32)}
    assert device.modes == expected_modes[device.tier]


def test_train_mode_policies_hand_cases():
    assert TrainModes.AFFORDABLE.modes((2, 4), 2) == (2, 4)
    assert TrainModes.TOP.modes((2, 4), 2) == (4,)
    assert TrainModes.LOWEST_COMMON.modes((2, 4, 32), 2) == (2,)
    assert TrainModes.FP32.modes((2,), 2) == (32,)
    assert TrainModes.AFFORDABLE.adapts_to_deadline and not TrainModes.TOP.adapts_to_deadline
    cpu = next(p for p in range(9) if device_for(CFG, p).tier == "cpu-fp32")
    lowest = CFG.replace(train_modes="lowest-common")
    assert modes_to_train(lowest, device_for(lowest, cpu)) == (2,)


def test_offline_draw_matches_the_named_stream():
    cfg = CFG.replace(availability=True)
    for pid in range(9):
        device = device_for(cfg, pid)
        draw = np.random.default_rng([cfg.seed, 1, pid, 2]).random()
        expected = "trained" if draw < device.profile.availability else "offline"
        plan = plan_round(cfg, device, 1, bytes_down=100)
        assert plan.status == expected, pid
        if expected == "offline":
            assert skipped_round_report(cfg, device, plan).bytes_down == 0


def test_deadline_drops_the_lowest_mode_then_straggles():
    cpu = next(p for p in range(9) if device_for(CFG, p).tier == "cpu-fp32")
    device = device_for(CFG, cpu)
    n = len(device.y_train)
    per_mode = n * 2.0 / 1000  # cpu-fp32: 2 ms a sample in every mode, 1 epoch
    two_modes = CFG.replace(deadline_seconds=2.5 * per_mode)
    assert plan_round(two_modes, device, 1, bytes_down=0).modes == (4, 32)
    hopeless = CFG.replace(deadline_seconds=0.5 * per_mode)
    plan = plan_round(hopeless, device, 1, bytes_down=0)
    assert plan.status == "straggler" and plan.modes == (2,)
    assert skipped_round_report(hopeless, device, plan).sim_seconds == pytest.approx(per_mode)


def test_train_round_uploads_shared_and_trained_entries_only():
    npu = next(p for p in range(9) if device_for(CFG, p).tier == "phone-npu-int4")
    device = device_for(CFG, npu)
    load_state(device.model, initial_model(CFG).state_dict())
    plan = plan_round(CFG, device, 1, bytes_down=1000)
    update = train_round(CFG, device, plan, 1)
    assert plan.modes == (2, 4)
    assert not any(".bits32." in k for k in update.state)
    assert any(".bits2." in k for k in update.state) and "stem.weight" in update.state
    m = update.report
    assert m.trained_modes == [2, 4] and m.num_examples == len(device.y_train)
    assert m.bytes_up == sum(v.nbytes for v in update.state.values())
    assert np.isfinite(m.loss) and m.bytes_down == 1000

    eight = CFG.replace(upload_bits=8)
    load_state(device.model, initial_model(CFG).state_dict())
    packed = train_round(eight, device_for(eight, npu), plan, 1)
    assert packed.state["stem.weight"].dtype == np.uint8
    assert "stem.weight::range" in packed.state


def test_trained_state_and_faults():
    model = build_model("digits_cnn", (2, 4, 32), 10, 1)
    state = trained_state(model, (2,))
    assert not any(".bits4." in k or ".bits32." in k for k in state)
    assert {k for k in model.state_dict() if ".bits" not in k} <= set(state)
    assert torch.equal(torch.from_numpy(state["stem.weight"]), model.stem.weight.detach())
    nan = inject_fault("nan", dict(state))
    assert np.isnan(nan[next(iter(state))]).all()
    bad = inject_fault("shape", dict(state))
    assert sum(bad[k].shape != state[k].shape for k in state) == 1
    with pytest.raises(RuntimeError, match="injected fault"):
        inject_fault("crash", dict(state))


def test_client_seed_hand_computed():
    assert client_seed(2, 3, 5) == 2 * 1_000_003 + 3 * 10_007 + 5
    assert client_seed(2**62, 1, 0) == (2**62 * 1_000_003 + 10_007) % 2**63


def test_mode_start_schedule_hand_cases():
    cfg = CFG.replace(rounds=3, mode_start="32:3")
    cpu = next(p for p in range(9) if device_for(cfg, p).tier == "cpu-fp32")
    device = device_for(cfg, cpu)
    assert modes_to_train(cfg, device, 2) == (2, 4)
    assert modes_to_train(cfg, device, 3) == (2, 4, 32)
    assert plan_round(cfg, device, 1, bytes_down=0).modes == (2, 4)
    assert modes_to_train(cfg, device) == (2, 4, 32)  # no round: the policy's modes
