"""FedQDNN's margin over the best deployable baseline, paired by seed: intervals against
Student-t values from tables, the deployment and rival chosen as documented, the CLI."""

import json

import pytest

from fedqdnn.cli import main
from fedqdnn.schema import COMPARISON_FILE, ArmRow, Comparison
from simulations.margins import (
    POOLED_FIELD,
    best_deployment,
    margins_table,
    paired_interval,
    tier_margins,
    verdict,
)

CARRIED = "accuracy_window_average_best_mode"


def test_paired_interval_against_the_t_table():
    # mean 2, sample std 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    low, high = paired_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 2.48414, abs=1e-4)
    assert high == pytest.approx(2 + 2.48414, abs=1e-4)
    # n 6, std 0.5: t(0.975, 5) = 2.5706, half width 2.5706 * 0.5 / sqrt(6) = 0.52472
    diffs = [0.5, 1.0, 1.5, 0.5, 1.0, 1.5]  # mean 1, sample std sqrt(0.2) = 0.4472
    low, high = paired_interval(diffs)
    assert high - low == pytest.approx(2 * 2.570582 * 0.4472136 / 6**0.5, abs=1e-5)
    assert paired_interval([0.3]) is None and paired_interval([]) is None
    # 90 %: t(0.95, 2) = 2.9200
    low, _ = paired_interval([1.0, 2.0, 3.0], confidence=0.90)
    assert low == pytest.approx(2 - 2.919986 / 3**0.5, abs=1e-5)


def test_verdict_reads_whether_the_interval_excludes_zero():
    assert verdict((0.1, 0.4)) == "ahead"
    assert verdict((-0.4, -0.1)) == "behind"
    assert verdict((-0.1, 0.4)) == "level within noise"
    assert verdict(None) == "one seed: no interval"


def _row(arm, seed, tier, carried, pooled=None, accuracy=0.5):
    return ArmRow(arm=arm, seed=seed, tier=tier, bits=2, accuracy=accuracy,
                  accuracy_window_average_best_mode=carried,
                  accuracy_window_average_best_mode_pooled_bn=pooled, rounds_to_target=None,
                  sim_seconds_to_target=None, model_bytes=0, bytes_per_round=0,
                  sim_seconds_per_round=0.0)  # fmt: skip


def test_best_deployment_is_the_field_with_the_higher_mean_and_falls_back_to_as_trained():
    rows = [_row("a", 0, "t", 0.90, 0.80), _row("a", 1, "t", 0.70, 0.84)]  # 0.80 vs 0.82
    got = best_deployment(rows, "a", (CARRIED, POOLED_FIELD))
    assert got.field == POOLED_FIELD and got.by_seed == {0: 0.80, 1: 0.84}
    old = [_row("a", 0, "t", None, None, accuracy=0.6)]  # written before the deployments
    assert best_deployment(old, "a", (CARRIED, POOLED_FIELD)).field == "accuracy"
    assert best_deployment(rows, "b", (CARRIED,)) is None


def _comparison() -> Comparison:
    """Two tiers, three seeds. Tier mcu-int2: fedqdnn carried 0.90/0.92/0.94 (pooled lower),
    baselines lowest-common pooled 0.91/0.91/0.91 (carried lower) and per-tier 0.80; an
    ablation at 0.99 (not deployable, ignored) and the reference at 0.95. Tier cpu-fp32:
    fedqdnn alone."""
    rows = []
    for seed, (own, lc) in enumerate([(0.90, 0.91), (0.92, 0.91), (0.94, 0.91)]):
        rows += [
            _row("fedqdnn", seed, "mcu-int2", own, own - 0.05),
            _row("lowest-common", seed, "mcu-int2", 0.5, lc),
            _row("per-tier", seed, "mcu-int2", 0.80, 0.80),
            _row("no-consistency", seed, "mcu-int2", 0.99, 0.99),
            _row("fp32-all-reference", seed, "mcu-int2", 0.95, 0.95),
            _row("fedqdnn", seed, "cpu-fp32", 0.7, 0.6),
        ]
    arms = ["fedqdnn", "lowest-common", "per-tier", "no-consistency", "fp32-all-reference"]
    return Comparison(rows=rows, curves={}, per_device={}, arms=dict.fromkeys(arms, ""),
                      seeds=[0, 1, 2], config={"bits": "2,4,32"}, versions={},
                      wall_seconds=0.0)  # fmt: skip


def test_margins_pair_the_method_with_the_best_deployable_baseline_seed_by_seed():
    t, u = tier_margins(_comparison())
    assert (t.rival.arm, t.rival.field, t.method.field) == ("lowest-common", POOLED_FIELD, CARRIED)
    assert t.differences == pytest.approx([-0.01, 0.01, 0.03])
    assert t.reference.arm == "fp32-all-reference"
    assert u.rival is None and u.differences == []
    lines = margins_table(_comparison()).splitlines()
    # mean +1.0 pt, sample std 2.0 pt, half width 4.3027 * 2 / sqrt(3) = 4.97 pt
    assert lines[2] == (
        "| mcu-int2 | 92.00 (carried) | lowest-common 91.00 (pooled) | -1.00 +1.00 +3.00 | +1.00 "
        "| -3.97 … +5.97 | 2 of 3 | level within noise | -3.00 |"
    )
    assert lines[3] == "| cpu-fp32 | 70.00 (carried) | – | – | – | – | – | – | – |"


def test_fedqdnn_tables_prints_the_margins_of_a_saved_comparison(tmp_path, capsys):
    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / COMPARISON_FILE).write_text(json.dumps(_comparison().model_dump(mode="json")))
    assert main(["tables", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "| mcu-int2 | 92.00 (carried) | lowest-common 91.00 (pooled) |" in out
    assert "no-consistency against" not in out  # an ablation is not judged by the claim
    # a research variant faces the same claim: its own margins table
    variant = _comparison()
    rows = [r.model_copy(update={"arm": "bit-specific-head", CARRIED: getattr(r, CARRIED) + 0.02})
            for r in variant.rows if r.arm == "fedqdnn"]  # fmt: skip
    variant = variant.model_copy(
        update={"rows": variant.rows + rows, "arms": {**variant.arms, "bit-specific-head": ""}}
    )
    (folder / COMPARISON_FILE).write_text(json.dumps(variant.model_dump(mode="json")))
    assert main(["tables", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "bit-specific-head against the best deployable baseline, paired by seed" in out
    assert margins_table(variant, "bit-specific-head") in out
    # its own rows, against the same rival: every seed's margin 2 pt up
    assert (
        "| mcu-int2 | 94.00 (carried) | lowest-common 91.00 (pooled) | +1.00 +3.00 +5.00 |" in out
    )
    # and against fedqdnn itself: what the change buys, seed by seed
    versus = margins_table(variant, "bit-specific-head", against="fedqdnn").splitlines()
    assert "bit-specific-head against fedqdnn (what the change buys), paired by seed" in out
    assert versus[0].startswith("| tier | bit-specific-head | fedqdnn |")
    assert versus[2].startswith(
        "| mcu-int2 | 94.00 (carried) | fedqdnn 92.00 (carried) | +2.00 +2.00 +2.00 | +2.00 |"
    )
    assert "| 3 of 3 | ahead | -1.00 |" in versus[2]
    assert "\n".join(versus) in out
    assert main(["tables", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere" in err and COMPARISON_FILE in err, err
