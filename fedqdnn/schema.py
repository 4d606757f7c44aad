"""What crosses a boundary, defined once: the fields of Flower messages (both directions), the
per-round records the server keeps, and the result files (results.json, comparison.json) with
their file names.

Every writer builds these models and every reader validates with them, so a field has one
name, one type and one check. Message and record fields travel under hyphenated wire names
(``num-examples``, ``partition-id``: Flower's record keys, and the rows of results.json);
:meth:`Wire.wire` gives that form, ``Model.model_validate(row)`` reads it back. The result
files use the snake_case attribute names as keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

# ---------------------------------------------------------------- message records

ARRAYS = "arrays"  # ArrayRecord: the global model (instructions) or the upload (train replies)
CONFIG = "config"  # ConfigRecord of an instruction: the flat run config + round + device
METRICS = "metrics"  # MetricRecord of a reply: its numbers
INFO = "info"  # ConfigRecord of a reply: who answered and how the round went

SERVER_ROUND = "server-round"  # instruction: the round it belongs to
PARTITION_ID = "partition-id"  # instruction: the device it is for; reply: the device answering
MODES = "modes"  # instruction to a declared device: the modes the server planned for it
DECLARATION = "declaration"  # query reply of a declared device: its Declaration as JSON


def wire_name(name: str) -> str:
    """``num_examples`` -> ``num-examples``: the name a field travels under."""
    return name.replace("_", "-")


class Wire(BaseModel):
    """A record that travels in Flower messages and rows of results.json; a field that is
    None is absent from the record (Flower records hold no None)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=wire_name
    )

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: SerializerFunctionWrapHandler) -> dict:
        return {k: v for k, v in handler(self).items() if v is not None}

    def wire(self) -> dict:
        """The record as sent and written: wire names, absent fields left out."""
        return self.model_dump(by_alias=True)


def instruction(
    flat_config: dict,
    server_round: int,
    partition_id: int | None,
    modes: tuple[int, ...] | None = None,
) -> dict:
    """The ConfigRecord content of an instruction: the run's flat config (clients need no run
    config of their own), the round, the device it is for (None: the node's own) and, for a
    declared device, the modes the server planned for it."""
    extra: dict = {SERVER_ROUND: server_round}
    if partition_id is not None:
        extra[PARTITION_ID] = partition_id
    if modes is not None:
        extra[MODES] = list(modes)
    return {**flat_config, **extra}


class Instruction(BaseModel):
    """An instruction as the client reads it (:func:`read_instruction`)."""

    model_config = ConfigDict(frozen=True)

    flat: dict
    server_round: int
    partition_id: int | None
    modes: tuple[int, ...] | None


def read_instruction(content: dict) -> Instruction:
    """Inverse of :func:`instruction`."""
    flat = dict(content)
    server_round = int(flat.pop(SERVER_ROUND, 0))
    partition = flat.pop(PARTITION_ID, None)
    modes = flat.pop(MODES, None)
    return Instruction(
        flat=flat,
        server_round=server_round,
        partition_id=None if partition is None else int(partition),
        modes=None if modes is None else tuple(int(b) for b in modes),
    )


RoundStatus = Literal["trained", "offline", "straggler"]


class DeviceInfo(Wire):
    """The ``info`` record of a train or evaluate reply."""

    tier: str
    partition_id: int
    status: RoundStatus | None = None  # train replies
    torch_device: str | None = None  # train replies: where the device computed


class TrainReport(Wire):
    """The ``metrics`` record of a train reply (a device that did not train sends the first
    two, a straggler also its simulated time)."""

    num_examples: int
    bytes_down: int
    loss: float | None = None
    trained_modes: list[int] | None = None
    sim_seconds: float | None = None
    bytes_up: int | None = None


class EvaluationReport(Wire):
    """The ``metrics`` record of an evaluate reply: the global model on the local test split."""

    num_examples: int
    accuracy: float
    loss: float
    bits: int


