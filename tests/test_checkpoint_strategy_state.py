"""Checkpoints keep the strategy's state: JSON beside the history, arrays in the model file."""

import json

import numpy as np
import pytest

from fedqdnn.federated.checkpoint import (
    CheckpointError,
    RunHistory,
    load_checkpoint,
    save_checkpoint,
)


def test_strategy_arrays_and_json_round_trip(tmp_path):
    model = {"w": np.arange(3, dtype=np.float32)}
    moments = {"m_t/w": np.full(3, 0.5, np.float32)}
    strategy = {"rounds": {}, "mode_data": {"2": 4.0}}
    save_checkpoint(tmp_path, 2, model, RunHistory(), strategy, moments, {"rounds": 3})
    loaded = load_checkpoint(tmp_path)
    assert loaded.round == 2 and loaded.strategy == strategy
    assert set(loaded.arrays) == {"w"} and np.array_equal(loaded.arrays["w"], model["w"])
    assert np.array_equal(loaded.strategy_arrays["m_t/w"], moments["m_t/w"])
    assert loaded.served_arrays == {}


def test_the_served_average_is_kept_apart_from_the_global_model(tmp_path):
    model = {"w": np.arange(3, dtype=np.float32)}
    served = {"w": np.full(3, 0.25, np.float32)}
    save_checkpoint(tmp_path, 4, model, RunHistory(), {}, {}, {"rounds": 5}, 1.0, served)
    loaded = load_checkpoint(tmp_path)
    assert set(loaded.arrays) == {"w"} and np.array_equal(loaded.arrays["w"], model["w"])
    assert set(loaded.served_arrays) == {"w"}
    assert np.array_equal(loaded.served_arrays["w"], served["w"])


def test_a_checkpoint_of_another_format_is_refused_in_one_line(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": np.zeros(2, np.float32)}, RunHistory(), {}, {}, {})
    state_path = tmp_path / "state.json"
    state = json.loads(state_path.read_text())
    assert state["format"] == 2
    for found in (1, 3, "2"):
        state_path.write_text(json.dumps({**state, "format": found}))
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(tmp_path)
        assert str(refused.value) == (
            f"checkpoint {state_path} has format {found!r}; this version reads format 2 only"
        )
    del state["strategy"]  # a format-2 state needs the strategy's state
    state_path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"state\.json: strategy is missing$"):
        load_checkpoint(tmp_path)


def test_the_runs_elapsed_wall_time_is_kept_and_an_older_checkpoint_reads_zero(tmp_path):
    """A resumed run adds its sessions' wall time: the checkpoint carries the time so far."""
    save_checkpoint(tmp_path, 3, {"w": np.zeros(2, np.float32)}, RunHistory(), {}, {}, {}, 812.5)
    assert load_checkpoint(tmp_path).elapsed_seconds == 812.5
    state_path = tmp_path / "state.json"
    state = json.loads(state_path.read_text())
    del state["elapsed_seconds"]  # written before the field existed
    state_path.write_text(json.dumps(state))
    assert load_checkpoint(tmp_path).elapsed_seconds == 0.0
    state_path.write_text(json.dumps({**state, "elapsed_seconds": -1}))
    with pytest.raises(CheckpointError, match="elapsed_seconds"):
        load_checkpoint(tmp_path)
