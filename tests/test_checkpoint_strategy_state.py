"""Checkpoints keep the strategy's state: JSON beside the history, arrays in the model file."""

import json

import numpy as np

from fedqdnn.federated.checkpoint import RunHistory, load_checkpoint, save_checkpoint


def test_strategy_arrays_and_json_round_trip(tmp_path):
    model = {"w": np.arange(3, dtype=np.float32)}
    moments = {"m_t/w": np.full(3, 0.5, np.float32)}
    strategy = {"rounds": {}, "mode_data": {"2": 4.0}}
    save_checkpoint(tmp_path, 2, model, RunHistory(), strategy, moments, {"rounds": 3})
    loaded = load_checkpoint(tmp_path)
    assert loaded.round == 2 and loaded.strategy == strategy
    assert set(loaded.arrays) == {"w"} and np.array_equal(loaded.arrays["w"], model["w"])
    assert np.array_equal(loaded.strategy_arrays["m_t/w"], moments["m_t/w"])


def test_format_1_checkpoints_still_load(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": np.zeros(2, np.float32)}, RunHistory(), {}, {}, {})
    state = json.loads((tmp_path / "state.json").read_text())
    state["format"] = 1
    state["strategy_rounds"] = {"1": {"train": [], "rejected": [], "dropped": []}}
    del state["strategy"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    loaded = load_checkpoint(tmp_path)
    assert loaded.strategy == {"rounds": state["strategy_rounds"]} and loaded.strategy_arrays == {}
