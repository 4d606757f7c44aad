"""Result tables: the one Markdown builder and every report that uses it."""

from fedqdnn.centralized import format_table
from fedqdnn.schema import ArmRow, Comparison
from fedqdnn.tables import markdown_table, mean_cell, mean_std_cell
from simulations.compare import convergence_table, summary_table
from simulations.sweeps import summary


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


def test_sweep_summary_averages_one_arm_per_tier():
    rows = [
        _row("fedqdnn", "a", 0.5),
        _row("fedqdnn", "a", 0.7),
        _row("fedqdnn", "b", 0.9),
        _row("other", "a", 0.1),
    ]
    table = summary({"p": _comparison(rows, ["fedqdnn"]), "q": _comparison(rows[3:], ["o"])})
    assert table.splitlines() == [
        "| point | a | b |",
        "|---|---|---|",
        "| p | 60.0 | 90.0 |",
        "| q | – | – |",
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
