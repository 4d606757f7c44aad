"""Server optimizers on the shared weights: Flower's math, checked against the formulas, and
FedQDNN's optional per-mode carry and weighting, checked by hand."""

import flwr
import numpy as np
import pytest
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi

from fedqdnn.policies import ServerOptimizer
from strategies.aggregation import ClientUpdate, aggregate
from strategies.flower_optimizer import FEDAVGM_ATTRIBUTES, FEDOPT_ATTRIBUTES, FlowerOptimizer
from strategies.server_step import ServerStep

W = "w"


def test_fedavgm_is_sgd_with_momentum_on_the_pseudo_gradient():
    step = ServerStep(ServerOptimizer.FEDAVGM, lr=0.5, momentum=0.9)
    current = {W: np.array([1.0, 2.0], np.float32)}
    out = step.apply(1, current, {W: np.array([0.0, 0.0], np.float32)})
    # pseudo-gradient g1 = current - average = [1, 2]; first momentum = g1
    assert np.allclose(out[W], [1.0 - 0.5 * 1.0, 2.0 - 0.5 * 2.0])
    out2 = step.apply(2, out, {W: np.array([0.5, 0.5], np.float32)})
    # g2 = [0, 0.5]; momentum = 0.9 * [1, 2] + g2 = [0.9, 2.3]
    assert np.allclose(out2[W], [0.5 - 0.5 * 0.9, 1.0 - 0.5 * 2.3])
    assert out2[W].dtype == np.float32


def test_fedadam_matches_the_adam_formula():
    step = ServerStep(ServerOptimizer.FEDADAM, lr=0.1, momentum=0.0)
    x = np.array([1.0], np.float32)
    delta = -0.2  # the clients moved the weight from 1.0 to 0.8
    out = step.apply(1, {W: x}, {W: x + delta})
    m = 0.1 * delta  # beta1 0.9: m = (1 - 0.9) * delta
    v = 0.01 * delta**2  # beta2 0.99: v = (1 - 0.99) * delta^2
    eta = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)  # Flower's bias correction at round 1
    assert out[W] == pytest.approx(1.0 + eta * m / (np.sqrt(v) + 1e-3), rel=1e-5)


@pytest.mark.parametrize("kind", [ServerOptimizer.FEDAVGM, ServerOptimizer.FEDYOGI])
def test_moments_survive_a_checkpoint(kind):
    rng = np.random.default_rng(0)
    states = [{W: rng.normal(size=3).astype(np.float32)} for _ in range(4)]

    def run(steps, restart_after=None):
        step, x = ServerStep(kind, 0.3, 0.5), {W: np.ones(3, np.float32)}
        for r, average in enumerate(steps, 1):
            x = step.apply(r, x, average)
            if r == restart_after:
                saved = step.state()
                step = ServerStep(kind, 0.3, 0.5)
                step.load_state(saved)
        return x

    assert np.array_equal(run(states)[W], run(states, restart_after=2)[W])


def _update(value, n, modes):
    arrays = {"shared": np.array([value]), "m.bits2.weight": np.array([value])}
    return ClientUpdate(arrays, n, modes)


def test_mode_carry_and_shared_weights_hand_computed():
    state = {"shared": np.array([0.0]), "m.bits2.weight": np.array([10.0])}
    updates = [_update(1.0, 1, (2,)), _update(4.0, 3, (2,))]
    plain = aggregate(state, updates)
    assert plain["shared"][0] == pytest.approx(3.25) and plain["m.bits2.weight"][0] == 3.25
    carried = aggregate(state, updates, shared_weights=[2, 1], mode_carry={2: 4.0})
    assert carried["shared"][0] == pytest.approx((2 * 1 + 1 * 4) / 3)
    # the previous global value joins with weight 4: (4*10 + 1*1 + 3*4) / 8
    assert carried["m.bits2.weight"][0] == pytest.approx(53 / 8)


# ---- Flower's internals that strategies/flower_optimizer.py relies on (fail loudly on upgrade)

CURRENT = {"a": np.array([1.0, 2.0], np.float32), "b": np.array([[3.0]], np.float32)}
AVERAGE = {"a": np.array([0.5, 2.5], np.float32), "b": np.array([[2.0]], np.float32)}
DELTA = {k: AVERAGE[k] - CURRENT[k] for k in CURRENT}  # what the clients moved: -g


