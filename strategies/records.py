"""Flower ArrayRecords <-> numpy without re-reading every array's ``.npy`` header.

``Array.numpy()`` runs ``np.load`` per array, whose header parsing (``ast.literal_eval``)
made most of the server's aggregation time: a model of 56 arrays and 10 replies is ~600
header parses per round. An Array already carries its dtype and shape, so only the header's
length is read here and the data are viewed in place (read-only), value for value what
``np.load`` returns. Anything else (another serialization, Fortran order, a damaged header)
goes through ``Array.numpy()``, which validates it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

_NPY_MAGIC = b"\x93NUMPY"
_C_ORDER = b"'fortran_order': False"
_NUMPY_STYPE = "numpy.ndarray"

State = dict[str, np.ndarray]


def decode_array(array: Array) -> np.ndarray:
    """The numpy array ``array`` holds (a read-only view of its bytes when it can be)."""
    data = array.data
    if array.stype == _NUMPY_STYPE and data[:6] == _NPY_MAGIC and data[6] in (1, 2, 3):
        size_end = 10 if data[6] == 1 else 12  # header length: 2 bytes (v1) or 4 (v2, v3)
        offset = size_end + int.from_bytes(data[8:size_end], "little")
        if _C_ORDER in data[size_end:offset]:
            try:
                dtype = np.dtype(array.dtype)
                count = math.prod(array.shape)
                flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
                return flat.reshape(tuple(array.shape))
            except (TypeError, ValueError):
                pass  # let np.load say what is wrong
    return array.numpy()


def to_state(arrays: ArrayRecord) -> State:
    """ArrayRecord -> {name: numpy array} (read-only views)."""
    return {k: decode_array(v) for k, v in arrays.items()}


def to_torch_state(arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    """ArrayRecord -> a state dict to load into a model (CPU tensors it may keep)."""
    return {k: torch.from_numpy(np.array(v)) for k, v in to_state(arrays).items()}


def to_arrayrecord(state: State) -> ArrayRecord:
    """{name: numpy array} -> ArrayRecord (order kept)."""
    return ArrayRecord({k: Array(np.require(v, requirements="C")) for k, v in state.items()})
