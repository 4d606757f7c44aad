"""Flower's own FedAvg, runnable by the fedqdnn ServerApp (the equivalence yardstick).

Only valid when every client replies with the same keys (e.g. the uniform-fp32 scenario);
it samples Flower's random node IDs itself and keeps no per-client records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.serverapp.strategy import FedAvg

from fedqdnn.schema import RoundRecord
from strategies.protocol import NodeRoute, records_from_json, records_to_json


class PlainFedAvg(FedAvg):
    """``flwr.serverapp.strategy.FedAvg`` with the fedqdnn server's small interface."""

    def __init__(self, num_nodes: int, fraction_train: float, fraction_evaluate: float) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=max(1, math.ceil(fraction_train * num_nodes)),
            min_evaluate_nodes=max(1, math.ceil(fraction_evaluate * num_nodes)),
            min_available_nodes=num_nodes,
        )
        self.rounds: dict[int, RoundRecord] = {}

    def bind_nodes(self, route: NodeRoute) -> None:
        """FedAvg samples node IDs itself; each node is the device of its partition-id."""

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Round records only (Flower's FedAvg has no other state)."""
        return {"rounds": records_to_json(self.rounds)}, {}

    def load_state_dict(self, state: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore the round records."""
        self.rounds = records_from_json(state.get("rounds", {}))
