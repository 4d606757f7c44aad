"""What every data set loader returns, and what the loaders share (no loader imports another).

:mod:`fedqdnn.data` (built-in sets) and :mod:`fedqdnn.hf_data` (``hf:<name>``) both build
:class:`DatasetSplits`, raise :class:`DatasetFilesMissing` and keep generated or decoded data
under :func:`default_cache_dir`; this leaf module holds those, so neither loader imports the
other's module for them.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Train and test data of one data set (labels int64).

    ``x_test`` is float32, ready for a model. ``x_train`` is float32 too, except for image data
    sets from Hugging Face, which keep their training images as uint8 pixels (4x less memory;
    memory-mapped from the decoded cache, so processes share one copy): read training inputs
    through :meth:`train_inputs`, which standardizes them per channel.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    train_groups: np.ndarray | None = None  # natural-partition id of every training sample
    class_names: tuple[str, ...] = ()  # label of each class when the data name them (hf:)
    pixel_mean: tuple[float, ...] = ()  # per channel, pixels in [0, 1] (uint8 x_train only)
    pixel_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_labels(self.name, self.y_train, self.y_test, self.num_classes)

    @property
    def in_channels(self) -> int:
        """Channels of one input sample."""
        return int(self.x_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, channels first."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    def train_inputs(self, indices: np.ndarray | None = None) -> torch.Tensor:
        """Training inputs (all, or rows ``indices``) as float32 model inputs."""
        x = self.x_train if indices is None else self.x_train[torch.as_tensor(indices)]
        if x.dtype != torch.uint8:
            return x
        return standardize_pixels(x, self.pixel_mean, self.pixel_std)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Digest of every example and label: a run resumed on other data is refused."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{self.name}:{self.num_classes}".encode())
        arrays = [t.numpy() for t in (self.x_train, self.y_train, self.x_test, self.y_test)]
        if self.train_groups is not None:
            arrays.append(np.asarray(self.train_groups))
        for array in arrays:
            array = np.ascontiguousarray(array.astype(str) if array.dtype.hasobject else array)
            digest.update(str((array.dtype.str, array.shape)).encode())
            digest.update(array.data)
        return digest.hexdigest()


def check_labels(name: str, y_train: torch.Tensor, y_test: torch.Tensor, num_classes: int) -> None:
    """Refuse labels nothing can be learned from, or that a ``num_classes``-way output cannot
    score, in one line: every loader's result passes here before any training."""
    for split, labels in (("train", y_train), ("test", y_test)):
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise ValueError(
                f"{name} {split} has labels {int(labels.min())}..{int(labels.max())}; "
                f"allowed: 0..{num_classes - 1} (num_classes = {num_classes})"
            )
    present = torch.unique(y_train)
    if len(present) == 0:
        raise ValueError(f"{name} has no training samples; allowed: at least 2 classes")
    if num_classes < 2 or len(present) < 2:
        raise ValueError(
            f"{name} train has one class (label {int(present[0])}): nothing to learn; accuracy "
            "would read 100 %; allowed: at least 2 classes"
        )


def standardize_pixels(
    pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 ``(p / 255 - mean) / std`` per channel, computed as
    torchvision's ``to_dtype(scale=True)`` and ``normalize`` do (bit for bit), without importing
    torchvision (seconds for a device process that starts per message)."""
    image = pixels.to(torch.float32).mul_(1.0 / 255)
    shape = (-1, 1, 1)
    image = image.sub(torch.as_tensor(mean, dtype=torch.float32).view(shape))
    return image.div_(torch.as_tensor(std, dtype=torch.float32).view(shape))


class DatasetFilesMissing(FileNotFoundError):
    """A data set's files are not where the user said (or not downloaded yet)."""


def default_cache_dir() -> Path:
    """Where generated and decoded data sets are kept between runs (``$FEDQDNN_CACHE``, by
    default ``~/.cache/fedqdnn``)."""
    return Path(os.environ.get("FEDQDNN_CACHE") or Path.home() / ".cache" / "fedqdnn")
