"""Where models run: the one place that turns ``device = auto | cpu | cuda[:N]`` into a torch
device, makes CUDA results repeatable, and gives GPU memory back.

The entry points (``fedqdnn train``, the ServerApp, the ClientApp, offline deployment
evaluation) call :func:`select_device` once and pass the device down; the training loop
follows the model's device. ``auto`` uses CUDA when this process may: a Ray client actor when
Ray gave it a GPU share (``--gpus-per-client`` > 0), any other process when CUDA is visible.
A CPU-only selection never touches CUDA, so CPU runs are exactly what they were and an actor
without a GPU share never creates a CUDA context.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CPU = torch.device("cpu")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")
# cuBLAS needs this before its first call to be deterministic (PyTorch "Reproducibility")
_CUBLAS_WORKSPACE = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def parse_device(value: object) -> object:
    """Validate a device spec (``auto``, ``cpu``, ``cuda``, ``cuda:N``); returns it stripped."""
    if isinstance(value, str) and _SPEC.fullmatch(value.strip()):
        return value.strip()
    raise ValueError(f"allowed: {DEVICE_CHOICES}")


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot be used in this process, or None when it can."""
    if torch.version.cuda is None:
        return f"CUDA is not available here (torch {torch.__version__} is built without CUDA)"
    if not torch.cuda.is_available():
        return (
            f"CUDA is not available here (no GPU visible to torch {torch.__version__}, "
            f"CUDA {torch.version.cuda})"
        )
    return None


def select_device(spec: str, gpu_share: bool | None = None) -> torch.device:
    """The torch device for ``spec`` in this process.

    ``gpu_share``: inside a Ray client actor, whether Ray assigned it a GPU (the actor then
    sees only that GPU, as ``cuda``); None elsewhere. Raises a one-line ValueError when
    the spec asks for a GPU this process cannot use.
    """
    spec = str(parse_device(spec))
    if spec == "cpu":
        return CPU
    if spec == "auto":
        may_use_gpu = gpu_share is not False and cuda_unavailable_reason() is None
        return _cuda(torch.device("cuda")) if may_use_gpu else CPU
    if gpu_share is False:
        raise ValueError(
            f"device = {spec!r} is not allowed: Ray gave this client actor no GPU; "
            "set --gpus-per-client > 0, or use auto or cpu"
        )
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise ValueError(f"device = {spec!r} is not allowed: {reason}; use auto or cpu")
    device = torch.device("cuda") if gpu_share else torch.device(spec)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device = {spec!r} is not allowed: {torch.cuda.device_count()} CUDA device(s) "
            f"visible, cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    return _cuda(device)


def _cuda(device: torch.device) -> torch.device:
    """Make CUDA computation repeatable before its first kernel (docs/scaling.md, "GPUs").

    Deterministic algorithms (cuDNN included, warning where an op has none), no cuDNN
    autotuning, and no TF32: a 32-bit mode computes in IEEE FP32 on the GPU as on the CPU.
    """
    os.environ.setdefault(*_CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on."""
    return next(model.parameters()).device


def describe(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``: what a results file records."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def release_cuda_memory() -> None:
    """Return this process's cached GPU memory (end of a run); a no-op where CUDA is unused.

    Call it once the run's models and tensors are out of reach: the collector frees their
    blocks first, then the allocator's cache goes back to the driver.
    """
    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` torch intra-op threads, restored after. Evaluating a fleet is
    thousands of small forward passes: intra-op parallelism gains little on them, and beside
    Ray's workers on the same cores it oversubscribes them (measured 12x slower on 2 loaded
    cores; docs/scaling.md). Results are the same bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
