"""Result tables: the one Markdown builder and every report that uses it."""

import pytest

from fedqdnn.centralized import format_table
from fedqdnn.convergence import largest_drop
from fedqdnn.deployment import evaluated_model
from fedqdnn.schema import ArmRow, Comparison, Curve, Sweep
from fedqdnn.tables import markdown_table, mean_cell, mean_std_cell
from simulations.compare import convergence_table, stability_table, summary_table
from simulations.sweeps import summary, sweep_cells


def test_markdown_table_and_cells_hand_computed():
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    assert mean_std_cell([0.5, 0.7]) == "60.0 ± 14.1 (n = 2)"  # std of 50, 70 is 14.142
    # one value is not a spread of zero: shown as itself, with its count
    assert mean_std_cell([0.25]) == "25.0 (n = 1)"
    assert mean_std_cell([]) == "–" and mean_cell([]) == "–"
    assert mean_cell([0.5, 0.7]) == "60.0"


def _row(arm: str, tier: str, accuracy: float = 0.5, bits: int = 2, rounds=None, seconds=None):
    return ArmRow(arm=arm, seed=0, tier=tier, bits=bits, accuracy=accuracy,
                  rounds_to_target=rounds, sim_seconds_to_target=seconds, model_bytes=0,
                  bytes_per_round=0, sim_seconds_per_round=0.0)  # fmt: skip


def _comparison(rows: list[ArmRow], arms: list[str], **config) -> Comparison:
    return Comparison(rows=rows, curves={}, per_device={}, arms=dict.fromkeys(arms, ""),
                      seeds=[0], config=config, versions={}, wall_seconds=0.0)  # fmt: skip


def test_sweep_cells_and_summary_every_arm_deployed_accuracy_hand_computed():
    def row(arm, tier, seed, trained, deployed, bits=2):
        return _row(arm, tier, trained, bits=bits).model_copy(
            update={"seed": seed, "accuracy_window_average_best_mode": deployed}
        )

    low = _comparison(
        [row("fedqdnn", "a", 0, 0.1, 0.5), row("fedqdnn", "a", 1, 0.1, 0.7),
         row("fedqdnn", "b", 0, 0.1, 0.9, bits=32), row("fedqdnn", "b", 1, 0.1, 0.8, bits=32),
         row("lc", "a", 0, 0.1, 0.6), row("lc", "a", 1, 0.1, 0.6)],
        ["fedqdnn", "lc"],
    )  # fmt: skip
    old = _comparison([_row("fedqdnn", "a", 0.25)], ["fedqdnn"])  # written before deployments
    cells = sweep_cells({"alpha-0.1": low, "alpha-0.5": old})
    got = {
        (c.point, c.arm, c.tier, c.field): (round(c.mean, 9), c.std, c.seeds, c.bits) for c in cells
    }
    deployed = "accuracy_window_average_best_mode"
    assert {k: v for k, v in got.items() if k[3] == deployed} == {
        ("alpha-0.1", "fedqdnn", "a", deployed): (0.6, pytest.approx(0.1414213562), 2, 2),
        ("alpha-0.1", "fedqdnn", "b", deployed): (0.85, pytest.approx(0.0707106781), 2, 32),
        ("alpha-0.1", "lc", "a", deployed): (0.6, 0.0, 2, 2),
    }  # the older comparison has no cells for a deployment it did not measure
    assert got[("alpha-0.5", "fedqdnn", "a", "accuracy")] == (0.25, None, 1, 2)
    assert got[("alpha-0.1", "fedqdnn", "a", "accuracy")] == (0.1, 0.0, 2, 2)
    assert {c.field for c in cells} == {"accuracy", deployed}
    sweep = Sweep(kind="alpha", points={"alpha-0.1": "0.1", "alpha-0.5": "0.5"}, field=deployed,
                  cells=cells, seeds=[0, 1], versions={})  # fmt: skip
    assert summary(sweep).splitlines() == [
        "| arm | point | a | b |",
        "|---|---|---|---|",
        "| fedqdnn | alpha-0.1 | 60.0 ± 14.1 (n = 2) | 85.0 ± 7.1 (n = 2) |",
        "| lc | alpha-0.1 | 60.0 ± 0.0 (n = 2) | – |",
    ]
    assert summary(sweep, "accuracy").splitlines()[2:] == [
        "| fedqdnn | alpha-0.1 | 10.0 ± 0.0 (n = 2) | 10.0 ± 0.0 (n = 2) |",
        "| fedqdnn | alpha-0.5 | 25.0 (n = 1) | – |",
        "| lc | alpha-0.1 | 10.0 ± 0.0 (n = 2) | – |",
    ]


