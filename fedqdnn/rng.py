"""Seeds of a run's per-round and per-device random draws, from the run's seed alone.

Flower's node IDs are random per run and Ray schedules clients in any order, so no draw may
depend on either. :func:`stream` seeds one numpy generator per (seed, round, key, decision):
the key is the partition id, or for sampling 0 (train) / 1 (evaluate), and each decision
(:class:`Stream`) has its own id, so adding a draw to one decision never shifts another's
numbers. Local training and the local train/test split take integer seeds instead
(:func:`client_seed`, :func:`local_split_seed`).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

SEED_LIMIT = 2**63  # seeds are non-negative 64-bit integers (numpy, torch and JSON agree)


class Stream(IntEnum):
    """Which decision a generator serves (the last key of its seed sequence)."""

    SAMPLING = 1  # which partitions a round samples (salt: 0 train, 1 evaluate)
    AVAILABILITY = 2  # whether a device is online this round
    FAULT = 3  # which fault, if any, is injected into a device's reply


def stream(kind: Stream, seed: int, server_round: int, key: int) -> np.random.Generator:
    """Generator of decision ``kind`` for (seed, round, key); independent across kinds."""
    return np.random.default_rng([abs(int(seed)), abs(int(server_round)), abs(int(key)), int(kind)])


# Per-client torch seed of local training: a fixed mixing of (seed, round, partition) that
# keeps the seeds of every (round, partition) pair of one run distinct while partition ids
# stay below _ROUND_MULTIPLIER.
_SEED_MULTIPLIER = 1_000_003
_ROUND_MULTIPLIER = 10_007


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """Seed of one device's local training in one round: independent of scheduling order."""
    return (seed * _SEED_MULTIPLIER + server_round * _ROUND_MULTIPLIER + partition_id) % SEED_LIMIT


def local_split_seed(seed: int, partition_id: int) -> int:
    """Seed of one device's train/test split of its partition."""
    return seed + partition_id
