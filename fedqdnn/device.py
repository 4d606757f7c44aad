"""A simulated device, without Flower: its hardware tier, its data, its model, its round.

The Flower ClientApp (:mod:`fedqdnn.federated.client_app`), the offline deployment evaluation
(:mod:`fedqdnn.deployment`) and the benchmarks' bare-PyTorch baseline all use the device
through this module, so a device behaves the same wherever it is simulated. The run's data,
partitions and tiers come from :mod:`fedqdnn.fleet`; devices and the model object are built
once per process and reused (a Ray worker serves many devices).
A device's model and data live on the torch device the entry point selected
(:func:`fedqdnn.accelerator.select_device`); its upload crosses to numpy only in
:func:`trained_state`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from fedqdnn.accelerator import CPU
from fedqdnn.bitmodes import mode_of_state_key
from fedqdnn.calibration import recalibrate_bn
from fedqdnn.compression import quantize_arrays
from fedqdnn.config import FederatedConfig
from fedqdnn.costs import array_bytes
from fedqdnn.data_source import load_source
from fedqdnn.data_splits import DatasetSplits
from fedqdnn.fleet import device_tier, fleet_partitions, model_name, run_data
from fedqdnn.hardware import HardwareProfile, fleet_lowest_top_mode, get_profile
from fedqdnn.layers import BNLayout, HeadLayout
from fedqdnn.models import QuantizableModel, build_model, default_model_for
from fedqdnn.node_declaration import NodeSpec, declaration_of, node_data_source
from fedqdnn.partition import split_local
from fedqdnn.policies import BNStats
from fedqdnn.rng import client_seed, local_split_seed
from fedqdnn.round_plan import (
    SLOW_FACTOR,
    candidate_mode_sets,
    choose_modes,
    estimated_seconds,
    injected_fault,
    is_online,
    slowdown,
)
from fedqdnn.schema import Declaration, RoundStatus, TrainReport
from fedqdnn.training import evaluate, fit, mean_loss

State = dict[str, np.ndarray]


@dataclass(frozen=True)
class SimulatedDevice:
    """What one simulated device holds: its hardware, its data, a reusable model."""

    partition_id: int
    tier: str
    profile: HardwareProfile
    modes: tuple[int, ...]  # bit modes of the model this device can run, ascending
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    model: QuantizableModel  # shared by every device of this process: load a state first
    # (model and data live on the same torch device)

    @property
    def top_mode(self) -> int:
        """The device's best-accuracy mode."""
        return self.modes[-1]


# ---------------------------------------------------------------- the device


@functools.lru_cache(maxsize=2)
def _cached_model(
    name: str,
    modes: tuple[int, ...],
    num_classes: int,
    in_channels: int,
    bn: BNLayout,
    clip: bool,
    head: HeadLayout,
    where: torch.device,
) -> QuantizableModel:
    model = build_model(
        name, modes, num_classes, in_channels, bn=bn, learnable_clip=clip, head=head
    )
    return model.to(where)


def _shared_model(cfg: FederatedConfig, where: torch.device) -> QuantizableModel:
    """One model object per architecture, torch device and process, reused by every device
    it simulates."""
    data = run_data(cfg)
    return _cached_model(
        model_name(cfg), cfg.bits, data.num_classes, data.in_channels, cfg.bn,
        cfg.learnable_clip, cfg.head, where,
    )  # fmt: skip


@functools.lru_cache(maxsize=64)
def device_for(
    cfg: FederatedConfig, partition_id: int, where: torch.device = CPU
) -> SimulatedDevice:
    """Build (once per process) device ``partition_id`` of the run ``cfg``, its model and
    data on torch device ``where``."""
    return _shard_device(cfg, partition_id, get_profile(device_tier(cfg, partition_id)), where)


def _shard_device(
    cfg: FederatedConfig, partition_id: int, profile: HardwareProfile, where: torch.device
) -> SimulatedDevice:
    """Device ``partition_id``: shard ``partition_id`` of the run's data, on ``profile``."""
    data = run_data(cfg)
    train_idx, test_idx = shard_split(cfg, partition_id)
    return SimulatedDevice(
        partition_id,
        profile.name,
        profile,
        profile.affordable_modes(cfg.bits),
        data.train_inputs(train_idx).to(where),
        data.y_train[train_idx].to(where),
        data.train_inputs(test_idx).to(where),
        data.y_train[test_idx].to(where),
        _shared_model(cfg, where),
    )


