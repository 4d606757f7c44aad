"""Server optimizers on the shared weights: Flower's math, checked against the formulas, and
FedQDNN's optional per-mode carry and weighting, checked by hand."""

import numpy as np
import pytest

from fedqdnn.policies import ServerOptimizer
from strategies.aggregation import ClientUpdate, aggregate
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
