"""Per-device deployment and evaluation of a trained global model, offline (no Flower).

How a strategy's model reaches a device decides what the device runs:

* ``top``: the device runs the model at its top affordable mode, with that mode's BN;
* ``lowest-common``: every device runs the fleet's lowest top mode;
* ``ptq``: post-training quantization of an FP32-trained model: the 32-bit BN is copied into
  the device's mode and its statistics are recalibrated on the device's own training data;
* ``fp32``: every device runs the FP32 mode (the reference "FP32 FedAvg on all clients",
  as if every device could run FP32);
* ``recalibrate``: shared-BN models: BN statistics re-estimated per mode over the training
  data of every device that runs that mode; equal to pooling per-device statistics with the
  law of total variance, i.e. a federated per-mode recalibration.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedqdnn.calibration import active_bns, recalibrate_bn
from fedqdnn.federated.client_app import client_environment, fleet_lowest_top_mode
from fedqdnn.federated.config import FederatedConfig
from fedqdnn.models import QuantizableModel
from fedqdnn.quant import FULL_PRECISION
from fedqdnn.training import evaluate

DEPLOY_POLICIES = ("top", "lowest-common", "ptq", "recalibrate", "fp32")


@dataclass(frozen=True)
class DeviceResult:
    """One device's accuracy on its local test split."""

    client: int
    tier: str
    bits: int
    accuracy: float
    num_examples: int


def _model_with(cfg: FederatedConfig, state: Mapping[str, np.ndarray]) -> QuantizableModel:
    model = copy.deepcopy(client_environment(cfg, 0).model)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model.eval()


def deployed_bits(cfg: FederatedConfig, policy: str, top_mode: int) -> int:
    """The mode a device runs under ``policy``."""
    if policy == "fp32":
        return FULL_PRECISION
    return fleet_lowest_top_mode(cfg) if policy == "lowest-common" else top_mode


def _ptq(model: QuantizableModel, bits: int, x_calibration: torch.Tensor) -> QuantizableModel:
    """Copy the FP32 BN into mode ``bits`` and recalibrate its statistics on local data."""
    model = copy.deepcopy(model)
    if bits != FULL_PRECISION:
        for src, dst in zip(
            active_bns(model, FULL_PRECISION), active_bns(model, bits), strict=True
        ):
            dst.load_state_dict(src.state_dict())
        recalibrate_bn(model, x_calibration, bits)
    return model


def evaluate_devices(
    cfg: FederatedConfig,
    state_for_device: Mapping[int, Mapping[str, np.ndarray]],
    policy: str,
    devices: Sequence[int] | None = None,
) -> list[DeviceResult]:
    """Accuracy of every device (partition) under ``policy``.

    ``state_for_device`` maps partition id to the global model state that device receives
    (one state for all devices except in per-tier training).
    """
    if policy not in DEPLOY_POLICIES:
        raise ValueError(f"deploy policy {policy!r}; allowed: {', '.join(DEPLOY_POLICIES)}")
    devices = list(devices if devices is not None else range(cfg.num_clients))
    models: dict[int, QuantizableModel] = {}
    recalibrated: dict[tuple[int, int], QuantizableModel] = {}
    out = []
    for pid in devices:
        env = client_environment(cfg, pid)
        key = id(state_for_device[pid])
        if key not in models:
            models[key] = _model_with(cfg, state_for_device[pid])
        model = models[key]
        bits = deployed_bits(cfg, policy, env.modes[-1])
        if policy == "ptq":
            model = _ptq(model, bits, env.x_train)
        elif policy == "recalibrate":
            if (key, bits) not in recalibrated:
                users = [
                    p
                    for p in devices
                    if state_for_device[p] is state_for_device[pid]
                    and client_environment(cfg, p).modes[-1] == bits
                ]
                x = torch.cat([client_environment(cfg, p).x_train for p in users])
                recalibrated[(key, bits)] = copy.deepcopy(model)
                recalibrate_bn(recalibrated[(key, bits)], x, bits)
            model = recalibrated[(key, bits)]
        accuracy, _ = evaluate(model, env.x_test, env.y_test, bits)
        out.append(DeviceResult(pid, env.tier, bits, accuracy, len(env.y_test)))
    return out


def accuracy_by_tier(results: Sequence[DeviceResult]) -> dict[str, float]:
    """Example-weighted accuracy per tier."""
    tiers: dict[str, list[DeviceResult]] = {}
    for r in results:
        tiers.setdefault(r.tier, []).append(r)
    return {
        t: sum(r.accuracy * r.num_examples for r in rs) / max(1, sum(r.num_examples for r in rs))
        for t, rs in tiers.items()
    }
