"""Sampling groups (fedqdnn/sampling.py): by the modes devices train, and by their most
frequent training label, checked against each simulated device's own training data."""

import numpy as np
import pytest

from fedqdnn.config import FederatedConfig
from fedqdnn.data_source import DataSource
from fedqdnn.device import device_for
from fedqdnn.round_plan import select_stratified
from fedqdnn.sampling import most_frequent_labels, sampling_strata

SKEWED = FederatedConfig(
    data=DataSource(dataset="synthetic"), num_clients=12, partition="dirichlet", alpha=0.1
)


def test_most_frequent_label_is_that_of_each_devices_training_split():
    labels = most_frequent_labels(SKEWED)
    for p in range(SKEWED.num_clients):
        own = device_for(SKEWED, p).y_train.numpy()
        counts = np.bincount(own)
        assert counts[labels[p]] == counts.max() and labels[p] == int(np.argmax(counts))


def test_label_strata_split_each_modes_group_by_label_in_order():
    cfg = SKEWED.replace(sampling="stratified-labels")
    modes, labels = cfg.device_train_modes(), most_frequent_labels(cfg)
    strata = sampling_strata(cfg)
    assert sorted(p for g in strata for p in g) == list(range(12))
    keys = [{(modes[p], labels[p]) for p in group} for group in strata]
    assert all(len(k) == 1 for k in keys)  # one (modes, label) per group
    ordered = [next(iter(k)) for k in keys]
    assert ordered == sorted(ordered) and len(set(ordered)) == len(ordered)
    by_modes = sampling_strata(cfg.replace(sampling="stratified"))
    for group in by_modes:  # each modes group is the union of its label groups
        assert sorted(p for g in strata if modes[g[0]] == modes[group[0]] for p in g) == list(group)


def test_every_round_draws_each_modes_group_in_proportion_under_label_strata():
    """Thirds of 30 devices, 6 a round: 2 from each modes group every round (its share is
    whole), spread over its label groups, whatever the labels."""
    cfg = SKEWED.replace(num_clients=30, alpha=0.5, sampling="stratified-labels")
    modes = cfg.device_train_modes()
    assert sorted(list(modes.values()).count(m) for m in set(modes.values())) == [10, 10, 10]
    strata = sampling_strata(cfg)
    assert len(strata) > 3
    for rnd in range(1, 30):
        chosen = select_stratified(strata, 0.2, cfg.seed, rnd)
        assert len(chosen) == 6
        assert sorted(sum(modes[p] == m for p in chosen) for m in set(modes.values())) == [2, 2, 2]


@pytest.mark.parametrize("value", ["stratified-labels"])
def test_label_strata_refused_for_a_declared_fleet(value):
    with pytest.raises(ValueError, match="the server knows no real device's labels"):
        FederatedConfig(fleet="declared", sampling=value)
