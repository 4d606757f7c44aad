"""Server optimizers on the shared weights, computed by Flower's own strategies.

FedQDNN averages the shared weights itself (clients send different per-mode entries, which
Flower's aggregation would refuse); a server optimizer then turns that average into the new
global weights: FedAvgM (server momentum), FedAdam, FedYogi, FedAdagrad (Reddi et al., 2021).
Rather than copy their update rules, each Flower strategy is run with its weighted-averaging
step replaced by FedQDNN's average (:class:`_GivenAverage`), so the arithmetic is Flower's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi
from flwr.serverapp.strategy.fedopt import FedOpt

from fedqdnn.policies import ServerOptimizer

State = dict[str, np.ndarray]


class _GivenAverage(FedAvg):
    """FedAvg whose aggregation returns the average it is given (FedQDNN's)."""

    given: ArrayRecord | None = None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.given, None


def _flower_strategy(kind: ServerOptimizer, lr: float, momentum: float) -> FedAvg:
    """Flower's strategy for ``kind`` with its averaging replaced (MRO: kind -> given)."""
    if kind == ServerOptimizer.FEDAVGM:
        cls = type("FedAvgMStep", (FedAvgM, _GivenAverage), {})
        return cls(server_learning_rate=lr, server_momentum=momentum)
    base = {
        ServerOptimizer.FEDADAM: FedAdam,
        ServerOptimizer.FEDYOGI: FedYogi,
        ServerOptimizer.FEDADAGRAD: FedAdagrad,
    }[kind]
    cls = type(f"{base.__name__}Step", (base, _GivenAverage), {})
    return cls(eta=lr)


def _records(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.require(v, requirements="C")) for k, v in state.items()})


class ServerStep:
    """New shared weights from the current ones and this round's average.

    ``lr`` is the server learning rate (FedAvgM's ``server_learning_rate``, FedOpt's ``eta``);
    ``momentum`` is FedAvgM's ``server_momentum`` (FedOpt strategies use Flower's betas).
    The optimizer's moments are its state: :meth:`state` / :meth:`load_state` checkpoint them.
    """

    def __init__(self, kind: ServerOptimizer, lr: float, momentum: float) -> None:
        self.kind = kind
        self.flower = _flower_strategy(kind, lr, momentum)
        self._restored: dict[str, np.ndarray] | None = None  # FedAvgM momentum, by key

    def apply(self, server_round: int, current: State, average: State) -> State:
        """Flower's update of ``current`` given the clients' ``average`` (same keys)."""
        strategy = self.flower
        if isinstance(strategy, FedAvgM):
            strategy.current_arrays = _records(current)
            if self._restored is not None:  # Flower keeps momentum as a list in key order
                strategy.momentum_vector = [self._restored[k] for k in current]
                self._restored = None
        else:
            strategy.current_arrays = {k: np.asarray(v) for k, v in current.items()}
        strategy.given = _records({k: average[k] for k in current})
        new, _ = strategy.aggregate_train(server_round, [])
        return {k: v.numpy().astype(current[k].dtype) for k, v in new.items()}

    def state(self) -> State:
        """The optimizer's moments, keyed ``<moment>/<entry>``."""
        strategy = self.flower
        if isinstance(strategy, FedAvgM):
            if self._restored is not None:
                return {f"momentum/{k}": v for k, v in self._restored.items()}
            keys = list(strategy.current_arrays.keys()) if strategy.current_arrays else []
            vector = strategy.momentum_vector or []
            return {f"momentum/{k}": v for k, v in zip(keys, vector, strict=False)}
        assert isinstance(strategy, FedOpt)
        out = {f"m_t/{k}": v for k, v in (strategy.m_t or {}).items()}
        out.update({f"v_t/{k}": v for k, v in (strategy.v_t or {}).items()})
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore moments saved by :meth:`state` (resume)."""

        def moment(name: str) -> dict[str, np.ndarray] | None:
            prefix = f"{name}/"
            found = {
                k.removeprefix(prefix): np.asarray(v)
                for k, v in state.items()
                if k.startswith(prefix)
            }
            return found or None

        if isinstance(self.flower, FedAvgM):
            self._restored = moment("momentum")
        else:
            self.flower.m_t, self.flower.v_t = moment("m_t"), moment("v_t")
