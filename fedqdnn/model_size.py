"""Size in bytes of the model a device receives for one bit mode (real packed size)."""

from __future__ import annotations

from fedqdnn.bitmodes import mode_of_state_key
from fedqdnn.layers import QuantConv1d, QuantConv2d, QuantLinear
from fedqdnn.models.base import QuantizableModel
from fedqdnn.quant import FULL_PRECISION, packed_weight_bytes


def deployed_model_bytes(model: QuantizableModel, bits: int) -> int:
    """Quantized layers' weights packed at ``bits`` bits; everything else (stem, classifier,
    biases, this mode's BN and clips) at 32 bits; other modes' entries and integer counters
    are not shipped."""
    quantized = (QuantConv1d, QuantConv2d, QuantLinear)
    packed = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, quantized)}
    total = 0
    for key, value in model.state_dict().items():
        mode = mode_of_state_key(key)
        if (mode is not None and mode != bits) or not value.is_floating_point():
            continue
        if key in packed and bits != FULL_PRECISION:
            total += packed_weight_bytes(value.numel(), bits)
        else:
            total += 4 * value.numel()
    return total
