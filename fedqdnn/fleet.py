"""A run's data and fleet, without Flower: the data set, the model, partitions and tiers.

What every process of a run derives from its config alike: the CLI checks the fleet with it
before Ray starts (:func:`resolve_fleet`, :func:`check_fleet`), the server builds the initial
model and holds the data (:func:`initial_model`, :func:`run_data`), and each simulated device
(:mod:`fedqdnn.device`) finds its partition and tier. Data and partitions are built once per
process and reused (a Ray worker serves many devices).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from fedqdnn.config import FederatedConfig
from fedqdnn.data_source import DataSource, load_source
from fedqdnn.data_splits import DatasetSplits
from fedqdnn.hardware import assign_profiles
from fedqdnn.models import QuantizableModel, build_model, default_model_for
from fedqdnn.partition import (
    MIN_PARTITION_SIZE,
    PartitionScheme,
    natural_id_count,
    partition_indices,
)

# ---------------------------------------------------------------- data and models


def _data_request(cfg: FederatedConfig) -> tuple[DataSource, str]:
    """(data source, natural-id column) of the run's data, hashable for caches."""
    natural = cfg.partition == PartitionScheme.NATURAL
    return cfg.data, cfg.partition_by if natural else ""


def run_data(cfg: FederatedConfig) -> DatasetSplits:
    """The run's data set (cached per process by :func:`~fedqdnn.data.load_dataset`)."""
    return load_source(*_data_request(cfg))


def model_name(cfg: FederatedConfig) -> str:
    """The model to build: the config's, else the one that fits the data's input shape."""
    return cfg.model or default_model_for(run_data(cfg).input_shape)


def build_model_for(cfg: FederatedConfig) -> QuantizableModel:
    """A fresh model of the run's architecture (initial weights from torch's global RNG)."""
    data = run_data(cfg)
    return build_model(
        model_name(cfg),
        cfg.bits,
        data.num_classes,
        data.in_channels,
        bn=cfg.bn,
        learnable_clip=cfg.learnable_clip,
        head=cfg.head,
    )


def initial_model(cfg: FederatedConfig) -> QuantizableModel:
    """The global model at round 0, reproducible from the seed."""
    torch.manual_seed(cfg.seed)
    return build_model_for(cfg)


# ---------------------------------------------------------------- the fleet


@functools.lru_cache(maxsize=4)
def _partitions(
    request: tuple[DataSource, str], num_clients: int, scheme: str, alpha: float, seed: int
) -> list[np.ndarray]:
    data = load_source(*request)
    return partition_indices(
        data.y_train.numpy(), num_clients, scheme, alpha, seed, groups=data.train_groups
    )


def fleet_partitions(cfg: FederatedConfig) -> list[np.ndarray]:
    """Training-set indices of every partition (cached per process)."""
    return _partitions(_data_request(cfg), cfg.num_clients, cfg.partition, cfg.alpha, cfg.seed)


def resolve_fleet(cfg: FederatedConfig) -> FederatedConfig:
    """``cfg`` with ``num-clients = 0`` replaced by the number of natural ids (one device
    each), after computing its partitions once, so that a fleet the data cannot give (too
    many clients, Dirichlet draws that leave one empty) fails here, before Ray starts."""
    if cfg.num_clients == 0:
        cfg = cfg.replace(num_clients=natural_id_count(run_data(cfg).train_groups))
    _check_examples(cfg)
    fleet_partitions(cfg)
    return cfg


def fleet_tiers(cfg: FederatedConfig) -> list[str]:
    """Hardware tier of every partition id: deterministic from the scenario and seed."""
    return assign_profiles(cfg.num_clients, cfg.tiers, cfg.seed)


def device_tier(cfg: FederatedConfig, partition_id: int) -> str:
    """Hardware tier of one partition."""
    return fleet_tiers(cfg)[partition_id]


# ---------------------------------------------------------------- checks before a run

UPDATE_COPIES = 2  # a reply's arrays are held twice while the server aggregates (message, numpy)


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's full state (what one device's update holds at most)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def server_round_bytes(cfg: FederatedConfig) -> int:
    """Memory the server needs in a round: the data set, plus every sampled device's update
    held at once (``ceil(fraction-train * devices)`` full states, :data:`UPDATE_COPIES` times)."""
    data = run_data(cfg)
    data_bytes = sum(
        t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_test, data.y_test)
    )
    sampled = max(1, math.ceil(cfg.fraction_train * len(cfg.participant_ids)))
    return data_bytes + sampled * UPDATE_COPIES * state_bytes(build_model_for(cfg))


def _check_examples(cfg: FederatedConfig) -> None:
    """Every device needs :data:`~fedqdnn.partition.MIN_PARTITION_SIZE` training examples."""
    examples = len(run_data(cfg).y_train)
    most = examples // MIN_PARTITION_SIZE
    if cfg.num_clients > most:
        raise ValueError(
            f"num-clients = {cfg.num_clients} is not allowed: {cfg.data.dataset} has {examples} "
            f"training examples and every device needs {MIN_PARTITION_SIZE}; allowed: at most "
            f"{most}"
        )


def check_fleet(cfg: FederatedConfig, available_bytes: int | None = None) -> None:
    """Refuse, before any work, a fleet that cannot exist: every device needs examples
    (:func:`_check_examples`), and a round's updates must fit in ``available_bytes``
    (unchecked when None)."""
    _check_examples(cfg)
    if available_bytes is not None:
        needed = server_round_bytes(cfg)
        if needed > available_bytes:
            raise ValueError(
                f"num-clients = {cfg.num_clients} is not allowed: the server would hold about "
                f"{needed / 2**30:.1f} GiB per round (the data set and every sampled device's "
                f"update), more than the {available_bytes / 2**30:.1f} GiB available; use fewer "
                "clients or a smaller fraction-train"
            )
    fleet_partitions(cfg)  # a Dirichlet split that leaves a device short fails here
    fleet_tiers(cfg)
