"""Flower Arrays decode to exactly what np.load gives, whatever the dtype, shape or order."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedqdnn.costs import array_bytes
from strategies.records import decode_array, to_arrayrecord, to_state, to_torch_state

ARRAYS = {
    "float32 4-d": np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 7,
    "0-d int64 (num_batches_tracked)": np.array(12345678901, dtype=np.int64),
    "float16": np.linspace(-3, 3, 11).astype(np.float16),
    "uint8 codes": np.arange(256, dtype=np.uint8).reshape(16, 16),
    "big-endian float64": np.arange(6, dtype=">f8").reshape(2, 3),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "Fortran order": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    "non-finite": np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_decode_equals_np_load(name):
    array = Array(ARRAYS[name])
    decoded, loaded = decode_array(array), array.numpy()
    assert decoded.dtype == loaded.dtype and decoded.shape == loaded.shape
    assert decoded.tobytes() == loaded.tobytes()  # bit for bit, NaN and -0.0 included


def test_decoded_arrays_are_views_that_cannot_change_the_message():
    array = Array(ARRAYS["float32 4-d"])
    view = decode_array(array)
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0, 0, 0, 0] = 1.0


def test_truncated_data_fails_loudly():
    good = Array(ARRAYS["float32 4-d"])
    bad = Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=good.data[:-4])
    with pytest.raises(ValueError):
        decode_array(bad)


def test_state_round_trip_keeps_order_and_values():
    state = {k: np.ascontiguousarray(v) for k, v in ARRAYS.items()}
    back = to_state(to_arrayrecord(state))
    assert list(back) == list(state)
    assert all(back[k].tobytes() == state[k].tobytes() for k in state)
    assert isinstance(to_arrayrecord(state), ArrayRecord)


def test_torch_state_is_writable_and_equal():
    state = {"w": ARRAYS["float32 4-d"], "n": ARRAYS["0-d int64 (num_batches_tracked)"]}
    tensors = to_torch_state(to_arrayrecord(state))
    assert all(np.array_equal(tensors[k].numpy(), state[k]) for k in state)
    tensors["w"].add_(1.0)  # a model may keep and change what it loads
    assert tensors["w"].dtype == torch.float32 and tensors["n"].dtype == torch.int64


def test_array_bytes_counts_a_record_as_its_arrays_without_decoding():
    record = to_arrayrecord(ARRAYS)
    # in the order of ARRAYS: 120 float32, one int64, 11 float16, 256 uint8, 6 float64, none,
    # 12 float32, 4 float32
    expected = 120 * 4 + 8 + 11 * 2 + 256 + 6 * 8 + 0 + 12 * 4 + 4 * 4
    assert array_bytes(record) == array_bytes(ARRAYS) == expected
