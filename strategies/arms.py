"""The arms of a comparison: FedQDNN and the baselines, ablations, references and variants it is
judged against, as run plans in one harness.

An *arm* is what ``fedqdnn compare --arms`` names; it is not a Flower strategy (the server-side
classes in this package) nor the config's ``aggregation`` choice. Every arm runs on the same
partitions, tiers and seeds; an arm is one declaration: a set of config changes (typed policy
values: what clients train, the BN, the loss), which devices take part (all, FP32-capable
only, or one run per tier) and how its model reaches each device
(:class:`~fedqdnn.policies.Deploy`, applied by :mod:`fedqdnn.deployment`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from fedqdnn.config import FederatedConfig
from fedqdnn.hardware import assign_profiles, get_profile
from fedqdnn.layers import BNLayout, HeadLayout
from fedqdnn.policies import Deploy, Sampling, ServerOptimizer, SharedWeighting, TrainModes
from fedqdnn.quant import FULL_PRECISION


class Kind(StrEnum):
    """What an arm is in a comparison (variants are opt-in: --arms NAME,...)."""

    METHOD = "method"
    BASELINE = "baseline"
    ABLATION = "ablation"
    REFERENCE = "reference"  # a yardstick, not deployable on the fleet
    VARIANT = "variant"  # a research variant of FedQDNN (docs/results.md)


class Participation(StrEnum):
    """Which devices train an arm's model(s)."""

    ALL = "all"  # one run, every device
    FP32_CAPABLE = "fp32-capable"  # one run, devices that run FP32 (the others only receive)
    PER_TIER = "per-tier"  # one run per tier, each trained and used by that tier only


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison."""

    name: str
    description: str
    changes: dict = field(default_factory=dict)
    deploy: Deploy = Deploy.TOP
    participation: Participation = Participation.ALL
    kind: Kind = Kind.ABLATION

    def __post_init__(self) -> None:
        # a mistyped key or value fails at import (rounds: room for a schedule it declares)
        FederatedConfig(rounds=100).replace(**self.changes)

    def plan(self, cfg: FederatedConfig) -> list[tuple[FederatedConfig, list[int]]]:
        """(run config, devices served by that run's model) for every run this arm needs."""
        base = cfg.replace(**self.changes)
        tiers = assign_profiles(cfg.num_clients, cfg.tiers, cfg.seed)
        everyone = list(range(cfg.num_clients))
        if self.participation == Participation.PER_TIER:
            runs = []
            for tier in dict.fromkeys(tiers):
                ids = [p for p in everyone if tiers[p] == tier]
                runs.append((base.replace(participants=tuple(ids)), ids))
            return runs
        if self.participation == Participation.FP32_CAPABLE:
            ids = [
                p
                for p in everyone
                if FULL_PRECISION in get_profile(tiers[p]).affordable_modes(cfg.bits)
            ]
            if not ids:
                raise ValueError(f"{self.name} needs at least one tier that runs 32-bit")
            return [(base.replace(participants=tuple(ids)), everyone)]
        return [(base, everyone)]


# Changes that single variants declare and the combined variants reuse (one value each).
SHARED_AFFINE_BN = {"bn": BNLayout.SHARED_AFFINE}
FP32_LOSS_WEIGHT = {"mode_weights": "32:2"}
WEIGHT_BY_MODES = {"shared_weighting": SharedWeighting.EXAMPLES_X_MODES}
GLOBAL_DISTILLATION = {"global_kd_weight": 1.0}

ARMS: dict[str, Arm] = {
    s.name: s
    for s in (
        Arm(
            "fedqdnn",
            "one Quantizable DNN; each device trains every mode it can run",
            kind=Kind.METHOD,
        ),
        Arm(
            "fp32-exclusive",
            "FedAvg over FP32-capable devices only; others get the FP32 model after "
            "post-training quantization to their mode (BN recalibrated on local data)",
            {"train_modes": TrainModes.FP32},
            deploy=Deploy.PTQ,
            participation=Participation.FP32_CAPABLE,
            kind=Kind.BASELINE,
        ),
        Arm(
            "lowest-common",
            "every device trains and deploys the fleet's lowest mode",
            {"train_modes": TrainModes.LOWEST_COMMON},
            deploy=Deploy.LOWEST_COMMON,
            kind=Kind.BASELINE,
        ),
        Arm(
            "per-tier",
            "one dedicated quantized model per tier, trained by that tier only",
            {"train_modes": TrainModes.TOP},
            participation=Participation.PER_TIER,
            kind=Kind.BASELINE,
        ),
        Arm(
            "shared-bn",
            "ablation: one BN shared by all modes, as trained",
            {"bn": BNLayout.SHARED},
        ),
        Arm(
            "shared-bn-recal",
            "ablation: shared BN, statistics recalibrated per mode (federated pooling)",
            {"bn": BNLayout.SHARED},
            deploy=Deploy.RECALIBRATE,
        ),
        Arm("no-consistency", "ablation: no KL term (plain CE sum)", {"kd_weight": 0.0}),
        Arm(
            "top-only",
            "ablation: each device trains only its top mode",
            {"train_modes": TrainModes.TOP},
        ),
        Arm(
            "fp32-all-reference",
            "reference, not deployable on this fleet: FP32 FedAvg on all clients, every device "
            "evaluated at FP32 (the yardstick of the targets)",
            {"train_modes": TrainModes.FP32},
            deploy=Deploy.FP32,
            kind=Kind.REFERENCE,
        ),
        Arm(
            "shared-affine-bn",
            "variant: BN statistics per mode, one affine shared by all modes (FjORD)",
            SHARED_AFFINE_BN,
            kind=Kind.VARIANT,
        ),
        Arm(
            "mode-state-carry",
            "variant: a mode's BN/clip state blended with its previous value by data (decay 0.5)",
            {"mode_state_decay": 0.5},
            kind=Kind.VARIANT,
        ),
        Arm(
            "server-momentum",
            "variant: FedAvgM on the shared weights (server momentum 0.9)",
            {"server_optimizer": ServerOptimizer.FEDAVGM, "server_momentum": 0.9},
            kind=Kind.VARIANT,
        ),
        Arm(
            "server-adam",
            "variant: FedAdam on the shared weights (eta 0.01)",
            {"server_optimizer": ServerOptimizer.FEDADAM, "server_lr": 0.01},
            kind=Kind.VARIANT,
        ),
        Arm(
            "weight-by-modes",
            "variant: shared weights averaged by examples x modes trained",
            WEIGHT_BY_MODES,
            kind=Kind.VARIANT,
        ),
        Arm(
            "fp32-loss-weight",
            "variant: the FP32 mode's loss term weighted 2",
            FP32_LOSS_WEIGHT,
            kind=Kind.VARIANT,
        ),
        Arm(
            "two-bit-loss-weight",
            "variant: the 2-bit mode's loss term weighted 2 (the tier every device trains)",
            {"mode_weights": "2:2"},
            kind=Kind.VARIANT,
        ),
        Arm(
            "bit-specific-head",
            "variant: each mode its own classifier (head = bit-specific), aggregated per mode "
            "like its BN",
            {"head": HeadLayout.BIT_SPECIFIC},
            kind=Kind.VARIANT,
        ),
        Arm(
            "strong-consistency",
            "variant: every lower mode's KL term to its teacher weighted 2 (kd-weight 2)",
            {"kd_weight": 2.0},
            kind=Kind.VARIANT,
        ),
        Arm(
            "global-distillation",
            "variant: every trained mode also distils from the model the round started from "
            "(global-kd-weight 1; drift correction under label skew)",
            GLOBAL_DISTILLATION,
            kind=Kind.VARIANT,
        ),
        Arm(
            "lowest-common+global-distillation",
            "baseline with the same drift correction: lowest-common, its one mode distilling "
            "from the model the round started from (global-kd-weight 1)",
            {"train_modes": TrainModes.LOWEST_COMMON, **GLOBAL_DISTILLATION},
            deploy=Deploy.LOWEST_COMMON,
            kind=Kind.VARIANT,
        ),
        Arm(
            "one-mode-teacher",
            "variant: a device that trains one mode below the top (the 2-bit MCUs) distils it "
            "from the next mode up of the model the round started from (one-mode-kd-weight 1)",
            {"one_mode_kd_weight": 1.0},
            kind=Kind.VARIANT,
        ),
        Arm(
            "stratified-sampling",
            "variant: each round's devices drawn within each group that trains the same modes, "
            "in proportion to its size (sampling stratified: the FP32 trainers never 0 or many)",
            {"sampling": Sampling.STRATIFIED},
            kind=Kind.VARIANT,
        ),
        Arm(
            "ascending",
            "variant: low-bit modes lead, the FP32 mode joins from round 30",
            {"mode_start": "32:30"},
            kind=Kind.VARIANT,
        ),
        Arm(
            "affine+fp32-weight",
            "variant: shared-affine BN and the FP32 mode's loss term weighted 2",
            {**SHARED_AFFINE_BN, **FP32_LOSS_WEIGHT},
            kind=Kind.VARIANT,
        ),
        Arm(
            "affine+fp32-weight+by-modes",
            "variant: shared-affine BN, FP32 loss weight 2, shared weights by examples x modes",
            {**SHARED_AFFINE_BN, **FP32_LOSS_WEIGHT, **WEIGHT_BY_MODES},
            kind=Kind.VARIANT,
        ),
        Arm(
            "teacher-next",
            "variant: each mode distils from the next mode up (Any-Precision)",
            {"teacher": "next"},
            kind=Kind.VARIANT,
        ),
    )
}


def default_arms() -> list[str]:
    """What ``fedqdnn compare`` runs without --arms: everything but the variants."""
    return [name for name, spec in ARMS.items() if spec.kind != Kind.VARIANT]


def get_arm(name: str) -> Arm:
    """Look up an arm; one-line error naming the allowed ones."""
    if name not in ARMS:
        raise ValueError(f"unknown arm {name!r}; allowed: {', '.join(ARMS)}")
    return ARMS[name]
