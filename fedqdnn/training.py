"""Training and evaluation loops for Quantizable DNNs on in-memory tensors.

A joint step runs the forward pass once per trained bit mode, sums the consistency loss,
and takes one optimizer step (shared weights receive every mode's gradient). The loops run
where the model lives (CPU or CUDA); batches follow the model, and every random draw
(shuffling, augmentation) comes from a CPU generator, so the batch order is the same on any
device.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as validated_dataclass

from fedqdnn.accelerator import model_device
from fedqdnn.losses import ConsistencyConfig, consistency_loss, one_mode_teacher
from fedqdnn.models.base import QuantizableModel
from fedqdnn.validation import BatchSize, LearningRate, Momentum, WeightDecay

EVAL_BATCH = 1024


class Optimizer(StrEnum):
    """The local optimizer."""

    ADAM = "adam"
    SGD = "sgd"


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class OptimConfig:
    """Optimizer recipe shared by centralized and federated (client) training."""

    optimizer: Optimizer = Field(Optimizer.ADAM, description="optimizer: adam or sgd")
    lr: LearningRate = Field(1e-3, description="learning rate")
    momentum: Momentum = Field(0.9, description="SGD momentum (sgd only)")
    weight_decay: WeightDecay = Field(0.0, description="L2 weight decay")
    batch_size: BatchSize = Field(64, description="mini-batch size")
    cosine: bool = Field(
        True, description="decay the learning rate to 0 over all steps of a fit (cosine)"
    )


@dataclass
class EpochStats:
    """What one epoch did: mean loss, per-mode loss terms, seconds."""

    loss: float
    terms: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    num_examples: int = 0


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | None,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches (in order when ``generator``, a CPU generator, is None), on
    ``device`` (default: where ``x`` is)."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]
        yield (xb, yb) if device is None else (xb.to(device), yb.to(device))


def augment_images(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding (CIFAR recipe); the draws
    come from the CPU ``generator`` whatever device ``x`` is on."""
    n, _, h, w = x.shape
    where = x.device
    flip = (torch.rand(n, generator=generator) < 0.5).to(where)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(where)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(where)
    rows = (dy[:, None] + torch.arange(h, device=where)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=where)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=where)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=where)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def forward_modes(
    model: QuantizableModel, x: torch.Tensor, modes: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Each mode's logits on ``x``, top mode first. The full-precision stem is the same in
    every mode, so it runs once; its backward receives the sum of every mode's gradient,
    exactly as separate passes would."""
    logits = {}
    stem_out = model.stem(x)
    for bits in sorted(modes, reverse=True):
        model.set_bits(bits)
        logits[bits] = model.body(stem_out)
    return logits


def joint_step(
    model: QuantizableModel,
    x: torch.Tensor,
    y: torch.Tensor,
    modes: Sequence[int],
    loss_config: ConsistencyConfig,
    optimizer: torch.optim.Optimizer,
    start_model: QuantizableModel | None = None,
    teacher_bits: int | None = None,
) -> tuple[float, dict[int, float]]:
    """One optimizer step over the summed loss of ``modes`` (:func:`forward_modes`).

    ``start_model``: the frozen model training started from (``global_kd_weight``);
    ``teacher_bits``: the mode of it that teaches a one-mode device (``one_mode_kd_weight``).
    """
    logits = forward_modes(model, x, modes)
    start_logits, teacher_logits = None, None
    if start_model is not None:
        with torch.no_grad():
            start_stem = start_model.stem(x)
            if loss_config.global_kd_weight > 0:
                start_logits = {}
                for bits in modes:
                    start_model.set_bits(bits)
                    start_logits[bits] = start_model.body(start_stem)
            if teacher_bits is not None:
                start_model.set_bits(teacher_bits)
                teacher_logits = start_model.body(start_stem)
    loss, terms = consistency_loss(logits, y, loss_config, start_logits, teacher_logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), terms


def make_optimizer(
    model: torch.nn.Module, config: OptimConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The configured optimizer (+ cosine decay to zero over ``total_steps`` when enabled)."""
    params = model.parameters()
    if config.optimizer == Optimizer.SGD:
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
        if config.cosine
        else None
    )
    return optimizer, scheduler


def train_epoch(
    model: QuantizableModel,
    x: torch.Tensor,
    y: torch.Tensor,
    modes: Sequence[int],
    loss_config: ConsistencyConfig,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: bool = False,
    start_model: QuantizableModel | None = None,
    teacher_bits: int | None = None,
) -> EpochStats:
    """One pass over (x, y) with joint steps; returns mean loss and per-mode terms."""
    model.train()
    start = time.perf_counter()
    total, count = 0.0, 0
    term_sums: dict[int, float] = {}
    previous = model.active_bits
    for xb, yb in iterate_batches(x, y, batch_size, generator, model_device(model)):
        if augment:
            xb = augment_images(xb, generator)
        loss, terms = joint_step(
            model, xb, yb, modes, loss_config, optimizer, start_model, teacher_bits
        )
        if scheduler is not None:
            scheduler.step()
        total += loss * len(yb)
        count += len(yb)
        for b, t in terms.items():
            term_sums[b] = term_sums.get(b, 0.0) + t * len(yb)
    model.set_bits(previous)
    if not math.isfinite(total):
        raise FloatingPointError("training loss became non-finite; lower the learning rate")
    return EpochStats(
        loss=total / max(1, count),
        terms={b: s / max(1, count) for b, s in term_sums.items()},
        seconds=time.perf_counter() - start,
        num_examples=count,
    )


@torch.no_grad()
def evaluate(
    model: QuantizableModel, x: torch.Tensor, y: torch.Tensor, bits: int
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` at ``bits`` on (x, y), eval mode."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    with model.bits(bits):
        for xb, yb in iterate_batches(x, y, EVAL_BATCH, None, model_device(model)):
            logits = model(xb)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    n = max(1, len(y))
    return correct / n, loss_sum / n


def fit(
    model: QuantizableModel,
    x: torch.Tensor,
    y: torch.Tensor,
    modes: Sequence[int],
    loss_config: ConsistencyConfig,
    optim_config: OptimConfig,
    epochs: int,
    seed: int,
    augment: bool = False,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train ``model`` jointly on ``modes`` for ``epochs`` epochs, reproducibly from ``seed``.

    The one training loop of the project: centralized jobs call it once, a federated client
    once per round on its local data (a fresh optimizer each round, as FedAvg clients do).
    """
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(y) / optim_config.batch_size)
    optimizer, scheduler = make_optimizer(model, optim_config, steps)
    start_model = None
    teacher_bits = None  # decided once: the device's modes do not change within a fit
    if loss_config.one_mode_kd_weight > 0:
        teacher_bits = one_mode_teacher(modes, model.bit_modes)
    if loss_config.global_kd_weight > 0 or teacher_bits is not None:  # the starting model, frozen
        start_model = copy.deepcopy(model).eval().requires_grad_(False)
    history = []
    for epoch in range(epochs):
        stats = train_epoch(
            model,
            x,
            y,
            modes,
            loss_config,
            optimizer,
            optim_config.batch_size,
            generator,
            scheduler,
            augment,
            start_model,
            teacher_bits,
        )
        history.append(stats)
        if on_epoch is not None:
            on_epoch(epoch, stats)
    return history


def mean_loss(history: Sequence[EpochStats]) -> float:
    """Example-weighted mean loss over the epochs of a fit."""
    count = sum(s.num_examples for s in history)
    return sum(s.loss * s.num_examples for s in history) / max(1, count)
