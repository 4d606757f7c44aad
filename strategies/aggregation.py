"""Aggregation of Quantizable-DNN client updates: pure numpy functions, no Flower.

A client update holds every shared entry (conv/linear weights) plus the per-mode entries
(bit-specific BN, learnable clips: keys containing ``bits<b>``) of the modes it trained.

* shared entries: mean over all updates weighted by examples (FedAvg);
* a mode's affine parameters / clips: weighted mean over the updates that trained it;
* a mode's running statistics: pooled, ``m = sum n_i m_i / N``,
  ``v = sum n_i (v_i + (m_i - m)^2) / N`` (per-client variances alone ignore the spread
  of client means);
* integer buffers (``num_batches_tracked``): weighted mean rounded, dtype kept;
* modes nobody trained this round keep their previous global values;
* optionally, a mode's previous value joins its average with a weight (``mode_carry``) and
  the shared entries are weighted otherwise than by examples (``shared_weights``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedqdnn.bitmodes import mode_of_state_key
from fedqdnn.state_check import mismatch

State = dict[str, np.ndarray]


@dataclass(frozen=True)
class ClientUpdate:
    """One client's reply: the arrays it sent, its example count, the modes it trained."""

    arrays: Mapping[str, np.ndarray]
    num_examples: int
    trained_modes: tuple[int, ...]


def shared_keys(state: Mapping[str, np.ndarray]) -> list[str]:
    """Keys every client must send: entries not tied to one bit mode."""
    return [k for k in state if mode_of_state_key(k) is None]


def mode_keys(state: Mapping[str, np.ndarray], bits: int) -> list[str]:
    """Keys of one bit mode's entries (its BN and clip)."""
    return [k for k in state if mode_of_state_key(k) == bits]


def model_modes(state: Mapping[str, np.ndarray]) -> set[int]:
    """Bit modes that have per-mode entries in ``state``."""
    return {m for k in state if (m := mode_of_state_key(k)) is not None}


def expected_keys(state: Mapping[str, np.ndarray], trained_modes: Sequence[int]) -> set[str]:
    """Exactly the keys an update that trained ``trained_modes`` must carry."""
    return set(shared_keys(state)) | {k for b in trained_modes for k in mode_keys(state, b)}


def validate_update(
    state: Mapping[str, np.ndarray],
    update: ClientUpdate,
    bit_modes: Sequence[int] | None = None,
) -> str | None:
    """Why ``update`` must be excluded, or None if it is usable.

    Checks example count, trained modes (against the model's ``bit_modes``; by default
    the modes that have per-mode entries), key set, shapes, dtypes and finiteness, so one
    bad client can never crash or poison a round.
    """
    if not update.num_examples > 0:
        return f"num-examples {update.num_examples} must be > 0"
    if not update.trained_modes:
        return "no trained modes reported"
    # A mode may own no entries (32-bit has no clip; shared BN has no per-mode BN), so the
    # model's own list of modes is the reference when the caller knows it.
    known = set(bit_modes) if bit_modes is not None else model_modes(state)
    unknown = [b for b in update.trained_modes if b not in known]
    if unknown:
        return f"trained modes {unknown} are not modes of the model {sorted(known)}"
    expected = expected_keys(state, update.trained_modes)
    reference = {k: v for k, v in state.items() if k in expected}
    problem = mismatch(update.arrays, reference, same_kind=True)
    if problem is not None:
        return problem
    for key in reference:
        value = np.asarray(update.arrays[key])
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"{key} holds non-finite values"
    return None


def weighted_mean(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """sum w_i a_i / sum w_i in float64, cast back to the input dtype (integers rounded)."""
    w = np.asarray(weights, dtype=np.float64)
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])
    mean = np.asarray(np.tensordot(w / w.sum(), stacked, axes=1))
    dtype = np.asarray(arrays[0]).dtype
    return np.rint(mean).astype(dtype) if dtype.kind in "iub" else mean.astype(dtype)


def pooled_mean_var(
    means: Sequence[np.ndarray], variances: Sequence[np.ndarray], weights: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled statistics of groups i with weights n_i: the law of total variance."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    m = np.stack([np.asarray(x, np.float64) for x in means])
    v = np.stack([np.asarray(x, np.float64) for x in variances])
    mean = np.asarray(np.tensordot(w, m, axes=1))
    var = np.asarray(np.tensordot(w, v + (m - mean) ** 2, axes=1))
    dtype = np.asarray(means[0]).dtype
    return mean.astype(dtype), var.astype(dtype)


def _aggregate_group(
    keys: Sequence[str],
    arrays: Sequence[Mapping[str, np.ndarray]],
    weights: Sequence[float],
) -> State:
    """Aggregate ``keys`` over ``arrays`` (all of which hold them) with ``weights``."""
    out: State = {}
    for key in keys:
        if key.endswith("running_var"):
            continue  # pooled together with its running_mean below
        values = [a[key] for a in arrays]
        if key.endswith("running_mean"):
            var_key = key[: -len("running_mean")] + "running_var"
            out[key], out[var_key] = pooled_mean_var(values, [a[var_key] for a in arrays], weights)
        else:
            out[key] = weighted_mean(values, weights)
    return out


def aggregate(
    state: Mapping[str, np.ndarray],
    updates: Sequence[ClientUpdate],
    shared_weights: Sequence[float] | None = None,
    mode_carry: Mapping[int, float] | None = None,
) -> State:
    """New global state from valid ``updates``; untrained modes carry their old values.

    ``shared_weights`` (default: each update's examples) weigh the shared entries. A mode's
    entries are averaged over its trainers weighted by examples; ``mode_carry[b]`` > 0 adds
    the previous global value of mode ``b`` as one more member of that average with that
    weight (its running statistics pooled like a client's), so a mode trained by a few
    devices this round moves toward them in proportion to their data instead of jumping.
    """
    new: State = {k: np.array(v, copy=True) for k, v in state.items()}
    if not updates:
        return new
    weights = shared_weights or [u.num_examples for u in updates]
    new.update(_aggregate_group(shared_keys(state), [u.arrays for u in updates], weights))
    for bits in sorted(model_modes(state)):
        trained = [u for u in updates if bits in u.trained_modes]
        if not trained:
            continue
        members = [u.arrays for u in trained]
        member_weights = [float(u.num_examples) for u in trained]
        carry = (mode_carry or {}).get(bits, 0.0)
        if carry > 0:
            members.insert(0, state)
            member_weights.insert(0, carry)
        new.update(_aggregate_group(mode_keys(state, bits), members, member_weights))
    return new
