"""Centralized training of one Quantizable DNN (joint) or one model per mode (dedicated)."""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fedqdnn.accelerator import describe, release_cuda_memory, select_device
from fedqdnn.bitmodes import parse_bit_modes
from fedqdnn.calibration import recalibrate_bn
from fedqdnn.data_source import DataSource, load_source
from fedqdnn.data_splits import DatasetSplits
from fedqdnn.layers import BNLayout, HeadLayout
from fedqdnn.losses import ConsistencyConfig
from fedqdnn.model_options import BN, DEVICE, HEAD, LEARNABLE_CLIP, MODEL, DeviceSpec, ModelName
from fedqdnn.models import QuantizableModel, build_model, default_model_for
from fedqdnn.provenance import versions
from fedqdnn.tables import markdown_table
from fedqdnn.training import OptimConfig, evaluate, fit
from fedqdnn.validation import EpochCount, ModelWidth, Seed, one_line


class Method(StrEnum):
    """One model trained on every mode, or one model per mode."""

    JOINT = "joint"
    DEDICATED = "dedicated"


METHODS = tuple(m.value for m in Method)


class TrainJob(BaseModel):
    """A validated centralized training job (built from CLI flags or a script)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelName = MODEL
    bits: Annotated[tuple[int, ...], BeforeValidator(parse_bit_modes)] = Field(
        (2, 4, 8, 32), description="bit modes, e.g. 2,4,8,32"
    )
    method: Method = Field(Method.JOINT, description="joint (one model) or dedicated (per mode)")
    epochs: EpochCount = Field(20, description="training epochs")
    seed: Seed = Field(0, description="seed of initialization and batch order")
    width: ModelWidth | None = Field(None, description="model width (multiplier for ResNet)")
    bn: BNLayout = BN
    head: HeadLayout = HEAD
    learnable_clip: bool = LEARNABLE_CLIP
    recalibrate_bn: bool = Field(
        False, description="also report accuracy after per-mode BN recalibration"
    )
    device: DeviceSpec = DEVICE
    data: DataSource = Field(default_factory=DataSource)
    loss: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)


JOB_SECTIONS = {"data": DataSource, "loss": ConsistencyConfig, "optim": OptimConfig}


def make_job(**fields: object) -> TrainJob:
    """A TrainJob from its fields, the keys of its sections (``dataset``, ``kd_weight``,
    ``lr``, ...) beside the others as in the flat form; or a one-line ValueError naming the
    bad field."""
    for section, cls in JOB_SECTIONS.items():
        given = {k: fields.pop(k) for k in cls.__dataclass_fields__ if k in fields}
        if given:
            fields[section] = {**dict(fields.get(section) or {}), **given}
    try:
        return TrainJob(**fields)
    except ValidationError as err:
        raise ValueError(one_line(err, lambda loc: str(loc[-1]).replace("_", "-"))) from None


def _build(job: TrainJob, modes: tuple[int, ...], in_channels: int, num_classes: int, name: str):
    return build_model(
        name,
        modes,
        num_classes,
        in_channels,
        width=job.width,
        bn=job.bn,
        learnable_clip=job.learnable_clip,
        head=job.head,
    )


def _accuracy_after_recalibration(model: QuantizableModel, x_train, x_test, y_test, bits: int):
    calibrated = copy.deepcopy(model)
    recalibrate_bn(calibrated, x_train, bits)
    return evaluate(calibrated, x_test, y_test, bits)[0]


def job_data(job: TrainJob) -> DatasetSplits:
    """The job's data set (cached per process: loading it first fails early, costs nothing)."""
    return load_source(job.data)


def run_training(job: TrainJob, log: Callable[[str], None] | None = None) -> dict:
    """Train per ``job`` and return the results dict (accuracy per bit mode, config, versions)."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    where = select_device(job.device)
    data = job_data(job)
    x_train, y_train = data.train_inputs().to(where), data.y_train.to(where)
    x_test, y_test = data.x_test.to(where), data.y_test.to(where)
    model_name = job.model or default_model_for(data.input_shape)
    # One model trained on every mode (joint) or one model per mode (dedicated, plain CE).
    groups = [job.bits] if job.method == Method.JOINT else [(b,) for b in job.bits]
    augment = len(data.input_shape) == 3 and data.in_channels == 3  # crops + flips: RGB images
    accuracy: dict[str, float] = {}
    recalibrated: dict[str, float] = {}
    started = time.perf_counter()
    for modes in groups:
        torch.manual_seed(job.seed)  # initial weights drawn on the CPU: the same on any device
        model = _build(job, modes, data.in_channels, data.num_classes, model_name).to(where)
        label = "joint " + ",".join(map(str, modes)) if len(modes) > 1 else f"{modes[0]}-bit"

        def on_epoch(epoch: int, stats, label=label) -> None:
            log(
                f"[{label}] epoch {epoch + 1}/{job.epochs} loss {stats.loss:.4f} "
                f"({stats.seconds:.1f}s)"
            )

        fit(
            model,
            x_train,
            y_train,
            modes,
            job.loss,
            job.optim,
            job.epochs,
            job.seed,
            augment,
            on_epoch,
        )
        for bits in modes:
            accuracy[str(bits)] = evaluate(model, x_test, y_test, bits)[0]
            if job.recalibrate_bn:
                recalibrated[str(bits)] = _accuracy_after_recalibration(
                    model, x_train, x_test, y_test, bits
                )
    results = {
        "accuracy_by_bits": accuracy,
        "config": {**job.model_dump(mode="json"), "model": model_name},
        "device": describe(where),
        "versions": versions(),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    del model, x_train, y_train, x_test, y_test
    release_cuda_memory()
    if job.recalibrate_bn:
        results["accuracy_by_bits_recalibrated"] = recalibrated
    return results


def format_table(results: dict) -> str:
    """Markdown table of accuracy per bit mode (and after recalibration, when measured)."""
    recalibrated = results.get("accuracy_by_bits_recalibrated")
    header = ["bits", "accuracy"] + (["recalibrated"] if recalibrated else [])
    rows = [
        [bits, f"{acc:.4f}"] + ([f"{recalibrated[bits]:.4f}"] if recalibrated else [])
        for bits, acc in results["accuracy_by_bits"].items()
    ]
    return markdown_table(header, rows)
