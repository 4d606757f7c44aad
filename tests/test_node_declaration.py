"""A SuperNode's declaration (fleet = "declared"): parsing its node config, checking the
fleet, planning modes from declared hardware; each bad value one line naming the key."""

import pytest

from fedqdnn.config import FederatedConfig
from fedqdnn.device import SimulatedDevice, modes_to_train
from fedqdnn.hardware import get_profile
from fedqdnn.node_declaration import (
    NodeSpec,
    check_fleet_declarations,
    declaration_of,
    declared_profile,
    parse_node_config,
    planned_modes,
)
from fedqdnn.policies import TrainModes
from fedqdnn.schema import Declaration

CFG = FederatedConfig(fleet="declared", num_clients=3, bits=(2, 4, 32))


def test_a_preset_and_a_local_folder(tmp_path):
    spec = parse_node_config({"hardware": "jetson", "data-root": str(tmp_path)}, CFG)
    assert spec == NodeSpec(tmp_path.name, get_profile("jetson"), str(tmp_path), None)
    lab = parse_node_config({"hardware": "mcu-int2", "partition-id": 2, "num-partitions": 3}, CFG)
    assert (lab.name, lab.partition_id, lab.data_root) == ("partition-2", 2, None)


def test_a_preset_changed_by_declared_figures(tmp_path):
    spec = parse_node_config(
        {
            "hardware": "jetson",
            "bit-modes": "4,8",
            "ms-per-sample-fp32": 3,
            "data-root": str(tmp_path),
            "device-name": "jetson-nano",
        },
        CFG,
    )
    jetson = get_profile("jetson")
    assert spec.name == "jetson-nano" and spec.profile.name == "jetson+custom"
    assert spec.profile.bit_modes == (4, 8)
    assert spec.profile.speedup_by_bits == {4: 3.0, 8: 2.5}  # the preset's, for the kept modes
    assert spec.profile.ms_per_sample_fp32 == 3.0
    assert spec.profile.memory_mb == jetson.memory_mb
    assert spec.profile.affordable_modes(CFG.bits) == (2, 4)  # no FP32 without a 32-bit path
    explicit = parse_node_config(
        {"hardware": "mcu-int2", "speedup-by-bits": "2:6", "data-root": str(tmp_path)}, CFG
    )
    assert explicit.profile.speedup_by_bits == {2: 6.0}


@pytest.mark.parametrize(
    ("node_config", "message"),
    [
        (
            {"hardware": "mcu-int3", "partition-id": 0},
            "node config: hardware = 'mcu-int3' is unknown; allowed: mcu-int2, mcu-int8, ",
        ),
        ({"partition-id": 0}, "node config: hardware is missing; allowed: a preset profile"),
        ({"hardwre": "jetson"}, "node config: hardwre is unknown; allowed: hardware, data-root"),
        (
            {"hardware": "jetson"},
            "node config: give exactly one of data-root (a local copy of digits) and "
            "partition-id (a shard of it, lab setups); got neither",
        ),
        (
            {"hardware": "jetson", "partition-id": 3},
            "node config: partition-id = 3 is out of range; allowed: 0..2 (num-clients = 3)",
        ),
        (
            {"hardware": "jetson", "partition-id": 1, "num-partitions": 4},
            "node config: num-partitions = 4 differs from the run's num-clients = 3; allowed: 3",
        ),
        (
            {"hardware": "jetson", "data-root": "/no/such/folder"},
            "node config: data-root = '/no/such/folder' does not exist on this node",
        ),
        (
            {"hardware": "jetson", "bit-modes": "4,x", "partition-id": 0},
            "node config: bit-modes = '4,x' is invalid; allowed: bit modes, e.g. '2,4'",
        ),
    ],
)
def test_bad_node_configs_fail_in_one_line_naming_the_key(node_config, message):
    with pytest.raises(ValueError) as err:
        parse_node_config(node_config, CFG)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def _declaration(name: str, hardware: str, partition: int | None = None, classes: int = 10):
    spec = NodeSpec(name, get_profile(hardware), None if partition is not None else "/d", partition)
    data = type("D", (), {"num_classes": classes, "input_shape": (1, 8, 8)})
    return declaration_of(spec, 30, 10, data)


