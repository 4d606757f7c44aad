"""Client partitions of in-memory labels, via Flower Datasets' partitioners.

Our data sets are tensors, not Hugging Face datasets, so the labels (or natural ids) are wrapped
in a two-column ``datasets.Dataset`` (``index``, ``label`` / ``group``) only to run Flower's
partitioners on them; what comes back is each partition's index array into the caller's
tensors. Using Flower's partitioners keeps our IID, Dirichlet and natural splits identical in
algorithm to Flower baselines (niid_bench, FEMNIST by writer etc.).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from enum import StrEnum

import numpy as np


class PartitionScheme(StrEnum):
    """How the training data is split over devices."""

    IID = "iid"
    DIRICHLET = "dirichlet"
    NATURAL = "natural"  # one partition per natural id (e.g. FEMNIST's writer)


PARTITION_SCHEMES = tuple(s.value for s in PartitionScheme)
MIN_PARTITION_SIZE = 2  # examples a device needs at least: one to train, one to test locally


def _label_dataset(labels: np.ndarray, column: str = "label"):
    """The table the partitioners split: row index and label (or natural id), in Arrow format
    so that a column reads as one Arrow array (in the default format ``datasets`` 4 hands out
    a lazy column that numpy reads row by row: seconds for 100,000 rows, per partition)."""
    from datasets import Dataset

    table = Dataset.from_dict({"index": np.arange(len(labels)), column: labels})
    return table.with_format("arrow")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        raise ValueError(f"{name} {value!r} is invalid; allowed: {allowed}")
    return int(value)


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_partition_size: int = MIN_PARTITION_SIZE,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Split sample indices ``0..len(labels)-1`` into ``num_partitions`` disjoint client sets.

    Parameters
    ----------
    labels : np.ndarray
        Integer class label of every sample (1-D).
    num_partitions : int
        Number of clients, 1 <= num_partitions <= len(labels).
    scheme : str, default "iid"
        ``"iid"``: rows shuffled by ``seed``, then cut into contiguous shards (Flower's
        ``IidPartitioner`` does not shuffle); sizes differ by at most one and every index is
        used. ``"dirichlet"``: Flower's ``DirichletPartitioner`` (per-class shares drawn from
        Dir(alpha), no self-balancing, resampled up to 10 times until every client holds at
        least ``min_partition_size`` samples); smaller ``alpha`` means more label skew.
        ``"natural"``: Flower's ``NaturalIdPartitioner`` on ``groups``: one partition per id
        holding at least ``min_partition_size`` samples, ids in sorted order; when there are
        more ids than ``num_partitions``, a seeded sample of them (still in sorted order).
    alpha : float, default 0.5
        Dirichlet concentration, > 0 (ignored for "iid").
    seed : int, default 0
        Seed of the shuffle / Dirichlet draws; the same seed gives the same partitions.
    min_partition_size : int, default 2
        Fewest samples a client may hold (2 allows a local train/test split); checked for every
        scheme.
    groups : np.ndarray, optional
        Natural id of every sample (same length as ``labels``); required for "natural".

    Returns
    -------
    list[np.ndarray]
        One sorted int64 index array per partition id.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(
            f"labels of shape {labels.shape} are invalid; allowed: a non-empty 1-D array"
        )
    n = len(labels)
    num_partitions = _check_int("num_partitions", num_partitions, 1, n)
    min_partition_size = _check_int("min_partition_size", min_partition_size, 0)
    seed = _check_int("seed", seed, 0)
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(
            f"partition scheme {scheme!r} is unknown; allowed: {', '.join(PARTITION_SCHEMES)}"
        )
    if scheme == "natural":
        return _natural(_checked_groups(groups, n), num_partitions, seed, min_partition_size)
    if scheme == "iid":
        if n // num_partitions < min_partition_size:
            raise ValueError(
                f"{n} samples over {num_partitions} iid partitions give {n // num_partitions} "
                f"per client < min_partition_size {min_partition_size}; use fewer clients"
            )
        return _iid(labels, num_partitions, seed)
    is_number = isinstance(alpha, int | float | np.floating) and not isinstance(alpha, bool)
    if not is_number or not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"dirichlet alpha {alpha!r} is invalid; allowed: a number > 0")
    if num_partitions * min_partition_size > n:
        raise ValueError(
            f"{n} samples cannot give {num_partitions} partitions of >= {min_partition_size} "
            "samples; use fewer clients or a smaller min_partition_size"
        )
    return _dirichlet(labels, num_partitions, float(alpha), seed, min_partition_size)


def _indices_of(partitioner, num_partitions: int) -> list[np.ndarray]:
    """Every partition's sorted row indices.

    The first ``load_partition`` makes a Dirichlet or natural-id partitioner compute every
    partition's rows; each further call only selects rows (about 5 ms: fingerprinting, an
    index table), which for a 1,000-device fleet was seconds of every process's start-up. The
    rows are therefore read from the partitioner's table of them where it keeps one
    (flwr-datasets 0.6), and loaded one partition at a time where it does not.
    """
    first = np.asarray(partitioner.load_partition(0)["index"], dtype=np.int64)
    rows = getattr(partitioner, "_partition_id_to_indices", None)
    if not isinstance(rows, dict) or len(rows) != num_partitions:
        rows = {pid: partitioner.load_partition(pid)["index"] for pid in range(1, num_partitions)}
    return [np.sort(first)] + [
        np.sort(np.asarray(rows[pid], dtype=np.int64)) for pid in range(1, num_partitions)
    ]


def _iid(labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
    """The rows shuffled by ``seed``, cut into contiguous shards as Flower's ``IidPartitioner``
    cuts them (``Dataset.shard(contiguous=True)``: the first ``n % k`` shards one row longer),
    all at once rather than one ``shard`` call per partition. The shuffle is the permutation
    ``Dataset.shuffle(seed=seed)`` draws (``default_rng(seed).permutation(n)``), computed
    without importing ``datasets`` (pyarrow, pandas: about a second of every device process)."""
    order = np.random.default_rng(seed).permutation(len(labels)).astype(np.int64)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def _dirichlet(
    labels: np.ndarray, num_partitions: int, alpha: float, seed: int, min_size: int
) -> list[np.ndarray]:
    from flwr_datasets.partitioner import DirichletPartitioner

    partitioner = DirichletPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        alpha=alpha,
        min_partition_size=min_size,
        self_balancing=False,
        shuffle=True,
        seed=seed,
    )
    partitioner.dataset = _label_dataset(labels)
    try:
        with warnings.catch_warnings():
            # Flower warns on every resampling; the outcome (success or our error) is what counts.
            warnings.filterwarnings("ignore", message="The specified min_partition_size")
            return _indices_of(partitioner, num_partitions)
    except ValueError:
        raise ValueError(
            f"dirichlet partitioning of {len(labels)} samples into {num_partitions} clients with "
            f"alpha={alpha} left a client under min_partition_size {min_size} after 10 draws; "
            "use fewer clients, a larger alpha or a smaller min_partition_size"
        ) from None


def _checked_groups(groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        raise ValueError("partition scheme 'natural' needs the natural id of every sample")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups of shape {groups.shape} are invalid; allowed: shape ({n},)")
    return groups


def natural_id_count(groups: np.ndarray, min_partition_size: int = 2) -> int:
    """How many natural ids hold at least ``min_partition_size`` samples (the largest fleet)."""
    _, counts = np.unique(np.asarray(groups), return_counts=True)
    return int((counts >= min_partition_size).sum())


def _natural(groups: np.ndarray, num_partitions: int, seed: int, min_size: int) -> list[np.ndarray]:
    from flwr_datasets.partitioner import NaturalIdPartitioner

    partitioner = NaturalIdPartitioner(partition_by="group")
    partitioner.dataset = _label_dataset(groups, column="group")
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar, once per process
        everyone = _indices_of(partitioner, partitioner.num_partitions)
    parts = [p for p in everyone if len(p) >= min_size]
    if num_partitions > len(parts):
        raise ValueError(
            f"{num_partitions} natural partitions asked for, but only {len(parts)} ids hold >= "
            f"{min_size} samples; use at most {len(parts)} clients (num-clients = 0: one per id)"
        )
    if num_partitions == len(parts):
        return parts
    chosen = np.random.default_rng(seed).choice(len(parts), num_partitions, replace=False)
    return [parts[i] for i in np.sort(chosen)]


def split_local(
    indices: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split of one client's indices (both returned sorted).

    The test part has ``round(len * test_fraction)`` samples, but at least 1 when the client
    holds 2 or more, and never all of them, so every client can both train and evaluate.
    """
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(f"indices of shape {indices.shape} are invalid; allowed: a 1-D array")
    is_number = isinstance(test_fraction, int | float | np.floating)
    if not is_number or isinstance(test_fraction, bool) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction {test_fraction!r} is invalid; allowed: 0 < f < 1")
    seed = _check_int("seed", seed, 0)
    n = len(indices)
    n_test = 0 if n < 2 else min(max(1, round(n * test_fraction)), n - 1)
    shuffled = np.random.default_rng(seed).permutation(indices)
    return np.sort(shuffled[n_test:]), np.sort(shuffled[:n_test])


__all__ = [
    "MIN_PARTITION_SIZE",
    "PARTITION_SCHEMES",
    "PartitionScheme",
    "natural_id_count",
    "partition_indices",
    "split_local",
]
