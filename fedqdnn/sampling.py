"""The groups a round's training devices are drawn within (config key ``sampling``).

Under label skew a round's few devices can miss whole classes, and the mode the fewest
devices train can be missing or crowded: the round's model then drifts. Stratified sampling
draws the round's devices within groups, in proportion to each group's size
(:func:`fedqdnn.round_plan.select_stratified`: every device's chance stays k / n):

* ``uniform``: one group, every participant (plain seeded sampling);
* ``stratified``: devices that train the same modes form a group;
* ``stratified-labels``: within those, devices whose training data's most frequent label is
  the same form a group (the groups in order of modes, then label, so the systematic draw
  also spreads a round over labels). The server needs each device's label counts: in a
  simulation it has them; real devices would have to report them, so a declared fleet is
  refused this value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedqdnn.config import FederatedConfig
from fedqdnn.device import shard_split
from fedqdnn.fleet import run_data
from fedqdnn.policies import Sampling
from fedqdnn.round_plan import strata_by


def most_frequent_labels(cfg: FederatedConfig) -> dict[int, int]:
    """Each participating device's most frequent label in its local training split (the
    smallest such label on a tie)."""
    labels = run_data(cfg).y_train.numpy()
    return {
        p: int(np.bincount(labels[shard_split(cfg, p)[0]]).argmax()) for p in cfg.participant_ids
    }


def sampling_strata(
    cfg: FederatedConfig, modes_of: Mapping[int, Sequence[int]] | None = None
) -> tuple[tuple[int, ...], ...]:
    """The groups of ``cfg``'s sampling (module docstring). ``modes_of``: the modes each device
    trains, by default the simulated fleet's (:meth:`FederatedConfig.device_train_modes`); a
    declared fleet passes its plan."""
    if cfg.sampling == Sampling.UNIFORM:
        return (tuple(sorted(modes_of or cfg.participant_ids)),)
    modes = cfg.device_train_modes() if modes_of is None else modes_of
    if cfg.sampling == Sampling.STRATIFIED:
        return strata_by({p: tuple(sorted(m)) for p, m in modes.items()})
    label = most_frequent_labels(cfg)
    return strata_by({p: (tuple(sorted(m)), label[p]) for p, m in modes.items()})
