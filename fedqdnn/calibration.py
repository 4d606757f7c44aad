"""BN recalibration: recompute bit modes' running statistics from data.

Needed for a mode that never trained (its running stats are still the init values), for
the shared-BN ablation, whose single set of statistics fits no mode well, and by federated
clients, whose momentum statistics after a few local steps are mostly stale (see
docs/federated.md, "BN statistics").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedqdnn.accelerator import model_device
from fedqdnn.models.base import QuantizableModel
from fedqdnn.training import iterate_batches


def active_bns(model: QuantizableModel, bits: int) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BN modules the model uses at ``bits`` (the shared ones in the shared-BN ablation)."""
    from fedqdnn.layers.batch_norm import _BitBatchNorm

    return [m.bn_for(bits) for m in model.modules() if isinstance(m, _BitBatchNorm)]


@torch.no_grad()
def recalibrate_bn(
    model: QuantizableModel,
    x: torch.Tensor,
    bits: int | Sequence[int],
    batch_size: int = 256,
    max_batches: int | None = None,
) -> None:
    """Reset the BN statistics used at ``bits`` and re-estimate them as exact averages
    over batches of ``x`` (momentum=None). Weights and other modes' BNs are untouched.

    With several modes, a BN shared between them (shared-BN ablation) averages over the
    batches of all of them; bit-specific BNs each see their own mode only.
    """
    modes = [bits] if isinstance(bits, int) else list(bits)
    bns = list({id(bn): bn for b in modes for bn in active_bns(model, b)}.values())
    saved = [(bn.momentum, bn.training) for bn in bns]
    was_training = model.training
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for mode in modes:
        with model.bits(mode):
            batches = iterate_batches(x, x.new_zeros(len(x)), batch_size, None, model_device(model))
            for i, (xb, _) in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                model(xb)
    for bn, (momentum, training) in zip(bns, saved, strict=True):
        bn.momentum = momentum
        bn.train(training)
    model.train(was_training)