def _relied_on(strategy, attribute: str, what: str):
    """``strategy.attribute``, failing with the attribute and the Flower version if absent."""
    name = type(strategy).__name__
    assert hasattr(strategy, attribute), (
        f"flwr {flwr.__version__}: {name} has no attribute {attribute!r} ({what}), which "
        "strategies/flower_optimizer.py reads and writes; adapt it to this Flower version"
    )
    return getattr(strategy, attribute)


def _expect(strategy, attribute: str, got: dict, want: dict) -> None:
    name = type(strategy).__name__
    problem = f"flwr {flwr.__version__}: {name}.{attribute} no longer holds what "
    problem += "strategies/flower_optimizer.py expects"
    assert list(got) == list(want), f"{problem}: keys {list(got)}, expected {list(want)}"
    for k in want:
        assert np.shape(got[k]) == want[k].shape, f"{problem}: {k!r} {np.shape(got[k])}"
        assert np.allclose(got[k], want[k], rtol=1e-6), f"{problem}: {k!r} {got[k]} != {want[k]}"


@pytest.mark.parametrize(
    ("cls", "attributes"),
    [(FedAvgM, FEDAVGM_ATTRIBUTES)]
    + [(c, FEDOPT_ATTRIBUTES) for c in (FedAdam, FedYogi, FedAdagrad)],
)
def test_flower_strategies_have_the_attributes_relied_on(cls, attributes):
    strategy = cls()
    for attribute in attributes:
        assert _relied_on(strategy, attribute, "unset before the first round") is None


def test_flower_fedavgm_keeps_weights_and_momentum_where_relied_on():
    optimizer = FlowerOptimizer(ServerOptimizer.FEDAVGM, lr=0.5, momentum=0.9)
    strategy = optimizer.strategy
    assert isinstance(strategy, FedAvgM)
    new = optimizer.step(1, CURRENT, AVERAGE)
    # first round: momentum = pseudo-gradient g = current - average; new = current - 0.5 g
    want_new = {k: CURRENT[k] + 0.5 * DELTA[k] for k in CURRENT}
    _expect(strategy, "step result", new, want_new)
    current = _relied_on(strategy, "current_arrays", "the global weights, an ArrayRecord")
    assert isinstance(current, ArrayRecord), f"flwr {flwr.__version__}: {type(current)}"
    _expect(strategy, "current_arrays", {k: v.numpy() for k, v in current.items()}, want_new)
    vector = _relied_on(strategy, "momentum_vector", "a list of arrays in key order")
    assert isinstance(vector, list), f"flwr {flwr.__version__}: momentum_vector {type(vector)}"
    gradient = {k: -d for k, d in DELTA.items()}
    _expect(strategy, "momentum_vector", dict(zip(CURRENT, vector, strict=False)), gradient)
    assert list(optimizer.moments()) == ["momentum"]
    _expect(strategy, "momentum", optimizer.moments()["momentum"], gradient)


@pytest.mark.parametrize(
    ("kind", "beta_1", "v_t"),
    [
        (ServerOptimizer.FEDADAM, 0.9, lambda d: 0.01 * d**2),  # beta_2 0.99
        (ServerOptimizer.FEDYOGI, 0.9, lambda d: 0.01 * d**2),  # v0 = 0: -(1-b2) d^2 sign(-d^2)
        (ServerOptimizer.FEDADAGRAD, 0.0, lambda d: d**2),
    ],
)
def test_flower_fedopt_keeps_weights_and_moments_where_relied_on(kind, beta_1, v_t):
    optimizer = FlowerOptimizer(kind, lr=0.1, momentum=0.0)
    strategy = optimizer.strategy
    optimizer.step(1, CURRENT, AVERAGE)
    current = _relied_on(strategy, "current_arrays", "the global weights, a dict of arrays")
    _expect(strategy, "current_arrays", current, CURRENT)  # set by us, read by Flower's step
    want_m = {k: (1 - beta_1) * d for k, d in DELTA.items()}
    want_v = {k: v_t(d) for k, d in DELTA.items()}
    _expect(strategy, "m_t", _relied_on(strategy, "m_t", "first moment by key"), want_m)
    _expect(strategy, "v_t", _relied_on(strategy, "v_t", "second moment by key"), want_v)
    assert list(optimizer.moments()) == ["m_t", "v_t"]
    _expect(strategy, "m_t", optimizer.moments()["m_t"], want_m)