def shard_split(cfg: FederatedConfig, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(local train, local test) rows of the run's data for shard ``partition_id``."""
    shard = fleet_partitions(cfg)[partition_id]
    return split_local(shard, cfg.local_test_fraction, local_split_seed(cfg.seed, partition_id))


@functools.lru_cache(maxsize=4)
def declared_device(
    cfg: FederatedConfig, spec: NodeSpec, device_id: int, where: torch.device = CPU
) -> SimulatedDevice:
    """The device a SuperNode declared (``fleet = "declared"``): its own hardware, and its
    own data (a local copy: its train split trains, its test split evaluates) or its shard
    of the run's data set (lab setups). ``device_id`` is the id the server gave it."""
    if spec.data_root is None:
        return _shard_device(cfg, spec.partition_id, spec.profile, where)
    data = node_data(cfg, spec)
    model = _cached_model(
        cfg.model or default_model_for(data.input_shape), cfg.bits, data.num_classes,
        data.in_channels, cfg.bn, cfg.learnable_clip, cfg.head, where,
    )  # fmt: skip
    return SimulatedDevice(
        device_id,
        spec.profile.name,
        spec.profile,
        spec.profile.affordable_modes(cfg.bits),
        data.train_inputs().to(where),
        data.y_train.to(where),
        data.x_test.to(where),
        data.y_test.to(where),
        model,
    )


def node_data(cfg: FederatedConfig, spec: NodeSpec) -> DatasetSplits:
    """The data a declared node holds: its local copy, or the run's data set (lab setups)."""
    if spec.data_root is None:
        return run_data(cfg)
    return load_source(node_data_source(cfg, spec.data_root))


def declare(cfg: FederatedConfig, spec: NodeSpec) -> Declaration:
    """What this node tells the server: its name, hardware and data (counted as it trains)."""
    data = node_data(cfg, spec)
    if spec.data_root is None:
        counts = tuple(len(rows) for rows in shard_split(cfg, spec.partition_id))
    else:
        counts = len(data.y_train), len(data.y_test)
    return declaration_of(spec, *counts, data)


# ---------------------------------------------------------------- one round


def modes_to_train(
    cfg: FederatedConfig,
    device: SimulatedDevice,
    server_round: int | None = None,
    planned: tuple[int, ...] | None = None,
) -> tuple[int, ...]:
    """The modes this device trains under the run's train-mode policy (a declared device:
    those the server ``planned``, which must be modes it runs); in ``server_round``,
    without the modes whose ``mode-start`` round has not come yet (a schedule)."""
    if planned is None:
        lowest_top = fleet_lowest_top_mode(list(cfg.tiers), cfg.bits)
        modes = cfg.train_modes.modes(device.modes, lowest_top)
    else:
        modes = _checked_plan(device, planned)
    if server_round is None or not cfg.mode_start:
        return modes
    start = dict(cfg.mode_start)
    scheduled = tuple(b for b in modes if start.get(b, 1) <= server_round)
    return scheduled or (min(cfg.bits),)  # the lowest mode always trains (validated)


def _checked_plan(device: SimulatedDevice, planned: tuple[int, ...]) -> tuple[int, ...]:
    """The server's plan, refused when it asks for a mode the device's hardware cannot run."""
    beyond = [b for b in planned if b not in device.modes]
    if beyond or not planned:
        raise ValueError(
            f"the server asked device {device.partition_id} ({device.tier}) to train modes "
            f"{tuple(planned)}; it runs only {device.modes}"
        )
    return tuple(sorted(planned))


@dataclass(frozen=True)
class RoundPlan:
    """What a device does this round, decided before any training."""

    status: RoundStatus
    modes: tuple[int, ...]  # to train ("trained"), or the cheapest that did not fit
    fault: str | None  # injected fault (robustness tests), None normally
    slow: float  # compute slowdown factor this round
    bytes_down: int


def plan_round(
    cfg: FederatedConfig,
    device: SimulatedDevice,
    server_round: int,
    bytes_down: int,
    planned: tuple[int, ...] | None = None,
) -> RoundPlan:
    """Online? Which modes fit the deadline? Any injected fault? Seeded by (seed, round, pid).
    ``planned``: the server's plan for a declared device (:func:`modes_to_train`)."""
    pid = device.partition_id
    if cfg.availability and not is_online(device.profile.availability, cfg.seed, server_round, pid):
        return RoundPlan("offline", (), None, 1.0, bytes_down)
    fault = injected_fault(cfg.fault_probabilities, cfg.seed, server_round, pid)
    slow = slowdown(cfg.slowdown, device.tier, server_round)
    slow *= SLOW_FACTOR if fault == "slow" else 1.0
    upload_estimate = bytes_down * cfg.upload_bits // 32
    policy_modes = modes_to_train(cfg, device, server_round, planned)
    candidates = (
        candidate_mode_sets(policy_modes) if cfg.train_modes.adapts_to_deadline else [policy_modes]
    )

    def time_of(modes: tuple[int, ...]) -> float:
        return device_seconds(cfg, device, modes, bytes_down, upload_estimate, slow)

    modes = choose_modes(candidates, time_of, cfg.deadline_seconds)
    if modes is None:  # nothing fits the deadline: a straggler, dropped this round
        return RoundPlan("straggler", candidates[-1], fault, slow, bytes_down)
    return RoundPlan("trained", modes, fault, slow, bytes_down)


def device_seconds(
    cfg: FederatedConfig,
    device: SimulatedDevice,
    modes: tuple[int, ...],
    bytes_down: int,
    bytes_up: int,
    slow: float,
) -> float:
    """Simulated seconds of the device's round: compute for ``modes`` plus transfer."""
    return estimated_seconds(
        device.profile, modes, len(device.y_train), cfg.local_epochs, bytes_down, bytes_up, slow
    )


def load_state(model: QuantizableModel, state: dict[str, torch.Tensor]) -> None:
    """Load a full global state (every key of the model, strictly)."""
    model.load_state_dict(state, strict=True)


def local_train(
    cfg: FederatedConfig, device: SimulatedDevice, modes: tuple[int, ...], server_round: int
) -> float:
    """Local epochs of joint steps over ``modes`` on the loaded model; returns the mean loss.

    Afterwards the trained modes' BN statistics are re-estimated on the local data at the
    final local weights (``bn-stats = recalibrate``): after a few momentum-0.1 steps the
    running statistics are still mostly those received, i.e. stale for the new weights.
    """
    seed = client_seed(cfg.seed, server_round, device.partition_id)
    history = fit(
        device.model, device.x_train, device.y_train, modes, cfg.loss, cfg.optim,
        cfg.local_epochs, seed,
    )  # fmt: skip
    if cfg.bn_stats == BNStats.RECALIBRATE:
        recalibrate_bn(device.model, device.x_train, modes)
    return mean_loss(history)


def trained_state(model: QuantizableModel, modes: tuple[int, ...]) -> State:
    """Shared entries plus the per-mode entries of ``modes``: what a client uploads."""
    out = {}
    for key, value in model.state_dict().items():
        mode = mode_of_state_key(key)
        if mode is None or mode in modes:
            out[key] = value.detach().cpu().numpy()
    return out


def inject_fault(fault: str | None, state: State) -> State:
    """Corrupt an update as a faulty device would (fault injection for robustness tests)."""
    if fault == "crash":
        raise RuntimeError("injected fault: client crashed")
    if fault == "nan":
        key = next(iter(state))
        state[key] = np.full_like(state[key], np.nan)
    elif fault == "shape":
        key = next(k for k, v in state.items() if v.ndim > 0)
        state[key] = np.zeros(state[key].size + 1, dtype=state[key].dtype)
    return state


@dataclass(frozen=True)
class DeviceUpdate:
    """A trained device's upload and its report."""

    state: State
    report: TrainReport


def train_round(
    cfg: FederatedConfig, device: SimulatedDevice, plan: RoundPlan, server_round: int
) -> DeviceUpdate:
    """Train the planned modes on the loaded global model; the upload and its report."""
    loss = local_train(cfg, device, plan.modes, server_round)
    state = inject_fault(plan.fault, trained_state(device.model, plan.modes))
    if cfg.upload_bits == 8:
        state = quantize_arrays(state)
    bytes_up = array_bytes(state)
    report = TrainReport(
        num_examples=len(device.y_train),
        bytes_down=plan.bytes_down,
        loss=loss,
        trained_modes=list(plan.modes),
        sim_seconds=device_seconds(cfg, device, plan.modes, plan.bytes_down, bytes_up, plan.slow),
        bytes_up=bytes_up,
    )
    return DeviceUpdate(state, report)


def skipped_round_report(
    cfg: FederatedConfig, device: SimulatedDevice, plan: RoundPlan
) -> TrainReport:
    """The report of a device that did not train (offline: nothing downloaded; a straggler:
    the simulated time its cheapest plan would have taken)."""
    if plan.status == "offline":
        return TrainReport(num_examples=len(device.y_train), bytes_down=0)
    seconds = device_seconds(
        cfg, device, plan.modes, plan.bytes_down, plan.bytes_down * cfg.upload_bits // 32, plan.slow
    )
    return TrainReport(
        num_examples=len(device.y_train), bytes_down=plan.bytes_down, sim_seconds=seconds
    )


def evaluation_mode(
    cfg: FederatedConfig, device: SimulatedDevice, planned: tuple[int, ...] | None = None
) -> int:
    """The mode a device evaluates the global model at: the top of the modes it trains (under
    ``train-modes = lowest-common`` the fleet's lowest top mode, not its own top mode)."""
    return modes_to_train(cfg, device, None, planned)[-1]


def evaluate_locally(device: SimulatedDevice, bits: int) -> tuple[float, float]:
    """(accuracy, loss) of the loaded model at ``bits`` on the device's local test split."""
    return evaluate(device.model, device.x_test, device.y_test, bits)