class Identity(Wire):
    """The ``info`` record of a query reply: which partition a node is (node IDs are random)."""

    partition_id: int


class Declaration(Wire):
    """What a declared device (``fleet = "declared"``) tells the server at the run's start:
    its name, its hardware (the full profile) and its data (fedqdnn.node_declaration)."""

    device_name: str
    hardware: str  # the profile's name
    profile: dict  # every HardwareProfile field (its native modes: bit_modes)
    data: str  # "data-root PATH" or "partition-id K"
    partition_id: int | None = None
    train_examples: int
    test_examples: int
    num_classes: int
    input_shape: list[int]


class DeclaredDevice(Declaration):
    """A declared device as results.json records it: the declaration, the device id the
    server gave it, its node and the modes it was planned to train."""

    device_id: int
    node_id: int
    planned_modes: list[int]


# ---------------------------------------------------------------- what the server records


class ClientRow(DeviceInfo, TrainReport):
    """One device's train reply (info and metrics together): a trained or a dropped device."""


class Rejection(Wire):
    """A reply the server excluded, and why."""

    partition_id: int | None
    reason: str
    phase: Literal["evaluate"] | None = None  # None: a train reply


class EvaluationRow(EvaluationReport):
    """One device's evaluate reply."""

    tier: str
    partition_id: int


class RoundRecord(BaseModel):
    """What happened in one round: client reports, exclusions, per-device evaluation. Rows are
    kept in partition order (results cannot depend on the order replies arrived)."""

    train: list[ClientRow] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)
    dropped: list[ClientRow] = Field(default_factory=list)  # offline / straggler, by design
    evaluation: list[EvaluationRow] = Field(default_factory=list)


# Keys of the metric records the server's round loop keeps per round (RunHistory).
TRAIN_LOSS = "train-loss"  # aggregate_train: examples-weighted mean client loss
NUM_VALID, NUM_REJECTED, NUM_DROPPED = "num-valid", "num-rejected", "num-dropped"
ACCURACY = "accuracy"  # aggregate_evaluate: examples-weighted device accuracy
_TIER_ACCURACY = "accuracy-"  # + tier: the same over one tier's devices
_MODE_ACCURACY = "accuracy-bits"  # + bits: central test accuracy of one mode


def tier_accuracy_key(tier: str) -> str:
    return _TIER_ACCURACY + tier


def mode_accuracy_key(bits: int) -> str:
    return _MODE_ACCURACY + str(bits)


def tier_accuracies(metrics: dict) -> dict[str, float]:
    """{tier: accuracy} from an evaluation metric record."""
    return {
        k.removeprefix(_TIER_ACCURACY): float(v)
        for k, v in metrics.items()
        if k.startswith(_TIER_ACCURACY) and not k.startswith(_MODE_ACCURACY)
    }


def mode_accuracies(metrics: dict) -> dict[str, float]:
    """{bits (as text): accuracy} from a central-evaluation metric record."""
    return {
        k.removeprefix(_MODE_ACCURACY): float(v)
        for k, v in metrics.items()
        if k.startswith(_MODE_ACCURACY)
    }


# ---------------------------------------------------------------- file names

