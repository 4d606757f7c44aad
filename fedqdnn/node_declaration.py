"""What a real device declares about itself, and how the server checks a fleet of them.

Under Flower's Deployment Engine with ``fleet = "declared"`` every SuperNode is one device.
It declares in its node config (``flower-supernode --node-config "..."``):

- its hardware: ``hardware`` = a preset profile name (:data:`fedqdnn.hardware.PRESETS`),
  optionally changed by the profile's figures (``bit-modes``, ``ms-per-sample-fp32``,
  ``speedup-by-bits``, ``memory-mb``, ``uplink-mbps``, ``downlink-mbps``, ``availability``);
- its data: ``data-root`` = a local copy of the run's data set (loaded with the same code as
  ``--data-root``), or, for lab setups, ``partition-id`` = a shard of the run's data set
  (``num-partitions``, when given, must equal the run's ``num-clients``);
- optionally ``device-name`` (default: ``partition-K``, or the data folder's name).

The node parses its own config (:func:`parse_node_config`, one line naming the bad key) and
tells the server a :class:`~fedqdnn.schema.Declaration`; the server checks the fleet as a
whole (:func:`check_fleet_declarations`) and plans every device's modes from its declared
hardware (:func:`planned_modes`), so a device is never asked for a mode it cannot run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedqdnn.config import FederatedConfig
from fedqdnn.data import is_hf_name
from fedqdnn.data_source import DataSource
from fedqdnn.hardware import (
    PRESETS,
    HardwareProfile,
    fleet_lowest_top_mode_of,
    profile_from_dict,
)
from fedqdnn.schema import Declaration

HARDWARE = "hardware"
DATA_ROOT = "data-root"
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DEVICE_NAME = "device-name"
# profile figures a node may change, by node-config key (HardwareProfile field names)
PROFILE_KEYS = {
    "bit-modes": "bit_modes",
    "ms-per-sample-fp32": "ms_per_sample_fp32",
    "speedup-by-bits": "speedup_by_bits",
    "memory-mb": "memory_mb",
    "uplink-mbps": "uplink_mbps",
    "downlink-mbps": "downlink_mbps",
    "availability": "availability",
}
NODE_KEYS = (HARDWARE, DATA_ROOT, PARTITION_ID, NUM_PARTITIONS, DEVICE_NAME, *PROFILE_KEYS)


@dataclass(frozen=True)
class NodeSpec:
    """A node's parsed node config: its name, its hardware, where its data is."""

    name: str
    profile: HardwareProfile
    data_root: str | None  # a local copy of the run's data set, or
    partition_id: int | None  # a shard of the run's data set (lab setups)


def _int_list(text: object, key: str) -> tuple[int, ...]:
    """``2`` or ``"2,4"`` -> (2, 4)."""
    items = str(text).split(",") if isinstance(text, str) else [text]
    try:
        return tuple(int(str(i).strip()) for i in items if str(i).strip())
    except ValueError:
        raise ValueError(f"{key} = {text!r} is invalid; allowed: bit modes, e.g. '2,4'") from None


def _speedups(text: object, key: str) -> dict[int, float]:
    """``"2:8,4:6"`` -> {2: 8.0, 4: 6.0}."""
    out = {}
    for item in str(text).split(","):
        bits, sep, factor = item.partition(":")
        try:
            out[int(bits)] = float(factor)
        except ValueError:
            raise ValueError(
                f"{key} = {text!r} is invalid; allowed: MODE:FACTOR pairs, e.g. '2:8,4:6'"
            ) from None
    return out


