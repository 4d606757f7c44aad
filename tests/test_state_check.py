"""The one key/shape/dtype check of arrays against a reference state."""

import numpy as np

from fedqdnn.state_check import mismatch

REFERENCE = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.int64)}


def test_matching_arrays_pass():
    assert (
        mismatch({"b": np.ones(4, np.int64), "a": np.ones((2, 3), np.float32)}, REFERENCE) is None
    )


def test_keys_shapes_and_dtypes_are_named():
    assert mismatch({"a": REFERENCE["a"], "c": np.zeros(1)}, REFERENCE) == (
        "wrong keys: missing ['b'], unexpected ['c']"
    )
    wide = {"a": np.zeros((3, 2), np.float32), "b": REFERENCE["b"]}
    assert mismatch(wide, REFERENCE) == "a has shape (3, 2), expected (2, 3)"
    doubles = {"a": np.zeros((2, 3), np.float64), "b": REFERENCE["b"]}
    assert mismatch(doubles, REFERENCE) == "a has dtype float64, expected float32"


def test_same_kind_accepts_another_float_but_not_an_int():
    doubles = {"a": np.zeros((2, 3), np.float64), "b": REFERENCE["b"]}
    assert mismatch(doubles, REFERENCE, same_kind=True) is None
    ints = {"a": np.zeros((2, 3), np.int32), "b": REFERENCE["b"]}
    assert mismatch(ints, REFERENCE, same_kind=True) == "a has dtype int32, expected float32"
