"""Per-device deployment and evaluation of a trained global model, offline (no Flower).

How a strategy's model reaches a device decides what the device runs
(:class:`~fedqdnn.policies.Deploy` names the policies and the mode each device runs):

* ``top``: the device runs the model at its top affordable mode, with that mode's BN;
* ``lowest-common``: every device runs the fleet's lowest top mode;
* ``ptq``: post-training quantization of an FP32-trained model: the 32-bit BN (and a
  bit-specific head) is copied into the device's mode and its statistics are recalibrated
  on the device's own training data;
* ``fp32``: every device runs the FP32 mode (the reference "FP32 FedAvg on all clients",
  as if every device could run FP32);
* ``recalibrate``: shared-BN models: BN statistics re-estimated per mode over the training
  data of every device that runs that mode; equal to pooling per-device statistics with the
  law of total variance, i.e. a federated per-mode recalibration.

The models run on the config's device (``device``; auto: CUDA when visible); the devices'
data stay in CPU memory and go to the model batch by batch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedqdnn.accelerator import intra_op_threads, release_cuda_memory, select_device
from fedqdnn.calibration import active_bns, recalibrate_bn
from fedqdnn.config import FederatedConfig
from fedqdnn.device import device_for
from fedqdnn.fleet import build_model_for
from fedqdnn.hardware import fleet_lowest_top_mode
from fedqdnn.layers import BitLinear
from fedqdnn.models import QuantizableModel
from fedqdnn.policies import Deploy, ModeChoice, Statistics
from fedqdnn.quant import FULL_PRECISION
from fedqdnn.training import evaluate


@dataclass(frozen=True)
class DeviceResult:
    """One device's accuracy on its local test split."""

    client: int
    tier: str
    bits: int
    accuracy: float
    num_examples: int


def _model_with(
    cfg: FederatedConfig, state: Mapping[str, np.ndarray], where: torch.device
) -> QuantizableModel:
    model = build_model_for(cfg)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model.to(where).eval()


def _ptq(model: QuantizableModel, bits: int, x_calibration: torch.Tensor) -> QuantizableModel:
    """Copy the FP32 BN (and a bit-specific head) into mode ``bits`` and recalibrate its
    statistics on local data."""
    model = copy.deepcopy(model)
    if bits != FULL_PRECISION:
        for src, dst in zip(
            active_bns(model, FULL_PRECISION), active_bns(model, bits), strict=True
        ):
            dst.load_state_dict(src.state_dict())
        for module in model.modules():
            if isinstance(module, BitLinear):
                module.copy_mode(FULL_PRECISION, bits)
        recalibrate_bn(model, x_calibration, bits)
    return model


def best_mode(scores: Mapping[int, float]) -> int:
    """The mode with the best score; a tie goes to the higher-precision mode."""
    return max(scores, key=lambda bits: (scores[bits], bits))


def evaluate_devices(
    cfg: FederatedConfig,
    state_for_device: Mapping[int, Mapping[str, np.ndarray]],
    policy: Deploy,
    devices: Sequence[int] | None = None,
    choice: ModeChoice = ModeChoice.POLICY,
    statistics: Statistics = Statistics.CARRIED,
) -> list[DeviceResult]:
    """Accuracy of every device (partition) under ``policy``.

    ``state_for_device`` maps partition id to the global model state that device receives
    (one state for all devices except in per-tier training). ``choice = best-on-train``: each
    device runs, of the modes it can run up to the policy's, the one whose deployed model (as
    ``policy`` deploys it) is most accurate on the device's own training data; its test split
    stays unseen until the choice is made. ``statistics = pooled``: every mode a device runs
    normalizes with statistics pooled over the training data of the devices that share its
    model and can run that mode (:class:`~fedqdnn.policies.Statistics`).
    """
    policy = Deploy(policy)
    devices = list(devices if devices is not None else range(cfg.num_clients))
    fleet = _Deployer(cfg, state_for_device, policy, devices, Statistics(statistics))
    with intra_op_threads(1):  # many small passes: one thread each (see intra_op_threads)
        out = _evaluate_each(cfg, fleet, policy, devices, choice)
    fleet.release()
    return out


def _evaluate_each(
    cfg: FederatedConfig,
    fleet: _Deployer,
    policy: Deploy,
    devices: list[int],
    choice: ModeChoice,
) -> list[DeviceResult]:
    lowest_top = fleet_lowest_top_mode(list(cfg.tiers), cfg.bits)
    out = []
    for pid in devices:
        device = device_for(cfg, pid)
        policy_bits = policy.bits(device.top_mode, lowest_top)
        candidates = [policy_bits]
        if choice is ModeChoice.BEST_ON_TRAIN and policy is not Deploy.FP32:
            candidates = [b for b in device.modes if b <= policy_bits]
        bits = candidates[0]
        if len(candidates) > 1:
            scores = {
                b: evaluate(fleet.model(pid, b), device.x_train, device.y_train, b)[0]
                for b in candidates
            }
            bits = best_mode(scores)
        accuracy, _ = evaluate(fleet.model(pid, bits), device.x_test, device.y_test, bits)
        out.append(DeviceResult(pid, device.tier, bits, accuracy, len(device.y_test)))
    return out


