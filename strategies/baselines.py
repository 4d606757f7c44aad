"""FedQDNN and the baselines it is judged against, as run plans in one harness.

Every strategy runs on the same partitions, tiers and seeds; a strategy is a set of config
changes (what clients train, who takes part), how many runs it needs (per-tier: one per
tier) and how its model reaches each device (deploy policy, see
:mod:`fedqdnn.federated.deployment`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedqdnn.federated.config import FederatedConfig
from fedqdnn.hardware import assign_profiles, get_profile
from fedqdnn.quant import FULL_PRECISION


@dataclass(frozen=True)
class StrategySpec:
    """One strategy of the comparison."""

    name: str
    description: str
    changes: dict = field(default_factory=dict)
    deploy: str = "top"
    per_tier: bool = False
    fp32_clients_only: bool = False

    def plan(self, cfg: FederatedConfig) -> list[tuple[FederatedConfig, list[int]]]:
        """(run config, devices served by that run's model) for every run this strategy needs."""
        base = cfg.replace(**self.changes)
        tiers = assign_profiles(cfg.num_clients, cfg.tiers, cfg.seed)
        everyone = list(range(cfg.num_clients))
        if self.per_tier:
            runs = []
            for tier in dict.fromkeys(tiers):
                ids = [p for p in everyone if tiers[p] == tier]
                runs.append((base.replace(participants=",".join(map(str, ids))), ids))
            return runs
        if self.fp32_clients_only:
            ids = [
                p
                for p in everyone
                if FULL_PRECISION in get_profile(tiers[p]).affordable_modes(cfg.bits)
            ]
            if not ids:
                raise ValueError("fp32-exclusive needs at least one tier that runs 32-bit")
            return [(base.replace(participants=",".join(map(str, ids))), everyone)]
        return [(base, everyone)]


STRATEGIES: dict[str, StrategySpec] = {
    s.name: s
    for s in (
        StrategySpec("fedqdnn", "one Quantizable DNN; each device trains every mode it can run"),
        StrategySpec(
            "fp32-exclusive",
            "FedAvg over FP32-capable devices only; others get the FP32 model after "
            "post-training quantization to their mode (BN recalibrated on local data)",
            {"train_modes": "fp32"},
            deploy="ptq",
            fp32_clients_only=True,
        ),
        StrategySpec(
            "lowest-common",
            "every device trains and deploys the fleet's lowest mode",
            {"train_modes": "lowest-common"},
            deploy="lowest-common",
        ),
        StrategySpec(
            "per-tier",
            "one dedicated quantized model per tier, trained by that tier only",
            {"train_modes": "top"},
            per_tier=True,
        ),
        StrategySpec(
            "shared-bn",
            "ablation: one BN shared by all modes, as trained",
            {"bit_specific_bn": False},
        ),
        StrategySpec(
            "shared-bn-recal",
            "ablation: shared BN, statistics recalibrated per mode (federated pooling)",
            {"bit_specific_bn": False},
            deploy="recalibrate",
        ),
        StrategySpec("no-consistency", "ablation: no KL term (plain CE sum)", {"kd_weight": 0.0}),
        StrategySpec(
            "top-only", "ablation: each device trains only its top mode", {"train_modes": "top"}
        ),
        StrategySpec(
            "fp32-all-reference",
            "reference, not deployable on this fleet: FP32 FedAvg on all clients, every device "
            "evaluated at FP32 (the yardstick of the targets)",
            {"train_modes": "fp32"},
            deploy="fp32",
        ),
    )
}


def get_strategy(name: str) -> StrategySpec:
    """Look up a strategy; one-line error naming the allowed ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
