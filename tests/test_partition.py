"""Client partitions: disjoint cover, IID balance, Dirichlet skew vs alpha, natural ids, seeds,
errors."""

import numpy as np
import pytest

from fedqdnn.partition import natural_id_count, partition_indices, split_local


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 10, size=600)


def _assert_disjoint(parts: list[np.ndarray]) -> np.ndarray:
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    return joined


def _max_label_fraction(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean over clients of the share of its most common label (1/classes = no skew)."""
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


def test_iid_covers_all_indices_with_balanced_sizes(labels):
    parts = partition_indices(labels, 7, "iid", seed=1)
    assert len(parts) == 7
    joined = _assert_disjoint(parts)
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 600
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    # shuffled: partition 0 is not simply the first 86 rows
    assert not np.array_equal(parts[0], np.arange(len(parts[0])))


def test_partitions_are_deterministic_per_seed(labels):
    for scheme in ("iid", "dirichlet"):
        a = partition_indices(labels, 5, scheme, seed=3)
        b = partition_indices(labels, 5, scheme, seed=3)
        c = partition_indices(labels, 5, scheme, seed=4)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks(labels):
    skewed = partition_indices(labels, 10, "dirichlet", alpha=0.1, seed=0)
    mild = partition_indices(labels, 10, "dirichlet", alpha=100.0, seed=0)
    for parts in (skewed, mild):
        _assert_disjoint(parts)
        assert min(len(p) for p in parts) >= 2
    iid = partition_indices(labels, 10, "iid", seed=0)
    assert _max_label_fraction(skewed, labels) > 0.4
    assert _max_label_fraction(skewed, labels) > _max_label_fraction(mild, labels) + 0.2
    assert _max_label_fraction(mild, labels) < 0.25 and _max_label_fraction(iid, labels) < 0.25


def test_single_partition_and_one_sample_per_client():
    labels = np.array([0, 1, 1, 0, 2])
    (only,) = partition_indices(labels, 1)
    assert np.array_equal(only, np.arange(5))
    parts = partition_indices(labels, 5, min_partition_size=1)
    assert sorted(int(p[0]) for p in parts) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_partitions": 0}, r"num_partitions 0 is invalid; allowed: an integer in \[1, 600\]"),
        ({"num_partitions": 601}, r"num_partitions 601 is invalid"),
        ({"num_partitions": 2.5}, r"num_partitions 2.5 is invalid"),
        ({"num_partitions": 4, "scheme": "shards"}, r"scheme 'shards' is unknown; allowed: iid"),
        ({"num_partitions": 4, "scheme": "dirichlet", "alpha": 0}, r"alpha 0 is invalid"),
        ({"num_partitions": 4, "scheme": "dirichlet", "alpha": -1.0}, r"alpha -1.0 is invalid"),
        ({"num_partitions": 4, "seed": -1}, r"seed -1 is invalid"),
        ({"num_partitions": 4, "min_partition_size": -1}, r"min_partition_size -1 is invalid"),
        ({"num_partitions": 400}, r"give 1 per client < min_partition_size 2; use fewer"),
        (
            {"num_partitions": 300, "scheme": "dirichlet", "min_partition_size": 3},
            r"cannot give 300 partitions of >= 3 samples",
        ),
    ],
)
def test_bad_arguments(labels, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        partition_indices(labels, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_labels():
    with pytest.raises(ValueError, match=r"labels of shape \(0,\) are invalid"):
        partition_indices(np.array([], dtype=np.int64), 1)
    with pytest.raises(ValueError, match=r"labels of shape \(2, 2\)"):
        partition_indices(np.zeros((2, 2), dtype=np.int64), 1)


def test_dirichlet_failure_is_one_clear_error():
    labels = np.repeat(np.arange(10), 3)  # 30 samples, 10 clients, very skewed draws
    with pytest.raises(ValueError, match=r"use fewer clients, a larger alpha") as info:
        partition_indices(labels, 10, "dirichlet", alpha=0.01, seed=0, min_partition_size=3)
    assert "\n" not in str(info.value)


# writer of each of 12 samples: "ann" 3, "bob" 4, "cid" 1, "dee" 2, "eve" 2 samples
WRITERS = np.array(
    ["bob", "ann", "dee", "bob", "eve", "ann", "cid", "bob", "dee", "ann", "bob", "eve"]
)


def test_natural_partitions_are_the_writers_in_sorted_order():
    parts = partition_indices(np.zeros(12, dtype=np.int64), 4, "natural", groups=WRITERS)
    # "cid" holds 1 sample < min_partition_size 2: left out; the rest in sorted id order
    expected = {"ann": [1, 5, 9], "bob": [0, 3, 7, 10], "dee": [2, 8], "eve": [4, 11]}
    assert [p.tolist() for p in parts] == list(expected.values())
    assert natural_id_count(WRITERS) == 4 and natural_id_count(WRITERS, 3) == 2
    assert natural_id_count(WRITERS, 1) == 5


def test_natural_partitions_capped_to_a_seeded_sample_of_writers():
    labels = np.zeros(12, dtype=np.int64)
    everyone = [p.tolist() for p in partition_indices(labels, 4, "natural", groups=WRITERS)]
    picks = {
        seed: [
            p.tolist() for p in partition_indices(labels, 2, "natural", seed=seed, groups=WRITERS)
        ]
        for seed in range(6)
    }
    for parts in picks.values():  # two whole writers, still in sorted order
        assert len(parts) == 2 and all(p in everyone for p in parts)
        assert everyone.index(parts[0]) < everyone.index(parts[1])
    assert picks[0] == [
        p.tolist() for p in partition_indices(labels, 2, "natural", seed=0, groups=WRITERS)
    ]
    assert len({str(p) for p in picks.values()}) > 1  # the seed chooses which writers


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "partition scheme 'natural' needs the natural id of every sample"),
        ({"groups": WRITERS[:5]}, r"groups of shape \(5,\) are invalid; allowed: shape \(12,\)"),
        (
            {"groups": WRITERS, "num_partitions": 5},
            "5 natural partitions asked for, but only 4 ids hold >= 2 samples; use at most 4",
        ),
    ],
)
def test_natural_bad_arguments(kwargs, message):
    kwargs = {"num_partitions": 2, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        partition_indices(np.zeros(12, dtype=np.int64), scheme="natural", **kwargs)
    assert "\n" not in str(info.value)


def test_split_local():
    idx = np.arange(100, 120)
    train, test = split_local(idx, 0.25, seed=0)
    assert len(test) == 5 and len(train) == 15
    assert np.array_equal(np.sort(np.concatenate([train, test])), idx)
    again = split_local(idx, 0.25, seed=0)
    assert np.array_equal(again[1], test) and np.array_equal(again[0], train)
    assert not np.array_equal(split_local(idx, 0.25, seed=1)[1], test)
    # tiny clients: at least one test sample from 2, never all of them; 1 sample trains only
    assert [len(x) for x in split_local(np.array([7, 9]), 0.01, seed=0)] == [1, 1]
    assert [len(x) for x in split_local(np.arange(3), 0.99, seed=0)] == [1, 2]
    train, test = split_local(np.array([4]), 0.2, seed=0)
    assert train.tolist() == [4] and len(test) == 0
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"test_fraction .* is invalid; allowed: 0 < f < 1"):
            split_local(idx, bad, seed=0)


@pytest.mark.parametrize("n, k, seed", [(1000, 7, 0), (1003, 10, 5), (200, 100, 1), (1437, 9, 0)])
def test_iid_equals_flower_iid_partitioner_on_the_shuffled_rows(n, k, seed):
    """Independent reference: Flower's IidPartitioner, one shard per partition."""
    from datasets import Dataset
    from flwr_datasets.partitioner import IidPartitioner

    labels = np.arange(n) % 10
    partitioner = IidPartitioner(num_partitions=k)
    table = Dataset.from_dict({"index": np.arange(n), "label": labels})
    partitioner.dataset = table.shuffle(seed=seed)
    expected = [np.sort(partitioner.load_partition(p)[:]["index"]) for p in range(k)]
    got = partition_indices(labels, k, "iid", seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_dirichlet_rows_equal_flower_partitions_loaded_one_by_one(labels):
    """The partitioner's table of rows gives what loading each partition gives."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner

    partitioner = DirichletPartitioner(
        num_partitions=20, partition_by="label", alpha=0.5, min_partition_size=2,
        self_balancing=False, shuffle=True, seed=4,
    )  # fmt: skip
    partitioner.dataset = Dataset.from_dict({"index": np.arange(len(labels)), "label": labels})
    expected = [np.sort(partitioner.load_partition(p)[:]["index"]) for p in range(20)]
    got = partition_indices(labels, 20, "dirichlet", alpha=0.5, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