RESULTS_FILE = "results.json"
MODEL_FILE = "model.safetensors"  # the final global model
# the final window's models averaged into one (written when the window holds several)
WINDOW_AVERAGE_MODEL_FILE = "model-window-average.safetensors"
FINAL_MODELS_DIR = "final-models"  # models of the final window's earlier rounds
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.json"
RUN_FILE = "run.json"  # the identity of the run a folder holds
LOCK_FILE = ".fedqdnn.lock"
COMPARISON_FILE = "comparison.json"
COMPARISON_CSV = "comparison.csv"
RUNS_DIR = "runs"  # a comparison's cache of runs, keyed by their config
# plots of one run (fedqdnn.federated.report_plots)
DEVICE_PLOT = "device_accuracy_by_tier.png"
ROUND_PLOT = "accuracy_per_round.png"
TIME_PLOT = "accuracy_vs_sim_time.png"
SIM_TIME_PLOT = "sim_time_per_round.png"
RUN_PLOTS = (DEVICE_PLOT, ROUND_PLOT, TIME_PLOT, SIM_TIME_PLOT)
# plots of a comparison (simulations.compare_plots); it also draws ROUND_PLOT and TIME_PLOT
TIER_PLOT = "per_tier_accuracy.png"
# the same, the window's models averaged and each device at its best mode (docs/results.md §6)
DEPLOYED_TIER_PLOT = "per_tier_accuracy_deployed.png"
SIZE_PLOT = "accuracy_vs_size.png"
COMPARISON_PLOTS = (TIER_PLOT, DEPLOYED_TIER_PLOT, ROUND_PLOT, TIME_PLOT, SIZE_PLOT)
# a sweep of comparisons (simulations.sweeps): its index and its plot
SWEEP_FILE = "sweep.json"
SWEEP_PLOT = "accuracy_vs_sweep.png"


def model_file(server_round: int | str) -> str:
    """File name of the global model after ``server_round`` (final window, checkpoints)."""
    return f"model-round{server_round}.safetensors"


# ---------------------------------------------------------------- results.json


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict:
        """The file's content: attribute names as keys, rows of devices under wire names;
        ``non_finite_values`` is left to :func:`fedqdnn.files.write_json`, which fills it."""
        return self.model_dump(by_alias=True, exclude={"non_finite_values"})


class RoundResult(_Result):
    """One round of a run's history."""

    round: int
    central_accuracy_by_bits: dict[str, float]  # empty in rounds without evaluation
    federated_accuracy: float | None
    accuracy_by_tier: dict[str, float]
    train_loss: float | None
    num_trained: int | None
    num_rejected: int
    num_dropped: int
    round_seconds: float | None
    sim_round_seconds: float
    sim_elapsed_seconds: float
    deadline_seconds: float
    clients: list[ClientRow]
    rejected: list[Rejection]
    dropped: list[ClientRow]


class FinalAccuracy(_Result):
    """Means over the final window's evaluations (``window_rounds``)."""

    accuracy_by_bits: dict[str, float]
    accuracy_by_tier: dict[str, float]
    federated_accuracy: float | None
    window_rounds: list[int]


class LastRound(_Result):
    accuracy_by_bits: dict[str, float]
    accuracy_by_tier: dict[str, float]


class Reached(_Result):
    """When a curve first reached the target accuracy (None: never)."""

    round: int | None
    sim_seconds: float | None


class Convergence(_Result):
    target_accuracy: float
    by_tier: dict[str, Reached]
    by_bits: dict[str, Reached]


class DeviceAccuracy(_Result):
    """A device's accuracy at the mode it evaluates, mean over the final window."""

    client: int
    tier: str
    bits: int
    accuracy: float
    num_examples: int


class RunResults(_Result):
    """results.json of one federated run."""

    final: FinalAccuracy
    last_round: LastRound
    convergence: Convergence
    initial_accuracy_by_bits: dict[str, float]
    per_device: list[DeviceAccuracy]
    history: list[RoundResult] = Field(min_length=1)
    config: dict
    seed: int
    versions: dict[str, str | None]
    wall_seconds: float
    non_finite_values: dict[str, str] | None = None  # fedqdnn.files: nulls written for NaN/inf
    # modes no participating device trains (FederatedConfig.untrained_modes): their accuracy
    # is that of an untrained mode; None in files written before this field
    untrained_modes: list[int] | None = None
    # fleet = "declared": what every SuperNode declared (None for a simulated fleet)
    declared_devices: list[DeclaredDevice] | None = None


# ---------------------------------------------------------------- comparison.json


