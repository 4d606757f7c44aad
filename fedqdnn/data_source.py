"""Where a run's data comes from: one section shared by federated runs and centralized jobs.

:class:`~fedqdnn.config.FederatedConfig` and :class:`~fedqdnn.centralized.TrainJob` both hold a
:class:`DataSource` (field ``data``), as they hold the loss and optimizer sections; in the flat
form (CLI flags, scenario files, Flower's run config) its keys sit beside the others
(``dataset``, ``data-root``, ``num-samples``, ...).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

from fedqdnn.data import check_dataset_name, load_dataset
from fedqdnn.data_splits import DatasetSplits
from fedqdnn.validation import SampleCount, Seed


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DataSource:
    """The data set and how to load it (hashable: processes cache what it loads)."""

    dataset: Annotated[str, BeforeValidator(check_dataset_name)] = Field(
        "digits", description="data set: a built-in one or hf:<Hugging Face dataset>"
    )
    num_samples: SampleCount = Field(0, description="mnist1d sample count (0 = default)")
    data_root: str = Field(
        "", description="local data: CIFAR files, or a copy of an hf: data set (docs/data.md)"
    )
    download: bool = Field(
        False, description="fetch data not found locally (cifar10/100 and hf: data sets)"
    )
    image_column: str = Field("", description="hf: image column ('' = the one Image feature)")
    label_column: str = Field("", description="hf: label column ('' = the one ClassLabel)")
    data_seed: Seed = Field(0, description="seed of the data set's train/test split")


def load_source(source: DataSource, group_column: str = "") -> DatasetSplits:
    """The data set ``source`` names (cached per process by :func:`~fedqdnn.data.load_dataset`);
    ``group_column`` gives natural partition ids (hf: data sets)."""
    return load_dataset(
        source.dataset,
        data_root=source.data_root or None,
        num_samples=source.num_samples or None,
        data_seed=source.data_seed,
        download=source.download,
        image_column=source.image_column,
        label_column=source.label_column,
        group_column=group_column,
    )