def _profile(node_config: Mapping[str, object]) -> HardwareProfile:
    """The declared hardware: a preset, or a preset changed by the figures given."""
    if HARDWARE not in node_config:
        raise ValueError(
            f"{HARDWARE} is missing; allowed: a preset profile name ({', '.join(PRESETS)})"
        )
    name = node_config[HARDWARE]
    if name not in PRESETS:
        raise ValueError(f"{HARDWARE} = {name!r} is unknown; allowed: {', '.join(PRESETS)}")
    base = PRESETS[name]
    changes = {field: node_config[key] for key, field in PROFILE_KEYS.items() if key in node_config}
    if not changes:
        return base
    if "bit_modes" in changes:
        modes = _int_list(changes["bit_modes"], "bit-modes")
        changes["bit_modes"] = modes
        if "speedup_by_bits" not in changes:  # the base's figures for the modes it has
            keep = {b: s for b, s in base.speedup_by_bits.items() if b in modes}
            changes["speedup_by_bits"] = {**{b: 1.0 for b in modes}, **keep}
    if "speedup_by_bits" in changes and not isinstance(changes["speedup_by_bits"], Mapping):
        changes["speedup_by_bits"] = _speedups(changes["speedup_by_bits"], "speedup-by-bits")
    return profile_from_dict({"base": base.name, "name": f"{base.name}+custom", **changes})


def parse_node_config(node_config: Mapping[str, object], cfg: FederatedConfig) -> NodeSpec:
    """A node's declaration from its node config; ValueError in one line naming the key."""
    where = f"device {node_config[DEVICE_NAME]}: " if DEVICE_NAME in node_config else ""
    unknown = sorted(set(node_config) - set(NODE_KEYS))
    if unknown:
        raise ValueError(
            f"{where}node config: {unknown[0]} is unknown; allowed: {', '.join(NODE_KEYS)}"
        )
    try:
        return _parse(node_config, cfg)
    except ValueError as err:
        raise ValueError(f"{where}node config: {err}") from None


def _parse(node_config: Mapping[str, object], cfg: FederatedConfig) -> NodeSpec:
    profile = _profile(node_config)
    profile.affordable_modes(cfg.bits)  # runs at least one of the model's modes
    has_root, has_partition = DATA_ROOT in node_config, PARTITION_ID in node_config
    if has_root == has_partition:
        raise ValueError(
            f"give exactly one of {DATA_ROOT} (a local copy of {cfg.data.dataset}) and "
            f"{PARTITION_ID} (a shard of it, lab setups); got "
            f"{'both' if has_root else 'neither'}"
        )
    if has_root:
        root = str(node_config[DATA_ROOT])
        if not Path(root).exists():
            raise ValueError(f"{DATA_ROOT} = {root!r} does not exist on this node")
        name = str(node_config.get(DEVICE_NAME, Path(root).name))
        return NodeSpec(name, profile, root, None)
    partition = node_config[PARTITION_ID]
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise ValueError(f"{PARTITION_ID} = {partition!r} is invalid; allowed: an integer")
    if not 0 <= partition < cfg.num_clients:
        raise ValueError(
            f"{PARTITION_ID} = {partition} is out of range; allowed: 0..{cfg.num_clients - 1} "
            f"(num-clients = {cfg.num_clients})"
        )
    parts = node_config.get(NUM_PARTITIONS, cfg.num_clients)
    if parts != cfg.num_clients:
        raise ValueError(
            f"{NUM_PARTITIONS} = {parts!r} differs from the run's num-clients = "
            f"{cfg.num_clients}; allowed: {cfg.num_clients}"
        )
    name = str(node_config.get(DEVICE_NAME, f"partition-{partition}"))
    return NodeSpec(name, profile, None, partition)


def declaration_of(spec: NodeSpec, train_examples: int, test_examples: int, data) -> Declaration:
    """What the node tells the server (``data``: its :class:`DatasetSplits`)."""
    profile = spec.profile
    return Declaration(
        device_name=spec.name,
        hardware=profile.name,
        profile=dataclasses.asdict(profile),
        data=f"{DATA_ROOT} {spec.data_root}"
        if spec.data_root
        else f"{PARTITION_ID} {spec.partition_id}",
        partition_id=spec.partition_id,
        train_examples=train_examples,
        test_examples=test_examples,
        num_classes=data.num_classes,
        input_shape=list(data.input_shape),
    )


