"""End to end: docs/deployment.md's walk-through on loopback, with real processes.

A SuperLink, three SuperNodes declaring three hardware profiles and three local data folders
(written by the documented data step), `flwr run` with ``fleet = "declared"``: each device
trains exactly the modes its declaration allows, on its own data, and results.json names the
declarations. Then a fourth node with a bad declaration: the next run fails before round 1,
its status naming the node and the key. Every process started is stopped (the harness checks).
"""

import json

import datasets
import pytest

from tests.deployment_harness import Federation, documented_lines

pytestmark = pytest.mark.e2e

# what the walk-through's three declarations allow of the model's modes (2, 4, 32)
EXPECTED = {
    "jetson": ("jetson+custom", [2, 4]),
    "laptop": ("cpu-fp32", [2, 4, 32]),
    "pi": ("mcu-int2+custom", [2]),
}


def test_declared_devices_train_what_they_declare_on_their_own_data(tmp_path):
    data_dir, out = tmp_path / "data", tmp_path / "out"
    node_configs = documented_lines("node-configs", DATA_DIR=str(data_dir))
    run_config = f"fleet='declared' num-clients=3 rounds=2 dataset='digits' out-dir='{out}'"
    with Federation(tmp_path) as fed:
        fed.run_documented("device-data", DATA_DIR=str(data_dir))
        fed.start_superlink()
        for node_config in node_configs:
            fed.start_supernode(node_config)
        run_id = fed.submit(run_config)
        status = fed.wait(run_id, timeout=400)
        assert status == "finished:completed", fed.logs(run_id)[-3000:]

        broken = f"hardware='mcu-int3' device-name='broken' data-root='{data_dir / 'device-0'}'"
        fed.start_supernode(broken)
        failed = fed.submit(
            f"fleet='declared' num-clients=4 rounds=2 dataset='digits' out-dir='{out}-broken'"
        )
        assert fed.wait(failed, timeout=200) == "finished:failed"
        details = fed.details(failed)
    assert "device broken: node config: hardware = 'mcu-int3' is unknown; allowed: mcu-int2" in (
        details
    ), details

    results = json.loads((out / "results.json").read_text())
    declared = {d["device-name"]: d for d in results["declared_devices"]}
    assert {name: (d["hardware"], d["planned-modes"]) for name, d in declared.items()} == EXPECTED
    for device in ("pi", "jetson", "laptop"):
        folder = next(data_dir / c.split("data-root=")[1].strip("'").rsplit("/", 1)[1]
                      for c in node_configs if f"device-name='{device}'" in c)  # fmt: skip
        local = datasets.load_from_disk(str(folder))
        d = declared[device]
        assert d["data"] == f"data-root {folder}"
        assert (d["train-examples"], d["test-examples"]) == (
            len(local["train"]),
            len(local["test"]),
        )
    by_id = {d["device-id"]: d for d in declared.values()}
    assert sorted(by_id) == [0, 1, 2]  # ids in order of names: jetson, laptop, pi
    assert [by_id[i]["device-name"] for i in range(3)] == ["jetson", "laptop", "pi"]
    for rnd in results["history"]:
        trained = {c["partition-id"]: c for c in rnd["clients"]}
        assert sorted(trained) == [0, 1, 2]
        for device_id, row in trained.items():
            assert row["trained-modes"] == by_id[device_id]["planned-modes"]
            assert row["num-examples"] == by_id[device_id]["train-examples"]
            assert row["tier"] == by_id[device_id]["hardware"]
    assert {r["client"]: r["bits"] for r in results["per_device"]} == {0: 4, 1: 32, 2: 2}
