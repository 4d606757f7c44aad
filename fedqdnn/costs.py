"""Client cost model (FedScale style): simulated compute and transfer time, exact bytes.

compute = epochs * examples * sum over trained modes of training_ms_per_sample(mode) / 1000
transfer = 8 * (bytes_down / downlink + bytes_up / uplink) / 1e6  (bandwidth in Mbit/s)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedqdnn.hardware import HardwareProfile


def array_bytes(arrays: Mapping[str, Any]) -> int:
    """Exact payload bytes of named arrays (as sent: dtype size x elements). Anything with a
    numpy ``dtype`` and a ``shape`` counts: numpy arrays, and Flower's ``Array`` without
    decoding it."""
    return sum(np.dtype(a.dtype).itemsize * math.prod(a.shape) for a in arrays.values())


def training_ms_per_sample(profile: HardwareProfile, bits: int) -> float:
    """The profile's cost of one sample at ``bits``; a mode wider than the device (asked only
    by the fp32-all reference, which pretends every device trains FP32) costs its FP32
    reference figure."""
    if bits > max(profile.bit_modes):
        return profile.ms_per_sample_fp32
    return profile.native_ms_per_sample(bits)


def simulated_train_seconds(
    profile: HardwareProfile, modes: Sequence[int], num_examples: int, epochs: int
) -> float:
    """Seconds to train ``modes`` jointly on the device (each mode one forward/backward)."""
    return epochs * num_examples * sum(training_ms_per_sample(profile, b) for b in modes) / 1000.0


def transfer_seconds(profile: HardwareProfile, bytes_down: int, bytes_up: int) -> float:
    """Seconds to download the global model and upload the update."""
    return 8 * (bytes_down / profile.downlink_mbps + bytes_up / profile.uplink_mbps) / 1e6
