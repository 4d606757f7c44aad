"""Who does what in a round, decided by seeded draws so runs are reproducible.

Flower's node IDs are random per run, so neither node sampling nor any per-node draw may
depend on them: every decision here is keyed by (seed, round, partition id) only.
Pure functions; the server and the clients call them with the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import NamedTuple

from fedqdnn.costs import simulated_train_seconds, transfer_seconds
from fedqdnn.hardware import HardwareProfile
from fedqdnn.rng import Stream, stream

FAULTS = ("crash", "nan", "shape", "slow")
SLOW_FACTOR = 10.0  # a "slow" fault makes the device this many times slower


def select_partitions(
    participants: Sequence[int], fraction: float, seed: int, server_round: int, salt: int = 0
) -> list[int]:
    """The partitions sampled this round: ceil(fraction * n) of them, seeded, sorted."""
    k = max(1, math.ceil(fraction * len(participants)))
    if k >= len(participants):
        return sorted(participants)
    chosen = stream(Stream.SAMPLING, seed, server_round, salt).choice(
        list(participants), k, replace=False
    )
    return sorted(int(p) for p in chosen)


def stratum_quotas(sizes: Sequence[int], k: int, u: float) -> list[int]:
    """Devices drawn from each stratum when ``k`` are drawn from all: ``k * size / total``,
    the fractional parts rounded up or down by systematic sampling at offset ``u`` in [0, 1)
    (so every stratum's expected count, and every device's chance, is exactly ``k / total``,
    and a count never strays more than one from its share)."""
    total = sum(sizes)
    shares = [Fraction(k * n, total) for n in sizes]  # exact: the parts sum to an integer
    quotas = [math.floor(share) for share in shares]
    crossed, point = Fraction(0), Fraction(u)
    for i, share in enumerate(shares):
        crossed += share - quotas[i]
        if point < crossed:  # the next systematic point falls in this stratum's part
            quotas[i] += 1
            point += 1
    return quotas


def select_stratified(
    strata: Sequence[Sequence[int]], fraction: float, seed: int, server_round: int, salt: int = 0
) -> list[int]:
    """The partitions sampled this round, drawn within each stratum: ceil(fraction * n) in
    all, split by :func:`stratum_quotas`, seeded, sorted. One stratum: :func:`select_partitions`."""
    groups = [sorted(group) for group in strata if group]
    everyone = [p for group in groups for p in group]
    if len(groups) <= 1:
        return select_partitions(everyone, fraction, seed, server_round, salt)
    k = max(1, math.ceil(fraction * len(everyone)))
    if k >= len(everyone):
        return sorted(everyone)
    rng = stream(Stream.SAMPLING, seed, server_round, salt)
    quotas = stratum_quotas([len(g) for g in groups], k, float(rng.random()))
    chosen = [int(p) for g, q in zip(groups, quotas, strict=True) for p in rng.choice(g, q, False)]
    return sorted(chosen)


def strata_by(key_of: Mapping[int, tuple]) -> tuple[tuple[int, ...], ...]:
    """Devices grouped by their key (e.g. the modes they train), the groups in key order and
    each group's devices sorted, so the grouping is reproducible."""
    groups: dict[tuple, list[int]] = {}
    for device, key in sorted(key_of.items()):
        groups.setdefault(key, []).append(device)
    return tuple(tuple(groups[key]) for key in sorted(groups))


def is_online(availability: float, seed: int, server_round: int, partition_id: int) -> bool:
    """Whether the device is online this round (probability = its profile's availability)."""
    return bool(
        stream(Stream.AVAILABILITY, seed, server_round, partition_id).random() < availability
    )


def injected_fault(
    probabilities: dict[str, float], seed: int, server_round: int, partition_id: int
) -> str | None:
    """At most one injected fault for this device this round (independent draws in order)."""
    rng = stream(Stream.FAULT, seed, server_round, partition_id)
    for fault in FAULTS:
        if rng.random() < probabilities.get(fault, 0.0):
            return fault
    return None


class Slowdown(NamedTuple):
    """A tier throttled by ``factor`` from ``start_round`` on (battery saver, thermal)."""

    tier: str
    start_round: int
    factor: float


def slowdown(entries: Sequence[Slowdown], tier: str, server_round: int) -> float:
    """Compute slowdown of ``tier`` at ``server_round`` (the latest matching entry wins)."""
    factor = 1.0
    for entry in entries:
        if entry.tier == tier and server_round >= entry.start_round:
            factor = entry.factor
    return factor


def estimated_seconds(
    profile: HardwareProfile,
    modes: Sequence[int],
    num_examples: int,
    epochs: int,
    bytes_down: int,
    bytes_up: int,
    slow: float = 1.0,
) -> float:
    """FedScale-style round time of training ``modes``: compute (scaled) plus transfer."""
    compute = simulated_train_seconds(profile, modes, num_examples, epochs) * slow
    return compute + transfer_seconds(profile, bytes_down, bytes_up)


def candidate_mode_sets(modes: Sequence[int]) -> list[tuple[int, ...]]:
    """Mode sets a device may train, best first: all its modes, then dropping the lowest
    modes one by one (the top mode serves the device itself), then single lower modes
    (cheaper on devices with a faster low-precision path)."""
    modes = sorted(modes)
    sets = [tuple(modes[i:]) for i in range(len(modes))]
    sets += [(b,) for b in reversed(modes[:-1])]
    return sets


def choose_modes(
    candidates: Sequence[tuple[int, ...]],
    time_of: Callable[[tuple[int, ...]], float],
    deadline: float,
) -> tuple[int, ...] | None:
    """First candidate whose estimated time fits the deadline (0 = no deadline); None if
    none fits (the device is a straggler this round)."""
    for modes in candidates:
        if deadline <= 0 or time_of(modes) <= deadline:
            return modes
    return None


def evaluation_rounds(rounds: int, every: int) -> list[int]:
    """Rounds whose global model is evaluated: every ``every``-th round and the last one."""
    return [r for r in range(1, rounds + 1) if r % every == 0 or r == rounds]


def final_window(rounds: int, every: int, count: int) -> list[int]:
    """The last ``count`` evaluated rounds: final accuracy is their mean, not one noisy round."""
    return evaluation_rounds(rounds, every)[-count:]