class ArmRow(_Result):
    """One arm at one seed in one tier: what its deployed model scores and costs."""

    arm: str
    seed: int
    tier: str
    bits: int
    accuracy: float  # mean over the final window's models, each deployed
    # the final window's models averaged into one, deployed (None: written before it existed)
    accuracy_window_average: float | None = None
    # the same two, each device running the mode (up to the policy's) most accurate on its
    # own training data (fedqdnn.deployment, ModeChoice; None: written before it existed)
    accuracy_best_mode: float | None = None
    accuracy_window_average_best_mode: float | None = None
    # the window average with BN statistics pooled at deployment over the devices that can run
    # each mode (fedqdnn.policies.Statistics), at the policy's and at the best mode
    accuracy_window_average_pooled_bn: float | None = None
    accuracy_window_average_best_mode_pooled_bn: float | None = None
    rounds_to_target: int | None
    sim_seconds_to_target: float | None
    model_bytes: int
    bytes_per_round: int
    sim_seconds_per_round: float


class Curve(_Result):
    """Device accuracy measured during one run's training, per round."""

    participants: str
    rounds: list[int]
    sim_elapsed_seconds: list[float]
    central_accuracy_by_bits: list[dict[str, float]]
    accuracy_by_tier: list[dict[str, float]]

    @model_validator(mode="after")
    def _one_entry_per_round(self) -> Curve:
        lengths = {len(self.rounds), len(self.sim_elapsed_seconds), len(self.accuracy_by_tier)}
        if len(lengths | {len(self.central_accuracy_by_bits)}) > 1:
            raise ValueError(
                "rounds, sim_elapsed_seconds, central_accuracy_by_bits and accuracy_by_tier "
                "differ in length"
            )
        return self


class ComparisonPart(_Result):
    """One comparison merged into another (simulations.merge): where it was and what ran."""

    folder: str
    arms: list[str]
    seeds: list[int]
    versions: dict[str, str | None]
    wall_seconds: float


class Comparison(_Result):
    """comparison.json: every arm x seed on one scenario."""

    rows: list[ArmRow] = Field(min_length=1)
    curves: dict[str, list[Curve]]  # "<arm>/seed<seed>" -> its runs' curves
    per_device: dict[str, list[DeviceAccuracy]]  # "<arm>/seed<seed>" -> deployed devices
    arms: dict[str, str]  # name -> description
    seeds: list[int] = Field(min_length=1)
    config: dict
    versions: dict[str, str | None]
    wall_seconds: float
    non_finite_values: dict[str, str] | None = None
    # distinct seeds behind each mean (rows, tables, plots); absent in files written before
    distinct_seeds: int | None = None
    # the comparisons merged into this one (simulations.merge); None: run as one
    parts: list[ComparisonPart] | None = None


class SweepCell(_Result):
    """One arm's deployed accuracy in one tier at one sweep point, over the seeds."""

    point: str
    arm: str
    tier: str
    field: str  # the ArmRow deployment: accuracy, accuracy_window_average_best_mode, ...
    bits: int
    mean: float
    std: float | None  # sample std over seeds; None with one seed
    seeds: int


class Sweep(_Result):
    """sweep.json: comparisons on the same seeds at the points of one swept setting."""

    kind: str  # what is swept: alpha (label skew) or tiers (fleet mix)
    points: dict[str, str]  # point -> the swept value, in sweep order
    field: str  # the ArmRow deployment the plot and the first tables report
    cells: list[SweepCell] = Field(min_length=1)  # every deployment every point measured
    seeds: list[int] = Field(min_length=1)
    versions: dict[str, str | None]
    non_finite_values: dict[str, str] | None = None

    def cells_of(self, field: str) -> list[SweepCell]:
        """The cells of one deployment."""
        return [c for c in self.cells if c.field == field]


def run_key(arm: str, seed: int) -> str:
    """Key of one arm's seed in :attr:`Comparison.curves` and ``per_device``."""
    return f"{arm}/seed{seed}"
