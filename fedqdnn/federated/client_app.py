"""Flower ClientApp: a device on simulated hardware training the bit modes it can afford.

A client learns its own hardware from ``partition-id`` (as a real device knows its
hardware), trains its affordable modes of the one shared Quantizable DNN under the
consistency loss (teacher = its top affordable mode), and replies with the shared
weights plus the per-mode entries of the modes it trained only.
Data, partitions and the model object are built once per worker process and reused.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedqdnn.bitmodes import mode_of_state_key
from fedqdnn.calibration import recalibrate_bn
from fedqdnn.data import DatasetSplits, load_dataset
from fedqdnn.federated.compression import quantize_arrays
from fedqdnn.federated.config import FederatedConfig, from_flat
from fedqdnn.federated.costs import array_bytes
from fedqdnn.federated.round_plan import (
    SLOW_FACTOR,
    candidate_mode_sets,
    choose_modes,
    estimated_seconds,
    injected_fault,
    is_online,
    slowdown,
)
from fedqdnn.hardware import HardwareProfile, assign_profiles, get_profile
from fedqdnn.losses import ConsistencyConfig
from fedqdnn.models import QuantizableModel, build_model
from fedqdnn.partition import partition_indices, split_local
from fedqdnn.training import evaluate, iterate_batches, joint_step

app = ClientApp()


@dataclass
class ClientEnvironment:
    """What one simulated device holds: its hardware, its data, a reusable model."""

    partition_id: int
    tier: str
    profile: HardwareProfile
    modes: tuple[int, ...]  # bit modes of the model this device can run, ascending
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    model: QuantizableModel


@functools.lru_cache(maxsize=4)
def _dataset(cfg_key: tuple) -> DatasetSplits:
    name, data_root, num_samples, data_seed = cfg_key
    return load_dataset(
        name, data_root=data_root or None, num_samples=num_samples or None, data_seed=data_seed
    )


def _data_key(cfg: FederatedConfig) -> tuple:
    return (cfg.dataset, cfg.data_root, cfg.num_samples, cfg.data_seed)


@functools.lru_cache(maxsize=4)
def _partitions(data_key: tuple, num_clients: int, scheme: str, alpha: float, seed: int):
    labels = _dataset(data_key).y_train.numpy()
    return partition_indices(labels, num_clients, scheme, alpha, seed)


@functools.lru_cache(maxsize=2)
def _model(name: str, modes: tuple, num_classes: int, in_channels: int, bn: bool, clip: bool):
    return build_model(
        name, modes, num_classes, in_channels, bit_specific_bn=bn, learnable_clip=clip
    )


def device_tier(cfg: FederatedConfig, partition_id: int) -> str:
    """Hardware tier of a partition: deterministic from the scenario and seed."""
    return assign_profiles(cfg.num_clients, cfg.tiers, cfg.seed)[partition_id]


@functools.lru_cache(maxsize=64)
def client_environment(cfg: FederatedConfig, partition_id: int) -> ClientEnvironment:
    """Build (once per process) the environment of device ``partition_id``."""
    data = _dataset(_data_key(cfg))
    parts = _partitions(_data_key(cfg), cfg.num_clients, cfg.partition, cfg.alpha, cfg.seed)
    train_idx, test_idx = split_local(
        parts[partition_id], cfg.local_test_fraction, cfg.seed + partition_id
    )
    tier = device_tier(cfg, partition_id)
    profile = get_profile(tier)
    model = _model(
        cfg.model_name,
        cfg.bits,
        data.num_classes,
        data.in_channels,
        cfg.bit_specific_bn,
        cfg.learnable_clip,
    )
    return ClientEnvironment(
        partition_id,
        tier,
        profile,
        profile.affordable_modes(cfg.bits),
        data.x_train[train_idx],
        data.y_train[train_idx],
        data.x_train[test_idx],
        data.y_train[test_idx],
        model,
    )


def partition_of(cfg: FederatedConfig, context: Context) -> int:
    """The fleet partition this node simulates (nodes map onto ``participants`` in order)."""
    node_index = int(context.node_config["partition-id"])
    return cfg.participant_ids[node_index]


def modes_to_train(cfg: FederatedConfig, env: ClientEnvironment) -> tuple[int, ...]:
    """The modes this device trains this round under ``cfg.train_modes``."""
    if cfg.train_modes == "affordable":
        return env.modes
    if cfg.train_modes == "top":
        return (env.modes[-1],)
    if cfg.train_modes == "lowest-common":
        return (fleet_lowest_top_mode(cfg),)
    return (32,)


def fleet_lowest_top_mode(cfg: FederatedConfig) -> int:
    """The highest mode every tier of the fleet can run (what a lowest-common fleet deploys)."""
    return min(get_profile(tier).top_mode(cfg.bits) for tier in cfg.tiers)


@functools.cache
def use_cpu_share() -> int:
    """Torch threads = this worker's CPU share (Ray sets OMP_NUM_THREADS to the actor's
    num_cpus); more threads than the share would only contend with other clients."""
    threads = max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1"))))
    torch.set_num_threads(threads)
    return threads


def _config(msg: Message) -> tuple[FederatedConfig, int]:
    flat = dict(msg.content["config"])
    server_round = int(flat.pop("server-round", 0))
    return from_flat(flat), server_round


def _load(model: QuantizableModel, arrays: ArrayRecord) -> None:
    model.load_state_dict(arrays.to_torch_state_dict(), strict=True)


def trained_state(model: QuantizableModel, modes: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Shared entries plus the per-mode entries of ``modes``: what a client uploads."""
    out = {}
    for key, value in model.state_dict().items():
        mode = mode_of_state_key(key)
        if mode is None or mode in modes:
            out[key] = value.detach().cpu().numpy()
    return out


