"""Training-step time of one quantized mode and of the joint step, as ratios to FP32.

Ratios are measured side by side in one run (interleaved repeats, median), so machine
noise affects numerator and denominator alike. Writes JSON with ``quant_step_ratio``
and ``joint_step_ratio``. Usage: python benchmarks/step_time.py --out step_time.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fedqdnn.accelerator import CPU
from fedqdnn.data import load_dataset
from fedqdnn.files import write_json
from fedqdnn.losses import ConsistencyConfig
from fedqdnn.models import QuantizableModel, build_model, default_model_for
from fedqdnn.provenance import load_average_1min, versions
from fedqdnn.training import OptimConfig, joint_step, make_optimizer


def _time_steps(model, optimizer, x, y, modes, steps: int) -> float:
    loss_config = ConsistencyConfig()
    start = time.perf_counter()
    for _ in range(steps):
        joint_step(model, x, y, modes, loss_config, optimizer)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def step_ratios(
    model: QuantizableModel,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    repeats: int,
    quant_bits: int,
    joint_modes: tuple[int, ...],
) -> dict:
    """Median seconds per step of ``model`` (on the device of ``x``) for FP32, one quantized
    mode and the joint step over ``joint_modes``, interleaved; their ratios to FP32."""
    model.train()
    optimizer, _ = make_optimizer(model, OptimConfig(cosine=False), 1)
    cases = {"fp32": (32,), "quant": (quant_bits,), "joint": joint_modes}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for modes in cases.values():  # warm-up
        _time_steps(model, optimizer, x, y, modes, 3)
    for _ in range(repeats):
        for name, modes in cases.items():
            times[name].append(_time_steps(model, optimizer, x, y, modes, steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "quant_bits": quant_bits,
        "joint_modes": list(joint_modes),
        "seconds_per_step": med,
        "quant_step_ratio": med["quant"] / med["fp32"],
        "joint_step_ratio": med["joint"] / med["fp32"],
    }


def measure(
    dataset: str,
    batch_size: int,
    steps: int,
    repeats: int,
    quant_bits: int,
    joint_modes: tuple[int, ...],
    learnable_clip: bool = True,
    device: torch.device = CPU,
) -> dict:
    """Step ratios of the data set's default model on a batch of its training data."""
    data = load_dataset(dataset)
    x = data.train_inputs(np.arange(batch_size)).to(device)
    y = data.y_train[:batch_size].to(device)
    model_name = default_model_for(data.input_shape)
    torch.manual_seed(0)
    model = build_model(
        model_name,
        joint_modes,
        data.num_classes,
        data.in_channels,
        learnable_clip=learnable_clip,
    ).to(device)
    return {
        "dataset": dataset,
        "model": model_name,
        "activation_clip": "learnable" if learnable_clip else "fixed [0, 1]",
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        **step_ratios(model, x, y, steps, repeats, quant_bits, joint_modes),
    }


def run(out: Path | None = None, steps: int = 20, repeats: int = 5) -> dict:
    """Benchmark on MNIST-1D and digits, learnable (default) and fixed clip, with the
    process's torch threads; the headline ratios are MNIST-1D's with the default learnable
    clip. ``quant_step_ratio_1_thread`` is the same with one torch thread, as a simulated
    client computes (``--cpus-per-client 1``)."""
    load_before = load_average_1min()
    cases = [
        measure(d, 64, steps, repeats, 4, (2, 4, 8, 32), clip)
        for clip in (True, False)
        for d in ("mnist1d", "digits")
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a simulated client computes (one CPU, one thread)
    try:
        one_thread = measure("mnist1d", 64, steps, repeats, 4, (2, 4, 8, 32), True)
    finally:
        torch.set_num_threads(threads)
    cases.append(one_thread)
    result = {
        "quant_step_ratio": cases[0]["quant_step_ratio"],
        "joint_step_ratio": cases[0]["joint_step_ratio"],
        "quant_step_ratio_1_thread": one_thread["quant_step_ratio"],
        "targets": {"quant_step_ratio": 1.25, "joint_step_ratio": 4.5},
        "cases": cases,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min_before_after": [load_before, load_average_1min()],
        "versions": versions(),
    }
    if out is not None:
        write_json(out, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/step_time.json"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    res = run(args.out, args.steps, args.repeats)
    print(json.dumps({k: res[k] for k in ("quant_step_ratio", "joint_step_ratio")}, indent=2))
    for case in res["cases"]:
        print(
            case["dataset"],
            case["activation_clip"],
            {k: round(v * 1000, 2) for k, v in case["seconds_per_step"].items()},
            "ms",
        )
