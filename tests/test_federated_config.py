"""Federated config: one validator for every path; scenario presets; client-side pure parts."""

import tomllib

import numpy as np
import pytest
import torch

from fedqdnn.federated.client_app import client_seed, device_tier, trained_state
from fedqdnn.federated.config import FederatedConfig, from_flat, parse_tiers
from fedqdnn.models import build_model
from simulations.scenarios import load_scenario, preset_names
from tests.e2e_helpers import REPO


def test_pyproject_flower_config_equals_default_scenario():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    config.pop("out-dir")
    assert from_flat(config) == load_scenario("three-tier")


def test_flat_round_trip():
    cfg = load_scenario("three-tier").replace(rounds=3, bits=(2, 8, 32))
    assert from_flat(cfg.to_flat()) == cfg
    assert hash(from_flat(cfg.to_flat())) == hash(cfg)


@pytest.mark.parametrize(
    "flat, needle",
    [
        ({"roundz": 3}, "unknown config key 'roundz'"),
        ({"bits": "2,33"}, "bit mode 33"),
        ({"bits": "0"}, "bit mode 0"),
        ({"tiers": "cpu-fp32:0.5,mcu-int2:0.2"}, "sum to 0.7"),
        ({"tiers": "toaster:1.0"}, "'toaster'"),
        ({"tiers": "cpu-fp32"}, "NAME:PROPORTION"),
        ({"alpha": 0}, "alpha = 0.0"),
        ({"fraction-train": 1.5}, "fraction_train = 1.5"),
        ({"num-clients": 0}, "num_clients = 0"),
        ({"dataset": "imagenet"}, "'imagenet'"),
        ({"model": "vgg"}, "'vgg'"),
        ({"rounds": "many"}, "'rounds' = 'many'"),
        ({"partition": "shards"}, "'shards'"),
    ],
)
def test_bad_values_give_one_line_naming_them(flat, needle):
    with pytest.raises(ValueError) as err:
        from_flat(flat)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_tiers_parse():
    assert parse_tiers("a:0.5, b:0.5") == {"a": 0.5, "b": 0.5}


def test_every_preset_validates():
    names = preset_names()
    assert "three-tier" in names
    for name in names:
        assert isinstance(load_scenario(name), FederatedConfig)


def test_device_tier_is_deterministic_and_follows_proportions():
    cfg = FederatedConfig(num_clients=9)
    tiers = [device_tier(cfg, pid) for pid in range(9)]
    assert tiers == [device_tier(cfg, pid) for pid in range(9)]
    assert sorted(tiers.count(t) for t in set(tiers)) == [3, 3, 3]


def test_trained_state_holds_shared_and_trained_modes_only():
    model = build_model("digits_cnn", (2, 4, 32), 10, 1)
    state = trained_state(model, (2,))
    assert "stem.weight" in state and all(isinstance(v, np.ndarray) for v in state.values())
    assert not any(".bits4." in k or ".bits32." in k for k in state)
    assert any(".bits2." in k for k in state)
    full = {k for k in model.state_dict() if ".bits" not in k}
    assert full <= set(state)
    assert torch.equal(torch.from_numpy(state["stem.weight"]), model.stem.weight.detach())


def test_client_seed_depends_on_round_and_client_only():
    assert client_seed(0, 1, 2) == client_seed(0, 1, 2)
    assert len({client_seed(0, r, p) for r in range(5) for p in range(5)}) == 25


def test_sweep_points_and_summary():
    from simulations.sweeps import TIER_MIXES, summary

    base = load_scenario("three-tier")
    for mix in TIER_MIXES.values():
        assert base.replace(tiers=mix).tiers == mix
    rows = [
        {"strategy": "fedqdnn", "tier": "a", "accuracy": 0.5},
        {"strategy": "fedqdnn", "tier": "a", "accuracy": 0.7},
        {"strategy": "other", "tier": "a", "accuracy": 0.1},
    ]
    table = summary({"p": {"rows": rows}})
    assert "| p | 60.0 |" in table
