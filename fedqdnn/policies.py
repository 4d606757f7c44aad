"""Run policies as typed values: which modes a device trains, how its BN statistics are
uploaded, and which mode a device runs once the model is deployed.

A baseline (strategies/arms.py) is a combination of these values; an unknown name fails
when a config is parsed, with the allowed ones listed. The model preparation a deploy policy
needs (post-training quantization, BN recalibration) is in :mod:`fedqdnn.deployment`.
"""

from __future__ import annotations

from enum import StrEnum

from fedqdnn.quant import FULL_PRECISION


class TrainModes(StrEnum):
    """Which of its runnable modes a device trains."""

    AFFORDABLE = "affordable"  # every mode it can run (FedQDNN)
    TOP = "top"  # only its top mode (per-tier, top-only)
    LOWEST_COMMON = "lowest-common"  # the fleet's lowest top mode (lowest-common)
    FP32 = "fp32"  # 32-bit only (fp32-exclusive, FP32 reference)

    def modes(self, runnable: tuple[int, ...], fleet_lowest_top: int) -> tuple[int, ...]:
        """Modes trained by a device that runs ``runnable`` (ascending)."""
        if self is TrainModes.AFFORDABLE:
            return runnable
        if self is TrainModes.TOP:
            return (runnable[-1],)
        if self is TrainModes.LOWEST_COMMON:
            return (fleet_lowest_top,)
        return (FULL_PRECISION,)

    @property
    def adapts_to_deadline(self) -> bool:
        """Whether a device may drop modes to meet a round deadline (only when it trains
        several by choice; the other policies prescribe one mode)."""
        return self is TrainModes.AFFORDABLE


class BNStats(StrEnum):
    """How a client sets the BN running statistics it uploads."""

    RECALIBRATE = "recalibrate"  # re-estimated on local data at the final local weights
    MOMENTUM = "momentum"  # left as the momentum averages of local training


class Deploy(StrEnum):
    """How a trained model reaches a device and which mode the device runs."""

    TOP = "top"  # its top runnable mode, with that mode's BN
    LOWEST_COMMON = "lowest-common"  # every device runs the fleet's lowest top mode
    PTQ = "ptq"  # FP32 model quantized to the device's mode, BN recalibrated locally
    RECALIBRATE = "recalibrate"  # shared-BN model, statistics re-estimated per mode
    FP32 = "fp32"  # FP32 on every device (the not-deployable reference)

    def bits(self, device_top: int, fleet_lowest_top: int) -> int:
        """The mode a device whose top runnable mode is ``device_top`` runs."""
        if self is Deploy.FP32:
            return FULL_PRECISION
        if self is Deploy.LOWEST_COMMON:
            return fleet_lowest_top
        return device_top


class ModeChoice(StrEnum):
    """Which mode a device deploys: the one its deploy policy names, or (a Quantizable DNN
    switches modes at run time) the most accurate on the device's own training data among
    the modes it can run up to that one."""

    POLICY = "policy"
    BEST_ON_TRAIN = "best-on-train"


class Statistics(StrEnum):
    """Whose BN statistics a deployed mode normalizes with: those the model carries (trained,
    or averaged with the window's weights), or statistics pooled at deployment over the
    training data of every device that shares the model and can run the mode (one federated
    pass of per-mode counts, sums and sums of squares; HeteroFL's static BN)."""

    CARRIED = "carried"
    POOLED = "pooled"


class ServerOptimizer(StrEnum):
    """Update of the shared weights from the clients' average (Flower's strategies' math)."""

    NONE = "none"  # the average is the new global model (FedAvg)
    FEDAVGM = "fedavgm"  # server momentum
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    FEDADAGRAD = "fedadagrad"


class Sampling(StrEnum):
    """How a round's training devices are drawn: from the whole fleet, or within groups in
    proportion to their sizes (fedqdnn/sampling.py)."""

    UNIFORM = "uniform"
    STRATIFIED = "stratified"  # within groups training the same modes
    STRATIFIED_LABELS = "stratified-labels"  # ... and sharing their most frequent label


class SharedWeighting(StrEnum):
    """Weight of a client's shared weights in the average."""

    EXAMPLES = "examples"  # n_i (FedAvg)
    EXAMPLES_X_MODES = "examples-x-modes"  # n_i x number of modes it trained