def local_train(
    env: ClientEnvironment, cfg: FederatedConfig, modes: tuple[int, ...], seed: int
) -> float:
    """Local epochs of joint steps over ``modes``; returns the mean loss.

    Afterwards the trained modes' BN statistics are re-estimated on the local data at the
    final local weights (``bn_stats="recalibrate"``): after a few momentum-0.1 steps the
    running statistics are still mostly those received, i.e. stale for the new weights.
    """
    model = env.model
    model.train()
    params = model.parameters()
    optimizer = (
        torch.optim.Adam(params, lr=cfg.lr)
        if cfg.optimizer == "adam"
        else torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    )
    loss_config = ConsistencyConfig(cfg.ce_weight, cfg.kd_weight, cfg.temperature, "top")
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for _ in range(cfg.local_epochs):
        for xb, yb in iterate_batches(env.x_train, env.y_train, cfg.batch_size, generator):
            loss, _ = joint_step(model, xb, yb, modes, loss_config, optimizer)
            total += loss * len(yb)
            count += len(yb)
    if cfg.bn_stats == "recalibrate":
        recalibrate_bn(model, env.x_train, modes)
    return total / max(1, count)


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """Per-client, per-round seed: independent of scheduling order."""
    return (seed * 1_000_003 + server_round * 10_007 + partition_id) % (2**63)


def _reply(
    msg: Message,
    env: ClientEnvironment,
    status: str,
    metrics: dict,
    arrays: dict[str, np.ndarray] | None = None,
) -> Message:
    content = {
        "metrics": MetricRecord(metrics),
        "info": ConfigRecord(
            {"tier": env.tier, "partition-id": env.partition_id, "status": status}
        ),
    }
    if arrays is not None:
        content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return Message(content=RecordDict(content), reply_to=msg)


def _inject(fault: str | None, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the modes this device can afford this round; reply with shared + trained-mode
    entries, or with a status (offline, straggler) and no arrays."""
    cfg, rnd = _config(msg)
    use_cpu_share()
    pid = partition_of(cfg, context)
    env = client_environment(cfg, pid)
    arrays = msg.content["arrays"]
    bytes_down = sum(np.dtype(a.dtype).itemsize * math.prod(a.shape) for a in arrays.values())
    base = {"num-examples": len(env.y_train), "bytes-down": bytes_down}
    if cfg.availability and not is_online(env.profile.availability, cfg.seed, rnd, pid):
        return _reply(msg, env, "offline", {**base, "bytes-down": 0})
    fault = injected_fault(cfg.fault_probabilities, cfg.seed, rnd, pid)
    slow = slowdown(cfg.slowdown, env.tier, rnd) * (SLOW_FACTOR if fault == "slow" else 1.0)
    upload_estimate = bytes_down * cfg.upload_bits // 32

    def time_of(modes: tuple[int, ...]) -> float:
        return estimated_seconds(
            env.profile,
            modes,
            len(env.y_train),
            cfg.local_epochs,
            bytes_down,
            upload_estimate,
            slow,
        )

    policy_modes = modes_to_train(cfg, env)
    candidates = (
        candidate_mode_sets(policy_modes) if cfg.train_modes == "affordable" else [policy_modes]
    )
    modes = choose_modes(candidates, time_of, cfg.deadline_seconds)
    if modes is None:  # nothing fits the deadline: a straggler, dropped this round
        return _reply(msg, env, "straggler", {**base, "sim-seconds": time_of(candidates[-1])})
    _load(env.model, arrays)
    loss = local_train(env, cfg, modes, client_seed(cfg.seed, rnd, pid))
    state = _inject(fault, trained_state(env.model, modes))
    if cfg.upload_bits == 8:
        state = quantize_arrays(state)
    bytes_up = array_bytes(state)
    metrics = {
        **base,
        "loss": loss if math.isfinite(loss) else -1.0,
        "trained-modes": list(modes),
        "sim-seconds": estimated_seconds(
            env.profile, modes, len(env.y_train), cfg.local_epochs, bytes_down, bytes_up, slow
        ),
        "bytes-up": bytes_up,
    }
    return _reply(msg, env, "trained", metrics, state)


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node simulates (node IDs are random per run)."""
    reply = RecordDict(
        {"info": ConfigRecord({"partition-id": int(context.node_config["partition-id"])})}
    )
    return Message(content=reply, reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Per-device accuracy: the global model at this device's top mode, on its local test split."""
    cfg, _ = _config(msg)
    use_cpu_share()
    pid = partition_of(cfg, context)
    env = client_environment(cfg, pid)
    _load(env.model, msg.content["arrays"])
    bits = modes_to_train(cfg, env)[-1]
    accuracy, loss = evaluate(env.model, env.x_test, env.y_test, bits)
    metrics = MetricRecord(
        {
            "num-examples": len(env.y_test),
            "accuracy": accuracy,
            "loss": loss,
            "bits": bits,
        }
    )
    info = ConfigRecord({"tier": env.tier, "partition-id": pid})
    return Message(content=RecordDict({"metrics": metrics, "info": info}), reply_to=msg)
