"""BN recalibration: recompute one bit mode's running statistics from data.

Needed for a mode that never trained (its running stats are still the init values) and
for the shared-BN ablation, whose single set of statistics fits no mode well.
"""

from __future__ import annotations

import torch
from torch import nn

from fedqdnn.models.base import QuantizableModel
from fedqdnn.training import iterate_batches


def _active_bns(model: QuantizableModel, bits: int) -> list[nn.modules.batchnorm._BatchNorm]:
    from fedqdnn.layers.batch_norm import _BitBatchNorm

    return [m.bn_for(bits) for m in model.modules() if isinstance(m, _BitBatchNorm)]


@torch.no_grad()
def recalibrate_bn(
    model: QuantizableModel,
    x: torch.Tensor,
    bits: int,
    batch_size: int = 256,
    max_batches: int | None = None,
) -> None:
    """Reset the BN statistics used at ``bits`` and re-estimate them as exact averages
    over batches of ``x`` (momentum=None). Weights and other modes' BNs are untouched."""
    bns = _active_bns(model, bits)
    saved = [(bn.momentum, bn.training) for bn in bns]
    was_training = model.training
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with model.bits(bits):
        for i, (xb, _) in enumerate(iterate_batches(x, x.new_zeros(len(x)), batch_size, None)):
            if max_batches is not None and i >= max_batches:
                break
            model(xb)
    for bn, (momentum, training) in zip(bns, saved, strict=True):
        bn.momentum = momentum
        bn.train(training)
    model.train(was_training)