def test_comparison_summary_names_bits_and_spreads():
    rows = [
        _row("per-tier", "cpu-fp32", 0.8, bits=32),
        _row("per-tier", "cpu-fp32", 0.9, bits=32),
        _row("lowest-common", "phone-npu-int4", 0.5, bits=2),
    ]
    result = _comparison(rows, ["per-tier", "lowest-common"], bits="2,4,32")
    lines = summary_table(result).splitlines()
    # tiers are named with their top mode even without fedqdnn among the arms
    assert lines[0] == "| arm | cpu-fp32 (32-bit) | phone-npu-int4 (4-bit) |"
    assert lines[2] == "| per-tier | 85.0 ± 7.1 (n = 2) | – |"
    assert lines[3] == "| lowest-common | – | 50.0 (n = 1) |"


def test_centralized_table_shows_recalibrated_column_when_measured():
    plain = format_table({"accuracy_by_bits": {"2": 0.5}})
    assert plain.splitlines() == ["| bits | accuracy |", "|---|---|", "| 2 | 0.5000 |"]
    both = format_table(
        {"accuracy_by_bits": {"2": 0.5}, "accuracy_by_bits_recalibrated": {"2": 0.75}}
    )
    assert both.splitlines()[2] == "| 2 | 0.5000 | 0.7500 |"


def test_convergence_table_means_reached_rounds_and_marks_misses():
    rows = [
        _row("a", "t", rounds=10, seconds=600),
        _row("a", "t", rounds=20, seconds=1800),
        _row("b", "t", rounds=10, seconds=60),
        _row("b", "t"),
    ]
    result = _comparison(rows, ["a", "b"], **{"target-accuracy": 0.9})
    lines = convergence_table(result).splitlines()
    assert lines[0] == "| arm | t: rounds to 90% |"
    assert lines[2] == "| a | 15 (20 min) |" and lines[3] == "| b | – |"


def test_largest_drop_is_the_mean_minus_the_worst_value():
    assert largest_drop([0.9, 0.6, 0.9]) == pytest.approx(0.2)
    assert largest_drop([0.7]) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        largest_drop([])


def test_stability_table_reads_the_final_window_of_each_seeds_curve_hand_computed():
    def curve(by_round: list[dict]) -> Curve:
        n = len(by_round)
        return Curve(participants="", rounds=list(range(1, n + 1)), sim_elapsed_seconds=[0.0] * n,
                     central_accuracy_by_bits=[{}] * n, accuracy_by_tier=by_round)  # fmt: skip

    def row(arm, seed, accuracy, averaged):
        return _row(arm, "t", accuracy).model_copy(
            update={"seed": seed, "accuracy_window_average": averaged}
        )

    result = _comparison(
        [row("a", 0, 0.80, 0.85), row("a", 1, 0.80, 0.80), row("b", 0, 0.5, None),
         row("b", 1, 0.5, None)],
        ["a", "b"], rounds=4, **{"evaluate-every": 1, "final-average": 3},
    ).model_copy(update={"seeds": [0, 1], "curves": {
        # round 1 (0.1) is outside the window of rounds 2-4; seed 0 there: 0.9, 0.6, 0.9
        "a/seed0": [curve([{"t": 0.1}, {"t": 0.9}, {"t": 0.6}, {"t": 0.9}])],
        "a/seed1": [curve([{"t": 0.1}, {"t": 0.8}, {"t": 0.8}, {"t": 0.8}])],
    }})  # fmt: skip
    lines = stability_table(result).splitlines()
    # drop: worst seed 0.8 - 0.6 = 20.0; std: mean of 0.1414 (seed 0) and 0 = 7.1;
    # gain: mean of +5 and 0 = +2.5; arm b has no curve and no averaged model
    assert lines[2] == "| a | t | 20.0 | 7.1 | +2.5 |"
    assert lines[3] == "| b | t | – | – | – |"
    assert lines[0].startswith("| arm | tier | as trained: largest drop")
    served = result.model_copy(update={"config": {**result.config, "serve-ema": 0.95}})
    assert (
        stability_table(served)
        .splitlines()[0]
        .startswith("| arm | tier | served (serve-ema 0.95): largest drop")
    )


def test_every_table_names_the_evaluated_model_in_one_wording():
    assert evaluated_model({}) == "as trained"
    assert evaluated_model({"serve-ema": 0.0}) == "as trained"
    assert evaluated_model({"serve-ema": 0.95}) == "served (serve-ema 0.95)"
