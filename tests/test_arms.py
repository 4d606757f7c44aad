"""Baselines as declarations: their run plans, and a typo failing at declaration."""

import pytest

from fedqdnn.config import FederatedConfig
from strategies.arms import ARMS, Arm, Kind, default_arms, get_arm

CFG = FederatedConfig(num_clients=9, seed=2)


def test_plans_hand_checked():
    tiers = {"mcu-int2", "phone-npu-int4", "cpu-fp32"}
    (fedqdnn,) = get_arm("fedqdnn").plan(CFG)
    assert fedqdnn == (CFG, list(range(9)))
    per_tier = get_arm("per-tier").plan(CFG)
    assert len(per_tier) == len(tiers)
    assert sorted(d for _, devices in per_tier for d in devices) == list(range(9))
    assert all(run.participant_ids == devices for run, devices in per_tier)
    ((exclusive, served),) = get_arm("fp32-exclusive").plan(CFG)
    assert served == list(range(9)) and len(exclusive.participant_ids) == 3
    assert exclusive.train_modes == "fp32"


def test_default_comparison_leaves_out_the_research_variants():
    names = default_arms()
    assert names[0] == "fedqdnn" and "fp32-all-reference" in names
    variants = [n for n, s in ARMS.items() if s.kind == Kind.VARIANT]
    assert variants and not set(variants) & set(names)


def test_a_mistyped_change_fails_at_declaration():
    with pytest.raises(ValueError, match="unknown config key 'kd_wieght'"):
        Arm("typo", "a typo", {"kd_wieght": 0.0})
    with pytest.raises(ValueError, match="unknown arm 'magic'"):
        get_arm("magic")
