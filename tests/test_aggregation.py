"""Aggregation math against hand-computed values, independent formulas and Flower's FedAvg."""

import numpy as np
import pytest

from strategies.aggregation import (
    ClientUpdate,
    aggregate,
    pooled_mean_var,
    validate_update,
    weighted_mean,
)

BN = "body.0.bns"


def _state(modes=(2, 32)):
    state = {"stem.weight": np.zeros((2, 2), np.float32)}
    for b in modes:
        state[f"{BN}.bits{b}.weight"] = np.ones(2, np.float32)
        state[f"{BN}.bits{b}.bias"] = np.zeros(2, np.float32)
        state[f"{BN}.bits{b}.running_mean"] = np.zeros(2, np.float32)
        state[f"{BN}.bits{b}.running_var"] = np.ones(2, np.float32)
        state[f"{BN}.bits{b}.num_batches_tracked"] = np.array(0, np.int64)
    return state


def _update(state, modes, n, fill):
    arrays = {
        k: np.full_like(v, fill)
        for k, v in state.items()
        if ".bits" not in k or any(f".bits{b}." in k for b in modes)
    }
    return ClientUpdate(arrays, n, tuple(modes))


def test_weighted_mean_hand_computed():
    out = weighted_mean([np.array([1.0, 2.0]), np.array([4.0, 8.0])], [1, 3])
    assert np.allclose(out, [(1 + 12) / 4, (2 + 24) / 4])


def test_weighted_mean_keeps_integer_dtype():
    out = weighted_mean([np.array(3, np.int64), np.array(6, np.int64)], [1, 1])
    assert out.dtype == np.int64 and int(out) == 4  # 4.5 rounds half to even


def test_pooled_variance_hand_computed():
    # group A: n=1, mean 0, var 1; group B: n=3, mean 4, var 2
    mean, var = pooled_mean_var(
        [np.array([0.0]), np.array([4.0])], [np.array([1.0]), np.array([2.0])], [1, 3]
    )
    assert mean[0] == pytest.approx(3.0)
    assert var[0] == pytest.approx((1 * (1 + 9) + 3 * (2 + 1)) / 4)  # 4.75


def test_pooled_variance_equals_variance_of_concatenated_samples():
    rng = np.random.default_rng(0)
    groups = [rng.normal(loc=i, size=(n, 3)) for i, n in enumerate((50, 120, 30))]
    mean, var = pooled_mean_var(
        [g.mean(0) for g in groups], [g.var(0) for g in groups], [len(g) for g in groups]
    )
    everything = np.concatenate(groups)
    assert np.allclose(mean, everything.mean(0)) and np.allclose(var, everything.var(0))


def test_modes_averaged_only_over_their_trainers_and_untrained_modes_carry_forward():
    state = _state((2, 4, 32))
    state[f"{BN}.bits4.weight"] = np.array([7.0, 7.0], np.float32)
    a = _update(state, (2,), 10, 1.0)
    b = _update(state, (2, 32), 30, 3.0)
    new = aggregate(state, [a, b])
    assert np.allclose(new["stem.weight"], (10 * 1 + 30 * 3) / 40)
    assert np.allclose(new[f"{BN}.bits2.weight"], 2.5)
    assert np.allclose(new[f"{BN}.bits32.weight"], 3.0)  # only b trained 32
    assert np.allclose(new[f"{BN}.bits4.weight"], 7.0)  # nobody trained 4
    # pooled running var of mode 2: means 1 and 3 (n 10/30) -> mean 2.5; var 1 and 3 each
    assert np.allclose(new[f"{BN}.bits2.running_mean"], 2.5)
    expected_var = (10 * (1 + 1.5**2) + 30 * (3 + 0.5**2)) / 40
    assert np.allclose(new[f"{BN}.bits2.running_var"], expected_var)
    assert new[f"{BN}.bits2.num_batches_tracked"].dtype == np.int64
    assert int(new[f"{BN}.bits2.num_batches_tracked"]) == 2  # rint(2.5) -> 2


def test_aggregate_does_not_modify_inputs():
    state = _state()
    before = {k: v.copy() for k, v in state.items()}
    aggregate(state, [_update(state, (2,), 5, 9.0)])
    assert all(np.array_equal(before[k], state[k]) for k in state)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (
            lambda u: u.arrays.__setitem__("stem.weight", np.full((2, 2), np.nan, np.float32)),
            "non-finite",
        ),
        (lambda u: u.arrays.__setitem__("stem.weight", np.zeros((3, 2), np.float32)), "shape"),
        (lambda u: u.arrays.pop("stem.weight"), "missing"),
        (
            lambda u: u.arrays.__setitem__(f"{BN}.bits32.weight", np.ones(2, np.float32)),
            "unexpected",
        ),
    ],
)
def test_bad_updates_rejected_with_reason(mutate, needle):
    state = _state()
    update = _update(state, (2,), 5, 1.0)
    update = ClientUpdate(dict(update.arrays), 5, (2,))
    mutate(update)
    assert needle in validate_update(state, update)


def test_bad_counts_and_modes_rejected():
    state = _state()
    assert "num-examples" in validate_update(state, _update(state, (2,), 0, 1.0))
    assert "not modes of the model" in validate_update(state, _update(state, (8,), 5, 1.0))
    assert validate_update(state, _update(state, (2, 32), 5, 1.0)) is None


def test_every_client_trains_every_mode_equals_flower_fedavg_on_weights():
    """Shared and affine entries equal Flower's aggregate_arrayrecords on the same replies."""
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    rng = np.random.default_rng(1)
    state = _state()
    updates = []
    for n in (7, 13, 29):
        arrays = {
            k: (rng.normal(size=v.shape).astype(v.dtype) if v.dtype.kind == "f" else v)
            for k, v in state.items()
        }
        updates.append(ClientUpdate(arrays, n, (2, 32)))
    ours = aggregate(state, updates)
    records = [
        RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in u.arrays.items()}),
                "metrics": MetricRecord({"num-examples": u.num_examples}),
            }
        )
        for u in updates
    ]
    flower = {k: v.numpy() for k, v in aggregate_arrayrecords(records, "num-examples").items()}
    for key in state:
        if "running_" in key or "num_batches" in key:
            continue  # statistics are pooled (mean equal, variance differs by design)
        assert np.allclose(ours[key], flower[key], atol=1e-6), key
    for b in (2, 32):
        key = f"{BN}.bits{b}.running_mean"
        assert np.allclose(ours[key], flower[key], atol=1e-6)


def test_modes_without_entries_are_valid_when_the_model_lists_them():
    """Shared BN + learnable clip: the 32-bit mode owns no entries but is a model mode."""
    state = {"stem.weight": np.zeros(2, np.float32), "act.clip.bits2": np.ones(1, np.float32)}
    update = ClientUpdate({k: v.copy() for k, v in state.items()}, 4, (2, 32))
    assert validate_update(state, update, bit_modes=(2, 32)) is None
    assert "not modes of the model" in validate_update(state, update, bit_modes=(2, 4))
