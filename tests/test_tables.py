"""Result tables: the one Markdown builder and every report that uses it."""

from fedqdnn.centralized import format_table
from fedqdnn.tables import markdown_table, mean_cell, mean_std_cell
from simulations.compare import convergence_table, summary_table
from simulations.sweeps import summary


def test_markdown_table_and_cells_hand_computed():
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    assert mean_std_cell([0.5, 0.7]) == "60.0 ± 14.1"  # std of 50, 70 is 14.142
    assert mean_std_cell([0.25]) == "25.0 ± 0.0"
    assert mean_std_cell([]) == "–" and mean_cell([]) == "–"
    assert mean_cell([0.5, 0.7]) == "60.0"


def test_sweep_summary_averages_one_strategy_per_tier():
    rows = [
        {"strategy": "fedqdnn", "tier": "a", "accuracy": 0.5},
        {"strategy": "fedqdnn", "tier": "a", "accuracy": 0.7},
        {"strategy": "fedqdnn", "tier": "b", "accuracy": 0.9},
        {"strategy": "other", "tier": "a", "accuracy": 0.1},
    ]
    table = summary({"p": {"rows": rows}, "q": {"rows": rows[3:]}})
    assert table.splitlines() == [
        "| point | a | b |",
        "|---|---|---|",
        "| p | 60.0 | 90.0 |",
        "| q | – | – |",
    ]


def test_comparison_summary_names_bits_and_spreads():
    rows = [
        {"strategy": "per-tier", "tier": "cpu-fp32", "bits": 32, "accuracy": 0.8},
        {"strategy": "per-tier", "tier": "cpu-fp32", "bits": 32, "accuracy": 0.9},
        {"strategy": "lowest-common", "tier": "phone-npu-int4", "bits": 2, "accuracy": 0.5},
    ]
    result = {
        "rows": rows,
        "strategies": {"per-tier": "", "lowest-common": ""},
        "config": {"bits": "2,4,32"},
    }
    lines = summary_table(result).splitlines()
    # tiers are named with their top mode even without fedqdnn among the strategies
    assert lines[0] == "| strategy | cpu-fp32 (32-bit) | phone-npu-int4 (4-bit) |"
    assert lines[2] == "| per-tier | 85.0 ± 7.1 | – |"
    assert lines[3] == "| lowest-common | – | 50.0 ± 0.0 |"


def test_centralized_table_shows_recalibrated_column_when_measured():
    plain = format_table({"accuracy_by_bits": {"2": 0.5}})
    assert plain.splitlines() == ["| bits | accuracy |", "|---|---|", "| 2 | 0.5000 |"]
    both = format_table(
        {"accuracy_by_bits": {"2": 0.5}, "accuracy_by_bits_recalibrated": {"2": 0.75}}
    )
    assert both.splitlines()[2] == "| 2 | 0.5000 | 0.7500 |"


def test_convergence_table_means_reached_rounds_and_marks_misses():
    rows = [
        {"strategy": "a", "tier": "t", "rounds_to_target": 10, "sim_seconds_to_target": 600},
        {"strategy": "a", "tier": "t", "rounds_to_target": 20, "sim_seconds_to_target": 1800},
        {"strategy": "b", "tier": "t", "rounds_to_target": 10, "sim_seconds_to_target": 60},
        {"strategy": "b", "tier": "t", "rounds_to_target": None, "sim_seconds_to_target": None},
    ]
    result = {"rows": rows, "strategies": {"a": "", "b": ""}, "config": {"target-accuracy": 0.9}}
    lines = convergence_table(result).splitlines()
    assert lines[0] == "| strategy | t: rounds to 90% |"
    assert lines[2] == "| a | 15 (20 min) |" and lines[3] == "| b | – |"
