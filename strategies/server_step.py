"""Server optimizers on the shared weights, computed by Flower's own strategies.

FedQDNN averages the shared weights itself (clients send different per-mode entries, which
Flower's aggregation would refuse); a server optimizer then turns that average into the new
global weights: FedAvgM (server momentum), FedAdam, FedYogi, FedAdagrad (Reddi et al., 2021).
Rather than copy their update rules, each Flower strategy is run with its weighted-averaging
step replaced by FedQDNN's average, so the arithmetic is Flower's; Flower's internals are
reached only through :class:`~strategies.flower_optimizer.FlowerOptimizer`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedqdnn.policies import ServerOptimizer
from strategies.flower_optimizer import FlowerOptimizer

State = dict[str, np.ndarray]


class ServerStep:
    """New shared weights from the current ones and this round's average.

    ``lr`` is the server learning rate (FedAvgM's ``server_learning_rate``, FedOpt's ``eta``);
    ``momentum`` is FedAvgM's ``server_momentum`` (FedOpt strategies use Flower's betas).
    The optimizer's moments are its state: :meth:`state` / :meth:`load_state` checkpoint them.
    """

    def __init__(self, kind: ServerOptimizer, lr: float, momentum: float) -> None:
        self.kind = kind
        self.optimizer = FlowerOptimizer(kind, lr, momentum)

    def apply(self, server_round: int, current: State, average: State) -> State:
        """Flower's update of ``current`` given the clients' ``average`` (same keys)."""
        new = self.optimizer.step(server_round, current, average)
        return {k: v.astype(current[k].dtype) for k, v in new.items()}

    def state(self) -> State:
        """The optimizer's moments, keyed ``<moment>/<entry>``."""
        return {
            f"{name}/{k}": v
            for name, moment in self.optimizer.moments().items()
            for k, v in moment.items()
        }

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore moments saved by :meth:`state` (resume)."""
        moments: dict[str, State] = {}
        for key, value in state.items():
            name, sep, entry = key.partition("/")
            if sep:
                moments.setdefault(name, {})[entry] = np.asarray(value)
        self.optimizer.load_moments(moments)
