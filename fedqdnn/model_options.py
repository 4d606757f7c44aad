"""The model options federated runs and centralized jobs share, declared once.

:class:`~fedqdnn.config.FederatedConfig` and :class:`~fedqdnn.centralized.TrainJob` declare
``model``, ``bn``, ``head``, ``learnable_clip`` and ``device`` with these types and fields, so
both check and default them alike (bit modes differ on purpose: each config has its own default).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from fedqdnn.accelerator import DEVICE_CHOICES, parse_device
from fedqdnn.layers import BNLayout, HeadLayout
from fedqdnn.models import MODELS


def _model_name(name: object) -> object:
    if name and name not in MODELS:
        raise ValueError(f"allowed: {', '.join(sorted(MODELS))} or '' (by the data's shape)")
    return name


ModelName = Annotated[str, BeforeValidator(_model_name)]
MODEL = Field("", description="model name ('' = chosen by the data's input shape)")
BN = Field(
    BNLayout.BIT_SPECIFIC,
    description="BN per bit mode: bit-specific, shared-affine (stats per mode) or shared",
)
HEAD = Field(
    HeadLayout.SHARED,
    description="classifier: shared by every mode, or bit-specific (one per mode)",
)
# measured better than the fixed [0, 1] clip (docs/results.md)
LEARNABLE_CLIP = Field(True, description="per-mode learnable activation clip")
DeviceSpec = Annotated[str, BeforeValidator(parse_device)]
DEVICE = Field(
    "auto",
    description=f"where models run: {DEVICE_CHOICES}; auto = CUDA where the process has a GPU "
    "(a client actor: a Ray GPU share, see --gpus-per-client), else CPU",
)
