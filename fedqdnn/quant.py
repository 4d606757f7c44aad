"""Quantization as pure tensor math (DoReFa / Any-Precision family).

Every function maps a tensor to its fake-quantized value with straight-through
gradients; modules in :mod:`fedqdnn.layers` only hold parameters and call these.
Formulas are in docs/method.md.
"""

from __future__ import annotations

import torch

FULL_PRECISION = 32
ALLOWED_BITS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, FULL_PRECISION)


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported bit mode, else raise a ValueError naming it."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in ALLOWED_BITS:
        raise ValueError(f"bit mode {bits!r} is not supported; allowed: 1-8 or 32")
    return bits


def levels(bits: int) -> int:
    """Number of quantization steps ``2^b - 1`` on [0, 1]."""
    return (1 << bits) - 1


class _DoReFaWeight(torch.autograd.Function):
    """Fused DoReFa weight quantizer (2 <= b <= 8); see :func:`quantize_weight`.

    Backward: STE through the rounding, exact derivative of the tanh normalisation with
    ``max|tanh w|`` and the scale ``mean|w|`` held constant:
    ``dL/dw = g * mean|w| * (1 - tanh(w)^2) / max|tanh w|``. One autograd node instead of
    ten keeps a quantized step close to the FP32 step (benchmarks/step_time.py).
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, n: int) -> torch.Tensor:  # noqa: D102
        t = torch.tanh(w)
        t_max = t.abs().max().clamp_min(1e-12)
        scale = w.abs().mean()
        ctx.save_for_backward(t, scale / t_max)
        grid = t.div(2 * t_max).add_(0.5).mul_(n).round_().div_(n)
        return grid.mul_(2).sub_(1).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        t, factor = ctx.saved_tensors
        return grad * (1 - t * t) * factor, None


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa weight quantizer scaled by the detached mean |w| (Any-Precision variant).

    * 2 <= b <= 8: ``w' = tanh(w) / (2 max|tanh w|) + 0.5``;
      ``w_q = (2 round_b(w') - 1) * mean|w|``.
    * b = 1: ``w_q = sign(w) * mean|w|`` (sign(0) taken as +1), identity gradient.
    * b = 32: ``w`` unchanged.
    """
    check_bits(bits)
    if bits == FULL_PRECISION:
        return w
    if bits == 1:
        scale = w.detach().abs().mean()
        sign = torch.where(w.detach() >= 0, 1.0, -1.0).to(w.dtype)
        return (w - w.detach()) + sign * scale  # value sign*scale, gradient identity
    return _DoReFaWeight.apply(w, levels(bits))


def _float_mask(compare, a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``compare(a, b)`` as 1.0 / 0.0 in ``a``'s dtype, written directly.

    A straight-through gradient is the incoming gradient times a 0/1 mask. Kept as floats,
    the mask is computed and applied in one vectorized pass each; boolean masks (a boolean
    comparison, then ``grad * mask`` promoting it) took several times longer on the CPU. The
    products are the same numbers either way.
    """
    out = torch.empty_like(a)
    compare(a, b, out=out)
    return out


class _ClampRoundSTE(torch.autograd.Function):
    """``round_b(clamp(x, 0, 1))``; the gradient passes where 0 <= x <= 1 (STE through round).

    One autograd node saving one 0/1 mask, instead of the intermediates a composition of
    clamp / round / STE would keep: a quantized step stays close to a ReLU step.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:  # noqa: D102
        clamped = x.clamp(0, 1)
        ctx.save_for_backward(_float_mask(torch.eq, clamped, x))
        return clamped.mul_(n).round_().div_(n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def quantize_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``a_q = round_b(clamp(x, 0, 1))`` for b < 32; ReLU at 32 bits."""
    check_bits(bits)
    if bits == FULL_PRECISION:
        return torch.relu(x)
    return _ClampRoundSTE.apply(x, levels(bits))


class _ClippedRoundSTE(torch.autograd.Function):
    """PACT-style learnable clip: ``alpha * round_b(clamp(x, 0, alpha) / alpha)``.

    Gradients: to x where 0 < x < alpha; to alpha the summed incoming gradient
    where x >= alpha (PACT's estimator; the rounding residual is ignored).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, n: int) -> torch.Tensor:  # noqa: D102
        a = alpha.clamp_min(1e-3)
        scaled = x / a
        clamped = scaled.clamp(0, 1)
        inside = _float_mask(torch.eq, clamped, scaled)
        ctx.save_for_backward(inside, _float_mask(torch.ge, scaled, 1.0))
        return clamped.mul_(n).round_().div_(n).mul_(a)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        inside, above = ctx.saved_tensors
        grad_alpha = (grad * above).sum().reshape(1)
        return grad * inside, grad_alpha, None


def quantize_activation_clipped(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """Activation quantizer with a learnable clipping level ``alpha`` (AdaBits switchable
    clipping when one alpha is kept per bit mode). ReLU at 32 bits (alpha unused)."""
    check_bits(bits)
    if bits == FULL_PRECISION:
        return torch.relu(x)
    return _ClippedRoundSTE.apply(x, alpha, levels(bits))


def packed_weight_bytes(num_weights: int, bits: int) -> int:
    """Bytes to store ``num_weights`` weights packed at ``bits`` bits (ceil to whole bytes)."""
    check_bits(bits)
    return (num_weights * bits + 7) // 8
