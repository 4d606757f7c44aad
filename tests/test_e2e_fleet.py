"""End to end: the fleet-100 preset as shipped (100 devices, 10 a round, Dirichlet 0.5,
MNIST-1D), two rounds on a pool of SuperNodes."""

import json

import pytest

from simulations.scenarios import load_scenario
from tests.e2e_helpers import BIN, run

pytestmark = pytest.mark.e2e


def test_fleet_100_two_rounds(tmp_path):
    out = tmp_path / "fleet"
    code, log = run(
        [str(BIN / "fedqdnn"), "simulate", "--scenario", "fleet-100", "--rounds", "2"]
        + ["--out", str(out)],
        timeout=900,
    )
    assert code == 0, log[-3000:]
    results = json.loads((out / "results.json").read_text())
    cfg = load_scenario("fleet-100")
    assert results["config"]["num-clients"] == 100 == cfg.num_clients
    first, last = results["history"]
    assert first["num_trained"] == last["num_trained"] == 10  # 10 % of the fleet a round
    assert len({c["partition-id"] for c in first["clients"] + last["clients"]}) > 10
    # evaluated only at the last round (evaluate-every 5): every device, every tier
    assert first["central_accuracy_by_bits"] == {} and first["federated_accuracy"] is None
    assert set(last["central_accuracy_by_bits"]) == {"2", "4", "32"}
    assert len(results["per_device"]) == 100
    assert {d["tier"] for d in results["per_device"]} == set(cfg.tiers)
    sizes = [d["num_examples"] for d in results["per_device"]]
    assert max(sizes) > 2 * min(sizes)  # Dirichlet(0.5): devices hold very different amounts
    assert results["final"]["window_rounds"] == [2]
    assert last["sim_elapsed_seconds"] > first["sim_elapsed_seconds"] > 0
