"""Model registry: build a Quantizable DNN by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedqdnn.layers import BNLayout
from fedqdnn.models.base import QuantizableModel
from fedqdnn.models.resnet import PreActResNet20
from fedqdnn.models.small import MNIST1DCNN, DigitsCNN

MODELS: dict[str, Callable[..., QuantizableModel]] = {
    "digits_cnn": DigitsCNN,
    "mnist1d_cnn": MNIST1DCNN,
    "preact_resnet20": PreActResNet20,
}


def build_model(
    name: str,
    bit_modes: Sequence[int],
    num_classes: int,
    in_channels: int,
    *,
    width: int | None = None,
    bn: BNLayout = BNLayout.BIT_SPECIFIC,
    learnable_clip: bool = False,
) -> QuantizableModel:
    """Build model ``name``; raises ValueError naming the allowed models for an unknown one."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    kwargs = {"bn": BNLayout(bn), "learnable_clip": learnable_clip}
    if width is not None:
        kwargs["width"] = width
    return MODELS[name](bit_modes, num_classes=num_classes, in_channels=in_channels, **kwargs)


__all__ = ["MODELS", "QuantizableModel", "build_model"]
