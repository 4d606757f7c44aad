"""Layers of a Quantizable DNN: shared-weight quantized conv/linear, bit-specific BN, the
classifier (shared or per mode), switchable activation quantizer, pooling. One layer type a
file; models only compose them."""

from fedqdnn.layers.activation import QuantAct
from fedqdnn.layers.batch_norm import BitBatchNorm1d, BitBatchNorm2d, BNLayout
from fedqdnn.layers.conv import QuantConv1d, QuantConv2d
from fedqdnn.layers.head import BitLinear, HeadLayout, classifier
from fedqdnn.layers.linear import QuantLinear
from fedqdnn.layers.pooling import GlobalAvgPool2d
from fedqdnn.layers.switchable import BitSwitchable

__all__ = [
    "BNLayout",
    "BitLinear",
    "BitBatchNorm1d",
    "BitBatchNorm2d",
    "BitSwitchable",
    "GlobalAvgPool2d",
    "HeadLayout",
    "QuantAct",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "classifier",
]
