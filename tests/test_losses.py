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


@pytest.mark.parametrize("modes", [(2,), (2, 4, 32)], ids=["one-mode-device", "three-modes"])
def test_global_distillation_adds_each_modes_kl_to_its_start_logits(modes):
    rng = np.random.default_rng(1)
    logits = {b: rng.normal(size=(6, 4)) for b in modes}
    start = {b: rng.normal(size=(6, 4)) for b in modes}
    y = np.array([0, 1, 2, 3, 1, 0])
    t = lambda d: {b: torch.tensor(z, dtype=torch.float64) for b, z in d.items()}  # noqa: E731
    plain_cfg = ConsistencyConfig(temperature=2.0)
    cfg = ConsistencyConfig(temperature=2.0, global_kd_weight=0.5)
    plain, plain_terms = consistency_loss(t(logits), torch.tensor(y), plain_cfg)
    loss, terms = consistency_loss(t(logits), torch.tensor(y), cfg, t(start))
    for b in modes:  # every mode, the top one and a one-mode device's included
        extra = 0.5 * _np_kl(logits[b], start[b], 2.0)
        assert terms[b] == pytest.approx(plain_terms[b] + extra, rel=1e-9)
    expected = plain.item() + sum(0.5 * _np_kl(logits[b], start[b], 2.0) for b in modes)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    off, _ = consistency_loss(t(logits), torch.tensor(y), plain_cfg, t(start))
    assert off.item() == plain.item()  # weight 0: start logits ignored


def test_global_distillation_keeps_a_skewed_client_nearer_its_start_model():
    """One local class (the strongest skew): without the term the model learns to answer that
    class everywhere; with it, its predictions elsewhere stay near those it started from."""
    from fedqdnn.models import build_model
    from fedqdnn.training import OptimConfig, fit

    probe = torch.randn(128, 1, 8, 8, generator=torch.Generator().manual_seed(9))

    def predictions(model, bits):
        model.eval()
        with torch.no_grad(), model.bits(bits):
            return torch.log_softmax(model(probe), dim=1)

    def drift(weight: float) -> dict[int, float]:
        torch.manual_seed(0)
        model = build_model("digits_cnn", (2, 4, 32), 10, 1)
        before = {b: predictions(model, b) for b in (2, 32)}
        x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        y = torch.zeros(64, dtype=torch.long)
        cfg = ConsistencyConfig(global_kd_weight=weight)
        fit(model, x, y, [2, 4, 32], cfg, OptimConfig(lr=0.01), epochs=10, seed=0)
        after = {b: predictions(model, b) for b in (2, 32)}
        kl = torch.nn.functional.kl_div
        return {b: float(kl(after[b], before[b], log_target=True, reduction="batchmean"))
                for b in (2, 32)}  # fmt: skip

    free, anchored = drift(0.0), drift(5.0)
    for bits in (2, 32):
        assert anchored[bits] < 0.5 * free[bits], (bits, anchored, free)


def test_one_mode_teacher_is_the_next_mode_up_for_a_one_mode_device_only():
    from fedqdnn.losses import one_mode_teacher

    assert one_mode_teacher([2], (2, 4, 32)) == 4
    assert one_mode_teacher([4], (2, 4, 8, 32)) == 8
    assert one_mode_teacher([32], (2, 4, 32)) is None  # the top mode has no teacher above it
    assert one_mode_teacher([2, 4], (2, 4, 32)) is None  # the consistency term teaches it


def test_one_mode_kd_adds_the_kl_to_the_frozen_teacher_to_the_one_mode():
    rng = np.random.default_rng(3)
    z, teacher = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    y = torch.tensor([0, 1, 2, 3, 1])
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    cfg = ConsistencyConfig(temperature=3.0, one_mode_kd_weight=0.5)
    plain, _ = consistency_loss({2: t(z)}, y, ConsistencyConfig(temperature=3.0))
    loss, terms = consistency_loss({2: t(z)}, y, cfg, frozen_teacher_logits=t(teacher))
    expected = plain.item() + 0.5 * _np_kl(z, teacher, 3.0)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert terms[2] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="one-mode device"):
        consistency_loss({2: t(z), 4: t(z)}, y, cfg, frozen_teacher_logits=t(teacher))


def test_one_mode_kd_pulls_a_one_mode_device_toward_the_next_mode_up():
    """A 2-bit-only device with the term ends nearer the 4-bit answers of the model it started
    from than without it; a device training every mode is untouched by the key."""
    from fedqdnn.models import build_model
    from fedqdnn.training import OptimConfig, fit

    probe = torch.randn(128, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(64, dtype=torch.long)

    def log_probs(model, bits):
        model.eval()
        with torch.no_grad(), model.bits(bits):
            return torch.log_softmax(model(probe), dim=1)

    def trained(weight: float, modes: list[int]):
        torch.manual_seed(0)
        model = build_model("digits_cnn", (2, 4, 32), 10, 1)
        teacher = log_probs(model, 4)
        cfg = ConsistencyConfig(one_mode_kd_weight=weight)
        fit(model, x, y, modes, cfg, OptimConfig(lr=0.01), epochs=10, seed=0)
        kl = torch.nn.functional.kl_div(log_probs(model, 2), teacher, log_target=True,
                                        reduction="batchmean")  # fmt: skip
        return float(kl), model.state_dict()

    free, _ = trained(0.0, [2])
    taught, _ = trained(5.0, [2])
    assert taught < 0.5 * free, (taught, free)
    _, every_off = trained(0.0, [2, 4, 32])
    _, every_on = trained(5.0, [2, 4, 32])
    assert all(torch.equal(every_off[k], every_on[k]) for k in every_off)
