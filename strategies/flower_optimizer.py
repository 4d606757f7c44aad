"""The one place that reads and writes Flower's server-optimizer internals.

FedQDNN runs Flower's FedAvgM, FedAdam, FedYogi and FedAdagrad (flwr 1.42) with their averaging
replaced, and has to set their current weights and save / restore their moments. Flower keeps
these in attributes it does not document as API:

* FedAvgM: ``current_arrays`` (an ArrayRecord), ``momentum_vector`` (a list of arrays in the
  order of ``current_arrays``' keys, None before the first step);
* FedOpt (FedAdam, FedYogi, FedAdagrad): ``current_arrays``, ``m_t`` and ``v_t`` (dicts of
  arrays by key, None before the first step).

A Flower upgrade may rename or reshape them; every access is here, and
tests/test_server_step.py checks them against a hand-computed step of each kind, naming the
attribute and the Flower version when they no longer hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi
from flwr.serverapp.strategy.fedopt import FedOpt

from fedqdnn.policies import ServerOptimizer
from strategies.records import to_arrayrecord, to_state

State = dict[str, np.ndarray]

# The private attributes relied on, per Flower class (checked by tests/test_server_step.py).
FEDAVGM_ATTRIBUTES = ("current_arrays", "momentum_vector")
FEDOPT_ATTRIBUTES = ("current_arrays", "m_t", "v_t")


class _GivenAverage(FedAvg):
    """FedAvg whose aggregation returns the average it is given (FedQDNN's)."""

    given: ArrayRecord | None = None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.given, None


def flower_strategy(kind: ServerOptimizer, lr: float, momentum: float) -> FedAvgM | FedOpt:
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


class FlowerOptimizer:
    """One of Flower's server optimizers, stepped on given weights and average.

    Moments are exchanged as ``{moment name: {entry key: array}}``: ``momentum`` (FedAvgM),
    ``m_t`` and ``v_t`` (FedOpt). FedAvgM keeps its momentum as a list in key order, so
    restored momentum waits here until the next step names the keys.
    """

    def __init__(self, kind: ServerOptimizer, lr: float, momentum: float) -> None:
        self.strategy = flower_strategy(kind, lr, momentum)
        self._pending_momentum: State | None = None  # FedAvgM momentum, by key

    @property
    def is_fedavgm(self) -> bool:
        return isinstance(self.strategy, FedAvgM)

    def step(self, server_round: int, current: State, average: State) -> State:
        """Flower's update of ``current`` given ``average`` (same keys, ``current``'s order)."""
        strategy = self.strategy
        if self.is_fedavgm:
            strategy.current_arrays = to_arrayrecord(current)
            if self._pending_momentum is not None:
                strategy.momentum_vector = [self._pending_momentum[k] for k in current]
                self._pending_momentum = None
        else:
            strategy.current_arrays = {k: np.asarray(v) for k, v in current.items()}
        strategy.given = to_arrayrecord({k: average[k] for k in current})
        new, _ = strategy.aggregate_train(server_round, [])
        return to_state(new)

    def moments(self) -> dict[str, State]:
        """The optimizer's moments by name, each keyed by entry (empty before a step)."""
        strategy = self.strategy
        if self.is_fedavgm:
            if self._pending_momentum is not None:
                return {"momentum": dict(self._pending_momentum)}
            keys = list(strategy.current_arrays.keys()) if strategy.current_arrays else []
            vector = strategy.momentum_vector or []
            return {"momentum": dict(zip(keys, vector, strict=False))}
        return {"m_t": dict(strategy.m_t or {}), "v_t": dict(strategy.v_t or {})}

    def load_moments(self, moments: Mapping[str, State]) -> None:
        """Restore moments returned by :meth:`moments` (an empty one: not started)."""
        if self.is_fedavgm:
            self._pending_momentum = dict(moments.get("momentum", {})) or None
        else:
            self.strategy.m_t = dict(moments.get("m_t", {})) or None
            self.strategy.v_t = dict(moments.get("v_t", {})) or None
