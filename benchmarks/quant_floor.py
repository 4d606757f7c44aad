"""Why a quantized training step costs what it does, and what it could cost at best.

The quantized step (MNIST-1D net, batch 64, 4-bit, learnable clip) is timed as it is and
with each quantizer replaced by a stand-in, side by side with the FP32 step (interleaved
repeats, median; ratios to FP32):

* ``quantized``: the step as trained;
* ``ideal_activation``: the activation quantizer replaced by one that costs what ReLU costs
  (one pass forward, one backward): the floor of any fused activation kernel;
* ``no_weight_quantizer``: weights used unquantized: what quantizing them costs;
* ``ideal_activation_no_weight_quantizer``: both: what remains (clip parameters, autograd
  bookkeeping).

The stand-ins compute something else; they only bound the cost. ``ops`` lists the operators
of the quantized step by self CPU time (torch.profiler), with calls per step: the activation
quantizer's full-tensor passes show up as ``div``, ``clamp``, ``eq``, ``ge``, ``mul_``,
``round_``, ``div_``, ``where`` and ``sum``.
Usage: python benchmarks/quant_floor.py [--threads N] --out benchmarks/results/quant_floor.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedqdnn import quant  # noqa: E402
from fedqdnn.data import load_dataset  # noqa: E402
from fedqdnn.files import write_json  # noqa: E402
from fedqdnn.losses import ConsistencyConfig  # noqa: E402
from fedqdnn.models import build_model  # noqa: E402
from fedqdnn.provenance import load_average_1min, versions  # noqa: E402
from fedqdnn.training import OptimConfig, joint_step, make_optimizer  # noqa: E402

MODES = (2, 4, 8, 32)
QUANT_BITS = 4


class _ReluCostActivation(torch.autograd.Function):
    """Stand-in with ReLU's cost: one pass forward, one backward, a zero clip gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, n: int) -> torch.Tensor:  # noqa: D102
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0), grad.new_zeros(1), None


class _Unquantized:
    """Stand-in for the weight quantizer: the latent weights themselves."""

    @staticmethod
    def apply(w: torch.Tensor, n: int) -> torch.Tensor:  # noqa: D102
        return w


@contextlib.contextmanager
def _stand_ins(activation: bool, weights: bool) -> Iterator[None]:
    saved = quant._ClippedRoundSTE, quant._DoReFaWeight
    if activation:
        quant._ClippedRoundSTE = _ReluCostActivation
    if weights:
        quant._DoReFaWeight = _Unquantized
    try:
        yield
    finally:
        quant._ClippedRoundSTE, quant._DoReFaWeight = saved


CASES = {  # name: (modes, ideal activation, unquantized weights)
    "fp32": ((32,), False, False),
    "quantized": ((QUANT_BITS,), False, False),
    "ideal_activation": ((QUANT_BITS,), True, False),
    "no_weight_quantizer": ((QUANT_BITS,), False, True),
    "ideal_activation_no_weight_quantizer": ((QUANT_BITS,), True, True),
}


def _setup():
    data = load_dataset("mnist1d")
    x, y = data.train_inputs(np.arange(64)), data.y_train[:64]
    torch.manual_seed(0)
    model = build_model("mnist1d_cnn", MODES, data.num_classes, 1, learnable_clip=True)
    model.train()
    optimizer, _ = make_optimizer(model, OptimConfig(cosine=False), 1)
    return model, optimizer, x, y


def _seconds_per_step(model, optimizer, x, y, case: str, steps: int) -> float:
    modes, activation, weights = CASES[case]
    loss_config = ConsistencyConfig()
    with _stand_ins(activation, weights):
        start = time.perf_counter()
        for _ in range(steps):
            joint_step(model, x, y, modes, loss_config, optimizer)
        return (time.perf_counter() - start) / steps


def _ops(model, optimizer, x, y, steps: int = 30) -> list[dict]:
    """Operators of the quantized step by self CPU time (per step)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            joint_step(model, x, y, (QUANT_BITS,), ConsistencyConfig(), optimizer)
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:20]
    return [
        {
            "op": e.key,
            "calls_per_step": round(e.count / steps, 2),
            "self_us_per_step": round(e.self_cpu_time_total / steps, 1),
        }
        for e in rows
    ]


def run(out: Path | None, threads: int | None = None, steps: int = 30, repeats: int = 7) -> dict:
    """Every case, interleaved; ratios to FP32 and the quantized step's operators."""
    if threads is not None:
        torch.set_num_threads(threads)
    load_before = load_average_1min()
    model, optimizer, x, y = _setup()
    for case in CASES:  # warm-up
        _seconds_per_step(model, optimizer, x, y, case, 3)
    times: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(repeats):
        for case in CASES:
            times[case].append(_seconds_per_step(model, optimizer, x, y, case, steps))
    med = {case: statistics.median(v) for case, v in times.items()}
    result = {
        "ratio_to_fp32": {case: round(med[case] / med["fp32"], 3) for case in CASES},
        "seconds_per_step": med,
        "torch_threads": torch.get_num_threads(),
        "ops": _ops(model, optimizer, x, y),
        "load_avg_1min_before_after": [load_before, load_average_1min()],
        "versions": versions(),
    }
    if out is not None:
        write_json(out, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quant_floor.json"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    res = run(args.out, args.threads)
    print(json.dumps(res["ratio_to_fp32"], indent=2))
