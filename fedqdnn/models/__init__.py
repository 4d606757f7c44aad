"""Model registry: build a Quantizable DNN by name, or pick the one that fits an input shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedqdnn.layers import BNLayout, HeadLayout
from fedqdnn.models.base import QuantizableModel
from fedqdnn.models.femnist import FEMNIST_SIDE, FemnistCNN
from fedqdnn.models.resnet import PreActResNet20
from fedqdnn.models.small import MNIST1DCNN, DigitsCNN

MODELS: dict[str, Callable[..., QuantizableModel]] = {
    "digits_cnn": DigitsCNN,
    "mnist1d_cnn": MNIST1DCNN,
    "preact_resnet20": PreActResNet20,
    "femnist_cnn": FemnistCNN,
}
MNIST1D_LENGTH = 40  # the signal length MNIST1DCNN's last layer is sized for


def default_model_for(input_shape: Sequence[int]) -> str:
    """The model for inputs of ``input_shape`` (one sample, channels first).

    1-D signals of length 40: the MNIST-1D net. Images: 28x28 -> the LEAF FEMNIST CNN (its
    dense layer is sized for 28x28); smaller -> the digits CNN (adaptive pooling, e.g. 8x8);
    larger -> PreActResNet-20 (e.g. 32x32 CIFAR). Raises a one-line ValueError otherwise.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2 and shape[1] == MNIST1D_LENGTH:
        return "mnist1d_cnn"
    if len(shape) == 3:
        height, width = shape[1:]
        if height == width == FEMNIST_SIDE:
            return "femnist_cnn"
        return "digits_cnn" if max(height, width) < FEMNIST_SIDE else "preact_resnet20"
    raise ValueError(
        f"no default model for inputs of shape {'x'.join(map(str, shape))}; default models "
        f"cover Cx{MNIST1D_LENGTH} signals and CxHxW images; set model to one of: "
        + ", ".join(sorted(MODELS))
    )


def build_model(
    name: str,
    bit_modes: Sequence[int],
    num_classes: int,
    in_channels: int,
    *,
    width: int | None = None,
    bn: BNLayout = BNLayout.BIT_SPECIFIC,
    learnable_clip: bool = False,
    head: HeadLayout = HeadLayout.SHARED,
) -> QuantizableModel:
    """Build model ``name``; raises ValueError naming the allowed models for an unknown one."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    kwargs = {"bn": BNLayout(bn), "learnable_clip": learnable_clip, "head": HeadLayout(head)}
    if width is not None:
        kwargs["width"] = width
    return MODELS[name](bit_modes, num_classes=num_classes, in_channels=in_channels, **kwargs)


__all__ = ["MODELS", "QuantizableModel", "build_model", "default_model_for"]
