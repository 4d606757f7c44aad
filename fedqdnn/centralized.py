"""Centralized training of one Quantizable DNN (joint) or one model per mode (dedicated)."""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fedqdnn.bitmodes import parse_bit_modes
from fedqdnn.calibration import recalibrate_bn
from fedqdnn.data import DATASET_NAMES, load_dataset
from fedqdnn.losses import ConsistencyConfig
from fedqdnn.models import MODELS, QuantizableModel, build_model
from fedqdnn.provenance import versions
from fedqdnn.training import OptimConfig, evaluate, fit

METHODS = ("joint", "dedicated")


@dataclass(frozen=True)
class TrainJob:
    """A validated centralized training job (built from CLI flags or a script)."""

    dataset: str = "digits"
    model: str | None = None
    bits: tuple[int, ...] = (2, 4, 8, 32)
    method: str = "joint"
    epochs: int = 20
    seed: int = 0
    data_seed: int = 0
    num_samples: int | None = None
    data_root: str | None = None
    width: int | None = None
    bit_specific_bn: bool = True
    learnable_clip: bool = True  # measured better than the fixed [0, 1] clip (docs/results.md)
    recalibrate_bn: bool = False
    loss: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; allowed: {', '.join(DATASET_NAMES)}"
            )
        if self.model is not None and self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; allowed: {', '.join(sorted(MODELS))}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        if self.epochs < 1:
            raise ValueError(f"epochs {self.epochs} must be >= 1")
        object.__setattr__(self, "bits", parse_bit_modes(self.bits))


def _build(job: TrainJob, modes: tuple[int, ...], in_channels: int, num_classes: int, name: str):
    return build_model(
        name,
        modes,
        num_classes,
        in_channels,
        width=job.width,
        bit_specific_bn=job.bit_specific_bn,
        learnable_clip=job.learnable_clip,
    )


def _accuracy_after_recalibration(model: QuantizableModel, x_train, x_test, y_test, bits: int):
    calibrated = copy.deepcopy(model)
    recalibrate_bn(calibrated, x_train, bits)
    return evaluate(calibrated, x_test, y_test, bits)[0]


def run_training(job: TrainJob, log: Callable[[str], None] | None = None) -> dict:
    """Train per ``job`` and return the results dict (accuracy per bit mode, config, versions)."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    data = load_dataset(
        job.dataset, data_root=job.data_root, num_samples=job.num_samples, data_seed=job.data_seed
    )
    model_name = job.model or data.default_model
    # One model trained on every mode (joint) or one model per mode (dedicated, plain CE).
    groups = [job.bits] if job.method == "joint" else [(b,) for b in job.bits]
    augment = job.dataset.startswith("cifar")
    accuracy: dict[str, float] = {}
    recalibrated: dict[str, float] = {}
    started = time.perf_counter()
    for modes in groups:
        torch.manual_seed(job.seed)
        model = _build(job, modes, data.in_channels, data.num_classes, model_name)
        label = "joint " + ",".join(map(str, modes)) if len(modes) > 1 else f"{modes[0]}-bit"

        def on_epoch(epoch: int, stats, label=label) -> None:
            log(
                f"[{label}] epoch {epoch + 1}/{job.epochs} loss {stats.loss:.4f} "
                f"({stats.seconds:.1f}s)"
            )

        fit(
            model,
            data.x_train,
            data.y_train,
            modes,
            job.loss,
            job.optim,
            job.epochs,
            job.seed,
            augment,
            on_epoch,
        )
        for bits in modes:
            accuracy[str(bits)] = evaluate(model, data.x_test, data.y_test, bits)[0]
            if job.recalibrate_bn:
                recalibrated[str(bits)] = _accuracy_after_recalibration(
                    model, data.x_train, data.x_test, data.y_test, bits
                )
    results = {
        "accuracy_by_bits": accuracy,
        "config": {**asdict(job), "model": model_name, "bits": list(job.bits)},
        "versions": versions(),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if job.recalibrate_bn:
        results["accuracy_by_bits_recalibrated"] = recalibrated
    return results


def format_table(results: dict) -> str:
    """Plain-text table of accuracy per bit mode."""
    rows = [
        "bits  accuracy" + ("  recalibrated" if "accuracy_by_bits_recalibrated" in results else "")
    ]
    for bits, acc in results["accuracy_by_bits"].items():
        line = f"{bits:>4}  {acc:8.4f}"
        if "accuracy_by_bits_recalibrated" in results:
            line += f"  {results['accuracy_by_bits_recalibrated'][bits]:12.4f}"
        rows.append(line)
    return "\n".join(rows)


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (temp file + rename): a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
    tmp.replace(path)
