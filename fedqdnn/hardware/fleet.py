"""Fleet composition: which hardware tier each device (partition id) of a scenario has."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from fedqdnn.hardware.presets import get_profile
from fedqdnn.hardware.profile import HardwareProfile, is_number


def _largest_remainder(num: int, weights: list[float]) -> list[int]:
    """Integer counts summing to ``num``, proportional to ``weights`` (Hamilton's method).

    Leftover units go to the largest fractional parts, ties to the earlier entry.
    """
    total = sum(weights)
    quotas = [num * w / total for w in weights]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: num - sum(counts)]:
        counts[i] += 1
    return counts


# Proportions written with 4 decimals (0.3333) must pass everywhere: one tolerance for all.
PROPORTION_TOLERANCE = 1e-3


def assign_profiles(num_clients: int, proportions: Mapping[str, float], seed: int) -> list[str]:
    """Hardware tier name of each client (partition id), in exact proportions, shuffled by seed.

    Counts are ``proportion * num_clients`` by largest-remainder rounding (ties to the tier
    listed first). When there are at least as many clients as tiers, a tier that rounded to
    zero takes one client from the tier most above its quota (first listed on ties), so every
    tier is present. The list is then shuffled with ``random.Random(seed)``. Tier names are not
    checked here: the caller validates them.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients {num_clients!r} is invalid; allowed: an integer >= 1")
    if not proportions:
        raise ValueError("no hardware proportions given; allowed: {tier: fraction} summing to 1")
    names = list(proportions)
    weights = [proportions[n] for n in names]
    for name, w in zip(names, weights, strict=True):
        if not is_number(w) or not 0 < w <= 1:
            raise ValueError(f"hardware proportion {name!r}={w!r} is invalid; allowed: 0 < p <= 1")
    total = sum(weights)
    if abs(total - 1.0) > PROPORTION_TOLERANCE:
        raise ValueError(
            f"hardware proportions sum to {total:.6g}; allowed: a sum of 1 "
            f"(+-{PROPORTION_TOLERANCE:g})"
        )
    counts = _largest_remainder(num_clients, weights)
    if num_clients >= len(names):
        quotas = [num_clients * w / total for w in weights]
        for i in sorted(range(len(names)), key=lambda i: (-weights[i], i)):
            if counts[i] == 0:
                donors = [j for j in range(len(names)) if counts[j] >= 2]
                donor = max(donors, key=lambda j: (counts[j] - quotas[j], -j))
                counts[donor] -= 1
                counts[i] = 1
    tiers = [name for name, c in zip(names, counts, strict=True) for _ in range(c)]
    random.Random(seed).shuffle(tiers)
    return tiers


def fleet_lowest_top_mode(tiers: Sequence[str], model_modes: Sequence[int]) -> int:
    """The highest mode every tier of the fleet can run (what a lowest-common fleet deploys)."""
    return fleet_lowest_top_mode_of([get_profile(tier) for tier in tiers], model_modes)


def fleet_lowest_top_mode_of(
    profiles: Sequence[HardwareProfile], model_modes: Sequence[int]
) -> int:
    """:func:`fleet_lowest_top_mode` of a fleet given by its profiles (declared devices)."""
    return min(profile.top_mode(model_modes) for profile in profiles)
