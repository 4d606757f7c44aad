"""Baselines as declarations: their run plans, and a typo failing at declaration."""

import pytest

from fedqdnn.config import FederatedConfig
from strategies.baselines import STRATEGIES, Kind, StrategySpec, default_strategies, get_strategy

CFG = FederatedConfig(num_clients=9, seed=2)


def test_plans_hand_checked():
    tiers = {"mcu-int2", "phone-npu-int4", "cpu-fp32"}
    (fedqdnn,) = get_strategy("fedqdnn").plan(CFG)
    assert fedqdnn == (CFG, list(range(9)))
    per_tier = get_strategy("per-tier").plan(CFG)
    assert len(per_tier) == len(tiers)
    assert sorted(d for _, devices in per_tier for d in devices) == list(range(9))
    assert all(run.participant_ids == devices for run, devices in per_tier)
    ((exclusive, served),) = get_strategy("fp32-exclusive").plan(CFG)
    assert served == list(range(9)) and len(exclusive.participant_ids) == 3
    assert exclusive.train_modes == "fp32"


def test_default_comparison_leaves_out_the_research_variants():
    names = default_strategies()
    assert names[0] == "fedqdnn" and "fp32-all-reference" in names
    variants = [n for n, s in STRATEGIES.items() if s.kind == Kind.VARIANT]
    assert variants and not set(variants) & set(names)


def test_a_mistyped_change_fails_at_declaration():
    with pytest.raises(ValueError, match="unknown config key 'kd_wieght'"):
        StrategySpec("typo", "a typo", {"kd_wieght": 0.0})
    with pytest.raises(ValueError, match="unknown strategy 'magic'"):
        get_strategy("magic")
