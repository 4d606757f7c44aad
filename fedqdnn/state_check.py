"""Whether named arrays fit a reference state: the same keys, shapes and dtypes.

One check for everything that receives a model's arrays from elsewhere: a client's update
(``strategies.aggregation.validate_update``) and a checkpoint about to be resumed
(``fedqdnn.federated.checkpoint.check_matches``). Pure; returns the reason, the caller decides
what a mismatch means (an excluded reply, a refused checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def mismatch(
    arrays: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    same_kind: bool = False,
) -> str | None:
    """Why ``arrays`` do not fit ``reference``, or None if they do.

    Keys must be the same set; each array must have its reference's shape and dtype (with
    ``same_kind``, only the dtype's kind: any float for a float, as an upload may be sent in
    another precision). The reason names at most three keys, or the first array that differs.
    """
    got, expected = set(arrays), set(reference)
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        return f"wrong keys: missing {missing[:3]}, unexpected {extra[:3]}"
    for key, ref in reference.items():
        value = np.asarray(arrays[key])
        if value.shape != ref.shape:
            return f"{key} has shape {value.shape}, expected {ref.shape}"
        if (value.dtype.kind != ref.dtype.kind) if same_kind else (value.dtype != ref.dtype):
            return f"{key} has dtype {value.dtype}, expected {ref.dtype}"
    return None
