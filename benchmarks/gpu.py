"""GPU figures: step-time ratios on CUDA, and simulation throughput and peak GPU memory with
fractional GPUs per client against the same fleet on CPU (about 5 minutes on one GPU).

* ``steps``: median seconds per training step of one quantized mode and of the joint step,
  as ratios to the FP32 step (benchmarks/step_time.py), on CUDA, for PreActResNet-20 on
  CIFAR-shaped synthetic tensors (batch 128) and for the MNIST-1D net (batch 64).
* ``simulation``: the same fleet (benchmarks.workloads.throughput_config: MNIST-1D, 40
  clients in three tiers, every client trains every round) with ``--gpus-per-client`` 1,
  0.5, 0.25 and 0.1 (``device = auto``: the clients train on their GPU share) and on CPU
  (``device = cpu``, one CPU per client). Per run: client updates per second over the steady
  rounds 2..R, peak GPU memory in use on the device while the run lasted (driver and every
  actor; sampled every 0.25 s, minus what was in use before it started), where the clients
  computed, and the actors Ray could place.

Every simulation is a fresh child process tree with a timeout (benchmarks/process_tree.py).
``--parts steps`` measures the steps alone (torch and fedqdnn's core: no Flower or Ray needed,
for a GPU machine where those cannot be installed); the JSON then says why it has no
simulation figures. Exits with one line, status 2, where CUDA is not available.
Usage: python benchmarks/gpu.py [--quick] [--parts all|steps] [--out benchmarks/results/gpu.json]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.process_tree import run_child  # noqa: E402
from benchmarks.step_time import measure, step_ratios  # noqa: E402
from benchmarks.workloads import steady_round_seconds, throughput_config  # noqa: E402
from fedqdnn.accelerator import cuda_unavailable_reason, describe, select_device  # noqa: E402
from fedqdnn.files import write_json  # noqa: E402
from fedqdnn.models import build_model  # noqa: E402
from fedqdnn.provenance import load_average_1min, versions  # noqa: E402

GPU_SHARES = (1.0, 0.5, 0.25, 0.1)
MODES = (2, 4, 8, 32)


class GpuMemorySampler(threading.Thread):
    """Peak device-wide GPU memory in use (all processes) while a child run lasts."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        free, total = torch.cuda.mem_get_info()
        self.baseline = total - free
        self.peak = self.baseline
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            self._stop_event.wait(0.25)

    def stop(self) -> float:
        """Stop sampling; the peak above the baseline in MiB."""
        self._stop_event.set()
        self.join()
        return round((self.peak - self.baseline) / 2**20, 1)


def step_figures(steps: int, repeats: int) -> list[dict]:
    """Quantized and joint step ratios on CUDA for both models."""
    cuda = select_device("cuda")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 3, 32, 32, generator=gen).to(cuda)
    y = torch.randint(0, 10, (128,), generator=gen).to(cuda)
    torch.manual_seed(0)
    resnet = build_model("preact_resnet20", MODES, 10, 3, learnable_clip=True).to(cuda)
    return [
        {
            "model": "preact_resnet20",
            "input": "CIFAR-shaped synthetic tensors (3x32x32)",
            "activation_clip": "learnable",
            "batch_size": 128,
            **step_ratios(resnet, x, y, steps, repeats, 4, MODES),
        },
        measure("mnist1d", 64, steps, repeats, 4, MODES, True, cuda),
    ]


def _actors(cpus: int, gpus: int, gpus_per_client: float) -> int:
    """Actors Ray can place on one node: one CPU each, and the GPU share."""
    if gpus_per_client == 0:
        return cpus
    return min(cpus, math.floor(gpus / gpus_per_client + 1e-9))


def simulation_figures(rounds: int, work: Path) -> list[dict]:
    """One simulation per GPU share and one on CPU; throughput and peak GPU memory."""
    cpus = len(os.sched_getaffinity(0))
    gpus = torch.cuda.device_count()
    out = []
    for share in (*GPU_SHARES, 0.0):
        cfg = throughput_config("auto" if share else "cpu", rounds)
        name = f"gpus_{share:g}" if share else "cpu"
        spec = {
            "kind": "flower",
            "config": cfg.to_flat(),
            "cpus_per_client": 1.0,
            "gpus_per_client": share,
            "out_dir": str(work / name),
        }
        sampler = GpuMemorySampler()
        sampler.start()
        record = run_child(name, spec, work)
        peak_mb = sampler.stop()
        steady = steady_round_seconds(record) if not record["problems"] else None
        per_round = record.get("clients_per_round") or [0]
        out.append(
            {
                "gpus_per_client": share,
                "device": cfg.device,
                "actors": _actors(cpus, gpus, share),
                "client_torch_devices": record.get("client_torch_devices"),
                "steady_round_seconds": None if steady is None else round(steady, 3),
                "client_updates_per_second": (
                    None if not steady else round(max(per_round) / steady, 2)
                ),
                "peak_gpu_memory_mb": peak_mb,
                "process_wall_seconds": record["process_wall_seconds"],
                "problems": record["problems"],
                "error": record.get("error"),
            }
        )
    return out


def run(out: Path, quick: bool = False, parts: str = "all") -> dict:
    """The GPU figures ``parts`` names (all, or the steps alone); JSON to ``out``."""
    started = time.perf_counter()
    steps = step_figures(10 if quick else 20, 3 if quick else 5)
    simulation: list[dict] = []
    if parts == "all":
        with tempfile.TemporaryDirectory(prefix="fedqdnn-gpubench-") as tmp:
            simulation = simulation_figures(3 if quick else 4, Path(tmp))
        cpu_rate = simulation[-1]["client_updates_per_second"]
        for row in simulation:
            rate = row["client_updates_per_second"]
            row["throughput_vs_cpu"] = round(rate / cpu_rate, 2) if rate and cpu_rate else None
    result = {
        "device": describe(select_device("cuda")),
        "gpus": torch.cuda.device_count(),
        "cpus": len(os.sched_getaffinity(0)),
        "steps": steps,
        "simulation": simulation,
        "simulation_left_out": None if parts == "all" else "--parts steps: steps alone",
        "fleet": throughput_config("auto").to_flat(),
        "quick": quick,
        "seconds": round(time.perf_counter() - started, 1),
        "load_avg_1min": load_average_1min(),
        "date": time.strftime("%Y-%m-%d"),
        "versions": {**versions(), "cuda": torch.version.cuda},
    }
    write_json(out, result)
    return result


def main() -> int:
    """Command line; one line and status 2 where CUDA is not available."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument(
        "--parts",
        choices=("all", "steps"),
        default="all",
        help="all (default), or the step ratios alone (no Flower or Ray needed)",
    )
    args = parser.parse_args()
    reason = cuda_unavailable_reason()
    if reason is not None:
        print(f"benchmarks/gpu.py: {reason}; run it on a machine with a CUDA GPU", file=sys.stderr)
        return 2
    result = run(args.out, args.quick, args.parts)
    for row in result["steps"]:
        print(row["model"], {k: round(row[k], 3) for k in ("quant_step_ratio", "joint_step_ratio")})
    for row in result["simulation"]:
        print(
            f"gpus-per-client {row['gpus_per_client']:g}: {row['client_updates_per_second']} "
            f"updates/s, peak GPU {row['peak_gpu_memory_mb']} MiB, {row['actors']} actors"
        )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
