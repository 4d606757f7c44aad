"""Consistency loss against an independent numpy computation."""

import numpy as np
import pytest
import torch

from fedqdnn.losses import ConsistencyConfig, consistency_loss


def _np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _np_ce(z, y):
    return -_np_log_softmax(z)[np.arange(len(y)), y].mean()


def _np_kl(student, teacher, t):
    p = np.exp(_np_log_softmax(teacher / t))
    return (p * (np.log(p) - _np_log_softmax(student / t))).sum(axis=1).mean() * t * t


@pytest.mark.parametrize("teacher", ["top", "next"])
def test_matches_independent_formula(teacher):
    rng = np.random.default_rng(0)
    logits = {b: rng.normal(size=(5, 4)) for b in (2, 4, 32)}
    y = np.array([0, 1, 2, 3, 1])
    cfg = ConsistencyConfig(ce_weight=0.7, kd_weight=1.3, temperature=2.0, teacher=teacher)
    loss, terms = consistency_loss(
        {b: torch.tensor(z, dtype=torch.float64) for b, z in logits.items()}, torch.tensor(y), cfg
    )
    teachers = {2: 32 if teacher == "top" else 4, 4: 32}
    expected = _np_ce(logits[32], y)
    for b in (2, 4):
        expected += 0.7 * _np_ce(logits[b], y) + 1.3 * _np_kl(logits[b], logits[teachers[b]], 2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert sum(terms.values()) == pytest.approx(expected, rel=1e-9)


def test_teacher_is_detached_and_kd_zero_is_plain_ce_sum():
    z32 = torch.randn(3, 5, requires_grad=True)
    z2 = torch.randn(3, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    loss, _ = consistency_loss({2: z2, 32: z32}, y, ConsistencyConfig(ce_weight=0, kd_weight=1))
    loss.backward()
    ce_only = torch.autograd.grad(torch.nn.functional.cross_entropy(z32, y), z32)[0]
    assert torch.allclose(z32.grad, ce_only)  # KL adds nothing to the teacher's gradient
    plain, _ = consistency_loss({2: z2, 32: z32}, y, ConsistencyConfig(kd_weight=0))
    ce = torch.nn.functional.cross_entropy
    assert plain.item() == pytest.approx((ce(z2, y) + ce(z32, y)).item())


def test_bad_config():
    with pytest.raises(ValueError, match="'top' or 'next'"):
        ConsistencyConfig(teacher="prev")
    with pytest.raises(ValueError, match="temperature"):
        ConsistencyConfig(temperature=0)


def test_mode_weights_scale_whole_terms():
    torch.manual_seed(0)
    logits = {2: torch.randn(4, 3), 32: torch.randn(4, 3)}
    y = torch.tensor([0, 1, 2, 1])
    plain, terms = consistency_loss(logits, y, ConsistencyConfig())
    weighted, wterms = consistency_loss(logits, y, ConsistencyConfig(mode_weights="32:2,2:0.5"))
    assert wterms[32] == pytest.approx(2 * terms[32]) and wterms[2] == pytest.approx(0.5 * terms[2])
    assert float(weighted) == pytest.approx(2 * terms[32] + 0.5 * terms[2], rel=1e-6)
    assert ConsistencyConfig(mode_weights={32: 2}).weight_of(4) == 1.0