class _Deployer:
    """The model each device runs at a mode under a deploy policy (built once per state,
    recalibrated once per state and mode)."""

    def __init__(
        self,
        cfg: FederatedConfig,
        state_for_device: Mapping[int, Mapping[str, np.ndarray]],
        policy: Deploy,
        devices: list[int],
        statistics: Statistics = Statistics.CARRIED,
    ) -> None:
        self.cfg, self.states, self.policy, self.devices = cfg, state_for_device, policy, devices
        self.statistics = statistics
        self.where = select_device(cfg.device)
        self.models: dict[int, QuantizableModel] = {}
        self.recalibrated: dict[tuple[int, int], QuantizableModel] = {}

    def model(self, pid: int, bits: int) -> QuantizableModel:
        key = id(self.states[pid])
        if key not in self.models:
            self.models[key] = _model_with(self.cfg, self.states[pid], self.where)
        pooled = self.statistics is Statistics.POOLED
        if self.policy is Deploy.PTQ and not pooled:
            return _ptq(self.models[key], bits, device_for(self.cfg, pid).x_train)
        if self.policy is not Deploy.RECALIBRATE and not pooled:
            return self.models[key]
        if (key, bits) not in self.recalibrated:
            x = torch.cat([device_for(self.cfg, p).x_train for p in self._pool(pid, bits)])
            if self.policy is Deploy.PTQ:  # the FP32 BN copied into the mode, then pooled
                self.recalibrated[(key, bits)] = _ptq(self.models[key], bits, x)
            else:
                self.recalibrated[(key, bits)] = copy.deepcopy(self.models[key])
                recalibrate_bn(self.recalibrated[(key, bits)], x, bits)
        return self.recalibrated[(key, bits)]

    def _pool(self, pid: int, bits: int) -> list[int]:
        """The devices whose training data give mode ``bits`` of ``pid``'s model its
        statistics: those sharing the model that top at ``bits`` (the shared-BN ablation's
        recalibration), or with pooled statistics every one that can run it (or is deployed
        at it, e.g. FP32 for the reference); this device alone if none."""
        same = [p for p in self.devices if self.states[p] is self.states[pid]]
        if self.statistics is Statistics.POOLED:
            lowest = fleet_lowest_top_mode(list(self.cfg.tiers), self.cfg.bits)
            users = [
                p
                for p in same
                if bits in (d := device_for(self.cfg, p)).modes
                or self.policy.bits(d.top_mode, lowest) == bits
            ]
        else:
            users = [p for p in same if device_for(self.cfg, p).top_mode == bits]
        return users or [pid]

    def release(self) -> None:
        self.models.clear()
        self.recalibrated.clear()
        release_cuda_memory()


def average_states(states: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One model whose every floating-point entry is the mean of ``states``' (BN running
    statistics included); integer buffers are the last state's. The deployed model of a
    temporal average: under label skew the global model oscillates from round to round with
    the devices sampled, and the mean of the last evaluated models sits between them
    (docs/results.md, "Why the FP32 tier lost")."""
    return {
        k: np.mean([s[k] for s in states], axis=0).astype(v.dtype) if v.dtype.kind == "f" else v
        for k, v in states[-1].items()
    }


def exponential_average(
    served: Mapping[str, np.ndarray], latest: Mapping[str, np.ndarray], decay: float
) -> dict[str, np.ndarray]:
    """The served model after one more round: every floating-point entry
    ``decay * served + (1 - decay) * latest`` (BN running statistics included); integer
    buffers are ``latest``'s. A running version of :func:`average_states`: under label skew
    the latest aggregate swings with the devices sampled, the average of the recent ones does
    not, so a device that takes the served model at any round gets a steady one."""
    return {
        k: (decay * served[k] + (1.0 - decay) * v).astype(v.dtype) if v.dtype.kind == "f" else v
        for k, v in latest.items()
    }


def evaluated_model(config: Mapping) -> str:
    """What a run's evaluations measured, read from its flat config: the served average
    (``serve-ema``) or the aggregate as trained. One wording for every table that says it."""
    decay = config.get("serve-ema", 0.0)
    return f"served (serve-ema {decay})" if decay else "as trained"


def accuracy_by_tier(results: Sequence[DeviceResult]) -> dict[str, float]:
    """Example-weighted accuracy per tier."""
    tiers: dict[str, list[DeviceResult]] = {}
    for r in results:
        tiers.setdefault(r.tier, []).append(r)
    return {
        t: sum(r.accuracy * r.num_examples for r in rs) / max(1, sum(r.num_examples for r in rs))
        for t, rs in tiers.items()
    }
