"""The gradient-agreement diagnostic: cosines hand-computed; each mode's gradient checked
against one backward of the summed loss."""

import numpy as np
import pytest
import torch

from fedqdnn.bitmodes import mode_of_state_key
from fedqdnn.config import FederatedConfig
from fedqdnn.device import device_for, load_state
from fedqdnn.fleet import build_model_for
from fedqdnn.losses import consistency_loss
from simulations.diagnose import cosine, gradient_agreement, mode_gradients


def test_gradient_agreement_cosines_hand_computed():
    grads = {
        0: {2: np.array([1.0, 0.0]), 32: np.array([1.0, 1.0])},  # same device: cos 0.7071
        1: {2: np.array([-1.0, 0.0])},  # against device 0's 2-bit: cos -1
    }
    got = gradient_agreement(grads)
    assert got["same_device"]["2-32"] == {
        "pairs": 1, "mean_cosine": pytest.approx(0.7071068), "share_negative": 0.0
    }  # fmt: skip
    assert got["same_mode"]["2"] == {"pairs": 1, "mean_cosine": -1.0, "share_negative": 1.0}
    assert got["same_mode"]["32"]["pairs"] == 0 and got["same_mode"]["32"]["mean_cosine"] is None
    # across devices, 2-bit of one against 32-bit of another: only device 1's 2-bit against
    # device 0's 32-bit, (-1, 0) . (1, 1) / sqrt(2) = -0.7071
    assert got["across"]["2-32"]["mean_cosine"] == pytest.approx(-0.7071068)
    # the 2-bit mean is (0, 0): no direction, cosine 0 by definition
    assert got["to_mode_mean"]["2"]["mean_cosine"] == 0.0
    assert cosine(np.zeros(2), np.ones(2)) == 0.0


def test_mode_gradients_sum_to_one_backward_of_the_summed_loss():
    cfg = FederatedConfig(num_clients=6, rounds=1)
    model = build_model_for(cfg)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    grads = mode_gradients(cfg, state)
    pid = next(p for p, by_mode in grads.items() if 32 in by_mode)  # an FP32-capable device
    assert sorted(grads[pid]) == [2, 4, 32]
    assert any(sorted(by_mode) == [2] for by_mode in grads.values())  # an MCU: 2-bit only
    device = device_for(cfg, pid)
    load_state(device.model, {k: torch.from_numpy(v.copy()) for k, v in state.items()})
    device.model.train()
    device.model.zero_grad()
    logits = {}
    for bits in (32, 4, 2):
        device.model.set_bits(bits)
        logits[bits] = device.model(device.x_train)
    consistency_loss(logits, device.y_train, cfg.loss)[0].backward()
    shared = [p for n, p in device.model.named_parameters() if mode_of_state_key(n) is None]
    summed = np.concatenate([p.grad.double().numpy().ravel() for p in shared])
    np.testing.assert_allclose(sum(grads[pid].values()), summed, rtol=1e-4, atol=1e-7)
