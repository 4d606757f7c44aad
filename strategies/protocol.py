"""What the ServerApp needs from a strategy beyond Flower's Strategy API.

Flower's ``Strategy`` covers a round (configure/aggregate train and evaluate); a fedqdnn run
also binds partition ids to the run's random node IDs, keeps per-round client records for
results.json, and checkpoints those records. Every strategy the server runs implements this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedqdnn.schema import RoundRecord


@dataclass(frozen=True)
class NodeRoute:
    """How the devices (partition ids) taking part reach Flower's nodes.

    ``bound`` maps each device to the node that is that device (real devices, and simulations
    with one node per device); otherwise ``pool`` nodes serve the sampled devices in turn and
    every message names its device. ``modes``: a declared fleet's plan, the modes each device
    may train (its instructions carry them; a reply with others is refused). ``strata``: the
    groups a round's devices are drawn within (``sampling = stratified``); none: all at once.
    """

    devices: tuple[int, ...]
    bound: Mapping[int, int] | None = None
    pool: tuple[int, ...] = ()
    modes: Mapping[int, tuple[int, ...]] | None = None
    strata: tuple[tuple[int, ...], ...] | None = None

    def nodes_for(self, chosen: list[int]) -> list[int]:
        """The node each of ``chosen`` (sorted device ids) is sent to."""
        if self.bound is not None:
            return [self.bound[p] for p in chosen]
        return [self.pool[i % len(self.pool)] for i in range(len(chosen))]


def records_to_json(rounds: Mapping[int, RoundRecord]) -> dict[str, dict]:
    """Round records as JSON (round keys as strings, rows under their wire names)."""
    return {str(r): v.model_dump(by_alias=True) for r, v in rounds.items()}


def records_from_json(data: Mapping[str, dict]) -> dict[int, RoundRecord]:
    """Inverse of :func:`records_to_json`."""
    return {int(r): RoundRecord.model_validate(v) for r, v in data.items()}


class ServerStrategy(Protocol):
    """A Flower strategy the fedqdnn ServerApp can run, record and checkpoint."""

    rounds: dict[int, RoundRecord]  # per-round records (empty if the strategy keeps none)

    def bind_nodes(self, route: NodeRoute) -> None:
        """Learn how devices reach nodes (node IDs are random per run)."""

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """What a checkpoint keeps of the strategy: JSON (with "rounds") and arrays."""

    def load_state_dict(self, state: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s output (resume)."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower: the round's train instructions."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower: new global arrays and train metrics from the replies."""

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower: the round's evaluate instructions."""

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Flower: federated evaluation metrics from the replies."""