def declared_profile(declaration: Declaration) -> HardwareProfile:
    """The hardware profile a declaration carries (validated again on the server)."""
    fields = dict(declaration.profile)
    fields["speedup_by_bits"] = {int(k): v for k, v in fields["speedup_by_bits"].items()}
    return HardwareProfile(**fields)


def check_fleet_declarations(
    cfg: FederatedConfig,
    declarations: Mapping[int, Declaration],
    num_classes: int,
    input_shape: tuple[int, ...],
) -> dict[int, int]:
    """Device id -> node id for a fleet of declarations (by node id); ValueError in one line
    naming the node and the key for a conflict: a partition or name given twice, nodes that mix
    data-root and partition-id, data the run's model cannot take.

    Device ids: a lab node's partition id; otherwise the devices in order of their names.
    """
    for node, d in declarations.items():
        who = f"SuperNode {node} (device {d.device_name})"
        if d.num_classes != num_classes or tuple(d.input_shape) != tuple(input_shape):
            raise ValueError(
                f"{who}: {d.data} holds {d.num_classes} classes of shape {tuple(d.input_shape)}; "
                f"the run's data set {cfg.data.dataset} has {num_classes} of shape "
                f"{tuple(input_shape)}"
            )
    for key, value_of in (
        ("device-name", lambda d: d.device_name),
        ("partition-id", lambda d: d.partition_id),
    ):
        seen: dict[object, int] = {}
        for node, d in sorted(declarations.items()):
            value = value_of(d)
            if value is None:
                continue
            if value in seen:
                raise ValueError(
                    f"SuperNodes {seen[value]} and {node} both declare {key} = {value!r}; "
                    f"allowed: one device per {key}"
                )
            seen[value] = node
    lab = {node for node, d in declarations.items() if d.partition_id is not None}
    if lab and len(lab) != len(declarations):
        node = min(set(declarations) - lab)
        raise ValueError(
            f"SuperNode {node} (device {declarations[node].device_name}) declares {DATA_ROOT} "
            f"while SuperNode {min(lab)} declares {PARTITION_ID}; allowed: every node the same"
        )
    if lab:
        return {declarations[n].partition_id: n for n in sorted(declarations)}
    by_name = sorted(declarations, key=lambda n: declarations[n].device_name)
    return {device: node for device, node in enumerate(by_name)}


def planned_modes(
    cfg: FederatedConfig, profiles: Mapping[int, HardwareProfile]
) -> dict[int, tuple[int, ...]]:
    """The modes each declared device (by device id) may train under ``train-modes``: never
    one its hardware cannot run."""
    lowest_top = fleet_lowest_top_mode_of(list(profiles.values()), cfg.bits)
    plans = {}
    for device, profile in profiles.items():
        runnable = profile.affordable_modes(cfg.bits)
        plans[device] = cfg.train_modes.modes(runnable, lowest_top)
        beyond = [b for b in plans[device] if b not in runnable]
        if beyond:
            raise ValueError(
                f"device {device} declares {profile.name} (modes {runnable}) but train-modes = "
                f"{cfg.train_modes.value!r} would train {beyond}; allowed: a train-modes whose "
                "modes every declared device can run (affordable, top, lowest-common)"
            )
    return plans


def node_data_source(cfg: FederatedConfig, data_root: str) -> DataSource:
    """The run's data source, read from this node's own copy: Hugging Face files (a
    save_to_disk folder, parquet or an image folder; ``simulations/device_data.py`` writes
    them), also for a built-in data set (``digits`` is read as ``hf:digits``)."""
    name = cfg.data.dataset if is_hf_name(cfg.data.dataset) else f"hf:{cfg.data.dataset}"
    return dataclasses.replace(cfg.data, dataset=name, data_root=data_root, download=False)
