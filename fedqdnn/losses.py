"""Consistency-based loss over a set of bit modes (docs/method.md gives the formula).

L = CE(z_top, y) + sum_{b < top} [ ce_weight * CE(z_b, y)
                                  + kd_weight * T^2 * KL( softmax(z_t(b)/T) || softmax(z_b/T) ) ]
    [ + global_kd_weight * sum_b T^2 * KL( softmax(z0_b/T) || softmax(z_b/T) ) ]
    [ + one_mode_kd_weight * T^2 * KL( softmax(z0_u/T) || softmax(z_b/T) ) ]   (one-mode device)

where t(b) is the teacher of mode b: the top mode (``teacher="top"``) or the next-higher
trained mode (``teacher="next"``, recursive as in Any-Precision). Teacher logits are
detached, so the gradient of a lower mode never pulls the teacher toward the student. The
bracketed terms are off by default: z0_b are mode b's logits under the frozen model a federated
client received this round, and z0_u those of the next mode u above b in the model, for a device
that trains one mode b below the model's top (variants, docs/results.md section 6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

from fedqdnn.validation import LossWeight, Temperature, parse_mode_pairs


class Teacher(StrEnum):
    """Which mode teaches a lower mode: the top trained mode, or the next-higher one."""

    TOP = "top"
    NEXT = "next"


TEACHERS = tuple(t.value for t in Teacher)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ConsistencyConfig:
    """Weights of the consistency loss. ``kd_weight=0`` is the no-consistency ablation."""

    ce_weight: LossWeight = Field(1.0, description="weight of each lower mode's cross-entropy term")
    kd_weight: LossWeight = Field(
        1.0,
        description="weight of each lower mode's T^2 KL term to its teacher (0: no consistency)",
    )
    temperature: Temperature = Field(1.0, description="distillation temperature T")
    teacher: Teacher = Field(
        Teacher.TOP, description="teacher of a lower mode: top (top mode) or next (next mode up)"
    )
    global_kd_weight: LossWeight = Field(
        0.0,
        description="weight of each trained mode's T^2 KL to the same mode of the model the "
        "round started from (a federated client's drift correction under label skew; 0: off)",
    )
    one_mode_kd_weight: LossWeight = Field(
        0.0,
        description="weight of a one-mode device's T^2 KL to the next mode up of the model the "
        "round started from (a teacher for devices that train one mode below the top, whom the "
        "consistency term never reaches; 0: off)",
    )
    mode_weights: Annotated[
        tuple[tuple[int, LossWeight], ...], BeforeValidator(parse_mode_pairs)
    ] = Field((), description="weight of a mode's whole term, e.g. '32:2' (others 1)")

    def weight_of(self, bits: int) -> float:
        """The weight of mode ``bits``'s term (1 unless given)."""
        return dict(self.mode_weights).get(bits, 1.0)


def distillation_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), batch mean; teacher detached."""
    t = temperature
    target = F.log_softmax(teacher.detach() / t, dim=1)
    log_student = F.log_softmax(student / t, dim=1)
    return F.kl_div(log_student, target, log_target=True, reduction="batchmean") * (t * t)


def teacher_of(bits: int, modes: list[int], teacher: str) -> int:
    """Teacher mode for ``bits`` among ascending ``modes``."""
    if teacher == Teacher.TOP:
        return modes[-1]
    return modes[modes.index(bits) + 1]


def one_mode_teacher(modes: Sequence[int], model_modes: Sequence[int]) -> int | None:
    """The frozen teacher mode of a device that trains one mode: the next mode up in the model
    (None when the device trains several modes, or its one mode is the model's top)."""
    if len(modes) != 1:
        return None
    higher = sorted(b for b in model_modes if b > modes[0])
    return higher[0] if higher else None


def consistency_loss(
    logits_by_bits: Mapping[int, torch.Tensor],
    targets: torch.Tensor,
    config: ConsistencyConfig | None = None,
    start_logits: Mapping[int, torch.Tensor] | None = None,
    frozen_teacher_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[int, float]]:
    """Combined loss over the trained modes; also returns each mode's term for logging
    (:func:`consistency_terms` gives the terms as tensors)."""
    terms = consistency_terms(logits_by_bits, targets, config, start_logits, frozen_teacher_logits)
    total = torch.stack(list(terms.values())).sum()
    return total, {b: float(t.detach()) for b, t in terms.items()}


def consistency_terms(
    logits_by_bits: Mapping[int, torch.Tensor],
    targets: torch.Tensor,
    config: ConsistencyConfig | None = None,
    start_logits: Mapping[int, torch.Tensor] | None = None,
    frozen_teacher_logits: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """Each trained mode's term of the loss (the loss is their sum).

    ``start_logits`` (with ``global_kd_weight > 0``): each mode's logits under the model the
    local training started from; every trained mode, the top one and a one-mode device's
    included, adds ``global_kd_weight * T^2 * KL(start || mode)`` to its term, so that a
    device's few local classes pull the shared model less far from what the federation knew.
    ``frozen_teacher_logits`` (with ``one_mode_kd_weight > 0``, a one-mode device): the next
    mode up's logits under that model (:func:`one_mode_teacher`); the one mode adds
    ``one_mode_kd_weight * T^2 * KL(frozen teacher || mode)``.
    """
    config = config or ConsistencyConfig()
    modes = sorted(logits_by_bits)
    top = modes[-1]
    terms: dict[int, torch.Tensor] = {top: F.cross_entropy(logits_by_bits[top], targets)}
    if config.weight_of(top) != 1.0:
        terms[top] = config.weight_of(top) * terms[top]
    for bits in modes[:-1]:
        z = logits_by_bits[bits]
        term = config.ce_weight * F.cross_entropy(z, targets)
        if config.kd_weight > 0:
            z_teacher = logits_by_bits[teacher_of(bits, modes, config.teacher)]
            term = term + config.kd_weight * distillation_kl(z, z_teacher, config.temperature)
        terms[bits] = term if config.weight_of(bits) == 1.0 else config.weight_of(bits) * term
    if config.global_kd_weight > 0 and start_logits is not None:
        for bits in modes:
            terms[bits] = terms[bits] + config.global_kd_weight * distillation_kl(
                logits_by_bits[bits], start_logits[bits], config.temperature
            )
    if config.one_mode_kd_weight > 0 and frozen_teacher_logits is not None:
        if len(modes) != 1:
            raise ValueError(f"a frozen teacher is for a one-mode device; got modes {modes}")
        terms[top] = terms[top] + config.one_mode_kd_weight * distillation_kl(
            logits_by_bits[top], frozen_teacher_logits, config.temperature
        )
    return terms