def test_device_ids_follow_partitions_or_names():
    lab = {7: _declaration("a", "cpu-fp32", 1), 5: _declaration("b", "mcu-int2", 0)}
    assert check_fleet_declarations(CFG, lab, 10, (1, 8, 8)) == {1: 7, 0: 5}
    local = {7: _declaration("pi", "mcu-int2"), 5: _declaration("laptop", "cpu-fp32")}
    assert check_fleet_declarations(CFG, local, 10, (1, 8, 8)) == {0: 5, 1: 7}


@pytest.mark.parametrize(
    ("fleet", "message"),
    [
        (
            {5: _declaration("a", "jetson", 1), 7: _declaration("b", "jetson", 1)},
            "SuperNodes 5 and 7 both declare partition-id = 1; allowed: one device per "
            "partition-id",
        ),
        (
            {5: _declaration("pi", "jetson"), 7: _declaration("pi", "cpu-fp32")},
            "SuperNodes 5 and 7 both declare device-name = 'pi'; allowed: one device per "
            "device-name",
        ),
        (
            {5: _declaration("a", "jetson", 0), 7: _declaration("b", "jetson")},
            "SuperNode 7 (device b) declares data-root while SuperNode 5 declares partition-id;"
            " allowed: every node the same",
        ),
        (
            {5: _declaration("a", "jetson", classes=4)},
            "SuperNode 5 (device a): data-root /d holds 4 classes of shape (1, 8, 8); the run's "
            "data set digits has 10 of shape (1, 8, 8)",
        ),
    ],
)
def test_conflicting_declarations_fail_naming_the_nodes(fleet, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        check_fleet_declarations(CFG, fleet, 10, (1, 8, 8))


def test_a_declaration_round_trips_its_profile():
    declaration = _declaration("pi", "phone-npu-int4")
    wire = Declaration.model_validate_json(declaration.model_dump_json(by_alias=True))
    assert declared_profile(wire) == get_profile("phone-npu-int4")


def test_modes_are_planned_from_declared_hardware_only():
    profiles = {
        0: get_profile("mcu-int2"),
        1: get_profile("phone-npu-int4"),
        2: get_profile("jetson"),
    }
    assert planned_modes(CFG, profiles) == {0: (2,), 1: (2, 4), 2: (2, 4, 32)}
    top = CFG.replace(train_modes=TrainModes.TOP)
    assert planned_modes(top, profiles) == {0: (2,), 1: (4,), 2: (32,)}
    common = CFG.replace(train_modes=TrainModes.LOWEST_COMMON)
    assert planned_modes(common, profiles) == {0: (2,), 1: (2,), 2: (2,)}
    fp32 = CFG.replace(train_modes=TrainModes.FP32)
    with pytest.raises(ValueError, match=r"^device 0 declares mcu-int2 \(modes \(2,\)\) but"):
        planned_modes(fp32, profiles)


def test_a_device_refuses_a_plan_beyond_its_hardware():
    mcu = get_profile("mcu-int2")
    device = SimulatedDevice(0, mcu.name, mcu, (2,), *([None] * 4), model=None)
    assert modes_to_train(CFG, device, 1, planned=(2,)) == (2,)
    with pytest.raises(ValueError, match=r"asked device 0 \(mcu-int2\) to train modes \(2, 32\)"):
        modes_to_train(CFG, device, 1, planned=(2, 32))


def test_declared_fleet_refuses_keys_that_pick_devices_from_the_scenario():
    with pytest.raises(ValueError, match="participants = '0,1' is not allowed with fleet"):
        FederatedConfig(fleet="declared", num_clients=3, participants="0,1")
    with pytest.raises(ValueError, match="fleet = 'declared' needs aggregation = 'fedqdnn'"):
        FederatedConfig(fleet="declared", aggregation="fedavg")
    assert not FederatedConfig(fleet="declared", max_nodes=100).pooled
