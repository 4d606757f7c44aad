"""Global average pooling whose gradient is deterministic on CUDA too."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalAvgPool2d(nn.Module):
    """Mean over height and width, shape (N, C, 1, 1), like ``nn.AdaptiveAvgPool2d(1)``.

    CUDA's adaptive-pooling backward uses atomic adds (nondeterministic, refused under
    ``torch.use_deterministic_algorithms``); on CUDA the same mean is taken as a reduction,
    whose backward is a plain broadcast. CPU keeps adaptive pooling, bit for bit as before.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.is_cuda:
            return x.mean(dim=(2, 3), keepdim=True)
        return F.adaptive_avg_pool2d(x, 1)
