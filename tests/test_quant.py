"""Quantizers against hand-computed values, level counts and straight-through gradients."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedqdnn.bitmodes import mode_of_state_key, parse_bit_modes
from fedqdnn.quant import (
    packed_weight_bytes,
    quantize_activation,
    quantize_activation_clipped,
    quantize_weight,
)


def test_activation_2bit_hand_computed():
    x = torch.tensor([-0.5, 0.1, 0.2, 0.5, 0.9, 1.5])
    # clamp -> [0, .1, .2, .5, .9, 1]; *3 -> [0, .3, .6, 1.5, 2.7, 3]; round (half to even)
    expected = torch.tensor([0, 0, 1, 2, 3, 3]) / 3
    assert torch.allclose(quantize_activation(x, 2), expected)


def test_activation_32bit_is_relu():
    x = torch.tensor([-1.0, 0.3, 7.0])
    assert torch.equal(quantize_activation(x, 32), torch.tensor([0.0, 0.3, 7.0]))


def test_activation_1bit_is_binary():
    x = torch.tensor([-1.0, 0.2, 0.6, 3.0])
    assert torch.equal(quantize_activation(x, 1), torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_activation_straight_through_gradient_inside_clip_only():
    x = torch.tensor([-0.5, 0.25, 0.7, 1.5], requires_grad=True)
    quantize_activation(x, 4).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))


def test_weight_2bit_hand_computed():
    w = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    # tanh/(2 max|tanh|)+0.5 -> [0, .2603, .5, .7397, 1]; *3 round -> [0, 1, 2, 2, 3];
    # (2 q/3 - 1) * mean|w| with mean|w| = 1.0
    expected = torch.tensor([-1.0, -1 / 3, 1 / 3, 1 / 3, 1.0])
    assert torch.allclose(quantize_weight(w, 2), expected, atol=1e-6)


def test_weight_1bit_is_sign_times_mean_abs():
    w = torch.tensor([-3.0, -1.0, 0.0, 2.0])
    assert torch.allclose(quantize_weight(w, 1), torch.tensor([-1.5, -1.5, 1.5, 1.5]))


def test_weight_32bit_is_identity():
    w = torch.randn(7)
    assert quantize_weight(w, 32) is w


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_weight_takes_at_most_2_pow_b_values(bits, seed):
    w = torch.randn(500, generator=torch.Generator().manual_seed(seed))
    values = torch.unique(quantize_weight(w, bits))
    assert len(values) <= 2**bits
    # values lie on the symmetric grid (2k/(2^b-1) - 1) * mean|w|
    if bits > 1:
        n = 2**bits - 1
        k = (values / w.abs().mean() + 1) * n / 2
        assert torch.allclose(k, k.round(), atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_activation_values_on_grid(bits, seed):
    x = 2 * torch.randn(300, generator=torch.Generator().manual_seed(seed))
    q = quantize_activation(x, bits)
    n = 2**bits - 1
    assert q.min() >= 0 and q.max() <= 1
    assert torch.allclose(q * n, (q * n).round(), atol=1e-5)
    assert len(torch.unique(q)) <= 2**bits


def test_weight_gradient_matches_formula():
    """Fused backward equals autograd through tanh-normalisation with STE round."""
    w = torch.randn(40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    g = torch.randn(40, generator=torch.Generator().manual_seed(1))
    quantize_weight(w, 3).backward(g)
    t = torch.tanh(w.detach())
    expected = g * w.detach().abs().mean() * (1 - t * t) / t.abs().max()
    assert torch.allclose(w.grad, expected, atol=1e-6)


def test_weight_1bit_gradient_is_identity():
    w = torch.randn(10, requires_grad=True)
    quantize_weight(w, 1).sum().backward()
    assert torch.equal(w.grad, torch.ones(10))


def test_clipped_activation_values_and_gradients():
    x = torch.tensor([-1.0, 0.5, 1.0, 3.0], requires_grad=True)
    alpha = torch.tensor([2.0], requires_grad=True)
    q = quantize_activation_clipped(x, alpha, 2)
    # clamp to [0, 2] / 2 -> [0, .25, .5, 1]; *3 round -> [0, 1, 2, 3]; /3 * 2
    assert torch.allclose(q, torch.tensor([0.0, 2 / 3, 4 / 3, 2.0]))
    q.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert torch.equal(alpha.grad, torch.tensor([1.0]))  # PACT: only x >= alpha


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 10_000))
def test_fused_activation_gradients_equal_the_straight_through_formulas(bits, seed):
    """Gradients of the fused quantizers against the STE/PACT formulas, value for value."""
    gen = torch.Generator().manual_seed(seed)
    x = (2 * torch.randn(4000, generator=gen)).requires_grad_()
    g = torch.randn(4000, generator=gen)
    alpha = torch.tensor([0.5 + torch.rand(1, generator=gen).item()], requires_grad=True)
    (quantize_activation_clipped(x, alpha, bits) * g).sum().backward()
    scaled = x.detach() / alpha.detach()
    assert torch.equal(x.grad, g * ((scaled >= 0) & (scaled <= 1)))
    assert torch.equal(alpha.grad, (g * (scaled >= 1)).sum().reshape(1))
    x.grad = None
    (quantize_activation(x, bits) * g).sum().backward()
    assert torch.equal(x.grad, g * ((x.detach() >= 0) & (x.detach() <= 1)))


@pytest.mark.parametrize("bad", [0, 9, 16, 33, -1, 2.0, True])
def test_bad_bits_rejected_with_allowed_values(bad):
    with pytest.raises(ValueError, match="allowed: 1-8 or 32"):
        quantize_weight(torch.ones(2), bad)


def test_parse_bit_modes():
    assert parse_bit_modes("32, 2,4,4") == (2, 4, 32)
    for bad in ("2,x", "", "0", "2,33"):
        with pytest.raises(ValueError, match="allowed"):
            parse_bit_modes(bad)


def test_mode_of_state_key():
    assert mode_of_state_key("body.0.bns.bits4.running_mean") == 4
    assert mode_of_state_key("body.1.clip.bits2") == 2
    assert mode_of_state_key("body.2.weight") is None
    assert mode_of_state_key("body.0.bns.shared.weight") is None


def test_packed_weight_bytes():
    assert packed_weight_bytes(10, 2) == 3  # 20 bits -> 3 bytes
    assert packed_weight_bytes(10, 32) == 40
    assert packed_weight_bytes(8, 1) == 1
    assert math.isclose(packed_weight_bytes(1000, 4), 500)
