"""Systems model: time model, deadlines, availability, faults, 8-bit upload; pure functions."""

import numpy as np
import pytest

from fedqdnn.compression import dequantize_arrays, quantize_arrays
from fedqdnn.costs import array_bytes, simulated_train_seconds, transfer_seconds
from fedqdnn.hardware import get_profile, profile_from_dict
from fedqdnn.rng import Stream, stream
from fedqdnn.round_plan import (
    Slowdown,
    candidate_mode_sets,
    choose_modes,
    estimated_seconds,
    injected_fault,
    is_online,
    select_partitions,
    select_stratified,
    slowdown,
    strata_by,
    stratum_quotas,
)

PHONE = profile_from_dict(
    {
        "name": "phone",
        "bit_modes": [4, 8, 32],
        "ms_per_sample_fp32": 6.0,
        "speedup_by_bits": {"4": 3.0, "8": 2.0, "32": 1.0},
        "memory_mb": 100,
        "uplink_mbps": 8.0,
        "downlink_mbps": 16.0,
        "availability": 0.5,
    }
)


def test_time_model_hand_computed():
    # modes 2 (on the 4-bit path: 2 ms), 4 (2 ms), 32 (6 ms); 100 examples, 2 epochs
    assert simulated_train_seconds(PHONE, (2, 4, 32), 100, 2) == pytest.approx(2 * 100 * 10 / 1000)
    # 1 MB down at 16 Mbit/s = 0.5 s; 1 MB up at 8 Mbit/s = 1 s
    assert transfer_seconds(PHONE, 1_000_000, 1_000_000) == pytest.approx(1.5)
    total = estimated_seconds(PHONE, (32,), 100, 1, 1_000_000, 1_000_000, slow=2.0)
    assert total == pytest.approx(100 * 6 / 1000 * 2 + 1.5)


def test_candidates_and_deadline_pick_expected_modes():
    assert candidate_mode_sets((2, 4, 32)) == [(2, 4, 32), (4, 32), (32,), (4,), (2,)]

    def time_of(modes):
        return estimated_seconds(PHONE, modes, 100, 1, 0, 0)  # 0.2/0.2/0.6 s per mode

    assert choose_modes(candidate_mode_sets((2, 4, 32)), time_of, 0) == (2, 4, 32)
    assert choose_modes(candidate_mode_sets((2, 4, 32)), time_of, 1.0) == (2, 4, 32)
    assert choose_modes(candidate_mode_sets((2, 4, 32)), time_of, 0.9) == (4, 32)
    assert choose_modes(candidate_mode_sets((2, 4, 32)), time_of, 0.5) == (4,)
    assert choose_modes(candidate_mode_sets((2, 4, 32)), time_of, 0.1) is None  # straggler


def test_slowdown_latest_matching_entry_wins():
    spec = (
        Slowdown("cpu-fp32", 3, 4.0),
        Slowdown("cpu-fp32", 5, 8.0),
        Slowdown("mcu-int2", 1, 2.0),
    )
    assert slowdown(spec, "cpu-fp32", 2) == 1.0
    assert slowdown(spec, "cpu-fp32", 3) == 4.0
    assert slowdown(spec, "cpu-fp32", 9) == 8.0
    assert slowdown(spec, "mcu-int2", 1) == 2.0


def test_selection_is_seeded_sorted_and_sized():
    a = select_partitions(range(10), 0.3, seed=1, server_round=2)
    # the draw is numpy's choice on the named stream (seed, round, salt, SAMPLING)
    expected = sorted(int(p) for p in np.random.default_rng([1, 2, 0, 1]).choice(10, 3, False))
    assert a == expected and len(a) == 3
    assert stream(Stream.SAMPLING, 1, 2, 0).random() == np.random.default_rng([1, 2, 0, 1]).random()
    rounds = {tuple(select_partitions(range(10), 0.3, 1, r)) for r in range(1, 8)}
    assert len(rounds) > 1
    assert select_partitions(range(5), 1.0, 0, 1) == [0, 1, 2, 3, 4]


def test_availability_frequency_matches_profile():
    online = [is_online(0.7, 0, r, p) for r in range(50) for p in range(40)]
    assert abs(np.mean(online) - 0.7) < 0.03


