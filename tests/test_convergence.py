"""Convergence summaries: pure functions checked by hand."""

from fedqdnn.convergence import (
    first_reaching,
    mean_by_key,
    simulated_round_seconds,
    window_mean,
)
from fedqdnn.round_plan import evaluation_rounds, final_window


def test_evaluation_cadence_and_final_window():
    assert evaluation_rounds(10, 3) == [3, 6, 9, 10]
    assert final_window(10, 3, 2) == [9, 10]
    assert final_window(10, 1, 1) == [10]
    assert final_window(4, 2, 9) == [2, 4]  # fewer evaluations than asked: all of them


def test_means_first_crossing_and_time():
    assert window_mean([0.5, None, 0.7]) == 0.6 and window_mean([None]) is None
    assert mean_by_key([{"a": 1.0}, {"a": 3.0, "b": 2.0}]) == {"a": 2.0, "b": 2.0}
    assert first_reaching([(1, 0.5), (2, None), (3, 0.9), (4, 0.95)], 0.9) == 3
    assert first_reaching([(1, 0.5)], 0.9) is None
    assert simulated_round_seconds([1.0, 4.0], stragglers=0, deadline=0) == 4.0
    assert simulated_round_seconds([1.0, 4.0], stragglers=0, deadline=3.0) == 3.0
    assert simulated_round_seconds([1.0], stragglers=1, deadline=3.0) == 3.0
    assert simulated_round_seconds([], stragglers=0, deadline=0) == 0.0