def test_fault_frequencies_and_determinism():
    probs = {"crash": 0.1, "nan": 0.1, "shape": 0.1}
    draws = [injected_fault(probs, 3, r, p) for r in range(40) for p in range(50)]
    assert draws == [injected_fault(probs, 3, r, p) for r in range(40) for p in range(50)]
    rate = np.mean([d is not None for d in draws])
    assert abs(rate - (1 - 0.9**3)) < 0.03  # independent draws, at most one fault
    assert injected_fault({}, 3, 1, 1) is None


def test_8bit_upload_round_trip_error_bounded_and_bytes_exact():
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(size=(64, 32)).astype(np.float32),
        "b": np.zeros(5, np.float32),
        "n": np.array(7, np.int64),
    }
    packed = quantize_arrays(arrays)
    assert packed["w"].dtype == np.uint8 and packed["n"] == 7
    assert array_bytes(packed) == 64 * 32 + 8 + 5 + 8 + 8  # codes + ranges + int64
    restored = dequantize_arrays(packed, {k: v.dtype for k, v in arrays.items()})
    assert set(restored) == set(arrays)
    bound = (arrays["w"].max() - arrays["w"].min()) / 510 + 1e-6
    assert np.abs(restored["w"] - arrays["w"]).max() <= bound
    assert np.array_equal(restored["b"], arrays["b"]) and restored["w"].dtype == np.float32


def test_byte_counts_equal_array_sizes():
    arrays = {"a": np.zeros((3, 4), np.float32), "b": np.zeros(2, np.int64)}
    assert array_bytes(arrays) == 3 * 4 * 4 + 2 * 8


def test_preset_costs_hand_computed():
    assert get_profile("mcu-int2").hypothetical
    cpu, npu = get_profile("cpu-fp32"), get_profile("phone-npu-int4")
    assert cpu.native_ms_per_sample(2) == 2.0  # emulated on the FP32 path: 2.0 / 1
    assert npu.native_ms_per_sample(2) == pytest.approx(5.0 / 6.0)  # on the int4 path
    assert npu.native_ms_per_sample(8) == pytest.approx(5.0 / 4.0)


def test_reference_fp32_cost_on_a_device_without_fp32():
    mcu = get_profile("mcu-int2")
    assert simulated_train_seconds(mcu, (32,), 10, 1) == pytest.approx(
        10 * mcu.ms_per_sample_fp32 / 1000
    )


@pytest.mark.parametrize(
    "sizes, k, u, expected",
    [
        ([33, 33, 34], 10, 0.0, [4, 3, 3]),  # shares 3.3 / 3.3 / 3.4: parts 0.3 / 0.3 / 0.4
        ([33, 33, 34], 10, 0.5, [3, 4, 3]),  # the point 0.5 falls in the second part (0.3-0.6)
        ([33, 33, 34], 10, 0.95, [3, 3, 4]),
        ([40, 40, 20], 10, 0.7, [4, 4, 2]),  # whole shares: no rounding
        ([5, 3, 2], 4, 0.1, [2, 2, 0]),  # parts 0 / 0.2 / 0.8: 0.1 < 0.2
        ([5, 3, 2], 4, 0.2, [2, 1, 1]),
    ],
)
def test_stratum_quotas_by_hand(sizes, k, u, expected):
    assert stratum_quotas(sizes, k, u) == expected


def test_stratum_quotas_keep_every_share_in_expectation():
    sizes, k = [7, 11, 13, 2], 9
    grid = [i / 1000 for i in range(1000)]  # offsets evenly over [0, 1)
    mean = [sum(stratum_quotas(sizes, k, u)[i] for u in grid) / len(grid) for i in range(4)]
    assert mean == pytest.approx([k * n / sum(sizes) for n in sizes], abs=1e-3)
    assert all(sum(stratum_quotas(sizes, k, u)) == k for u in grid)


def test_select_stratified_with_one_group_is_uniform_sampling():
    for rnd in range(1, 6):
        assert select_stratified([range(10)], 0.3, 1, rnd) == select_partitions(
            range(10), 0.3, 1, rnd
        )
    assert select_stratified([(0, 1), (2, 3)], 1.0, 0, 1) == [0, 1, 2, 3]


def test_strata_group_devices_by_the_modes_they_train():
    modes = {4: (2,), 0: (2, 4, 32), 2: (2,), 1: (2, 4), 3: (2, 4, 32)}
    assert strata_by(modes) == ((2, 4), (1,), (0, 3))  # (2,) < (2, 4) < (2, 4, 32)
    with_labels = {4: ((2,), 7), 0: ((2,), 1), 2: ((2,), 7), 1: ((2, 4), 0)}
    assert strata_by(with_labels) == ((0,), (2, 4), (1,))
