"""One validated configuration of a federated run, whatever path it came from.

CLI flags, scenario files, ``[tool.flwr.app.config]`` and ``--run-config`` are all flat tables
of scalars (Flower's config format: ``lr = 0.002``, ``bits = "2,4,32"``); :func:`from_flat`
parses such a table once into typed fields (tuples, enums, small records), validated in one
place, and :meth:`FederatedConfig.to_flat` writes it back. The server sends the flat form to
clients in every instruction, so a client needs no run config of its own.

The data source, loss and optimizer settings are the same objects centralized training uses
(:class:`~fedqdnn.data_source.DataSource`, :class:`~fedqdnn.losses.ConsistencyConfig`,
:class:`~fedqdnn.training.OptimConfig`), as are the model options (:mod:`fedqdnn.model_options`);
in the flat form the sections' fields sit beside the others (``dataset``, ``kd-weight``, ``lr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic import model_validator as _model_validator

from fedqdnn.bitmodes import parse_bit_modes
from fedqdnn.data import is_hf_name
from fedqdnn.data_source import DataSource
from fedqdnn.hardware import (
    PROPORTION_TOLERANCE,
    assign_profiles,
    fleet_lowest_top_mode,
    get_profile,
)
from fedqdnn.layers import BNLayout, HeadLayout
from fedqdnn.losses import ConsistencyConfig
from fedqdnn.model_options import BN, DEVICE, HEAD, LEARNABLE_CLIP, MODEL, DeviceSpec, ModelName
from fedqdnn.partition import PartitionScheme
from fedqdnn.policies import BNStats, Sampling, ServerOptimizer, SharedWeighting, TrainModes
from fedqdnn.round_plan import FAULTS, Slowdown
from fedqdnn.training import OptimConfig
from fedqdnn.validation import (
    SLOWDOWN_LIMIT,
    Concentration,
    EpochCount,
    Fraction,
    LearningRate,
    NonNegativeInt,
    OpenFraction,
    PositiveInt,
    Probability,
    RoundCount,
    Seconds,
    Seed,
    one_line,
    parse_mode_pairs,
)


class FleetSource(StrEnum):
    """Where the devices come from: drawn by the server from the scenario (a simulation), or
    declared by the nodes themselves (real devices: docs/deployment.md)."""

    SIMULATED = "simulated"
    DECLARED = "declared"


class Aggregation(StrEnum):
    """Server-side aggregation: FedQDNN, or Flower's FedAvg (identical reply keys only)."""

    FEDQDNN = "fedqdnn"
    FEDAVG = "fedavg"


# ---------------------------------------------------------------- flat-string forms


def parse_tiers(spec: object) -> object:
    """``"mcu-int2:0.34,cpu-fp32:0.66"`` -> {name: proportion}; a mapping passes through."""
    if not isinstance(spec, str):
        return spec
    tiers: dict[str, float] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, sep, value = item.partition(":")
        try:
            share = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"tier entry {item!r} is not NAME:PROPORTION, e.g. 'cpu-fp32:0.5'")
        if name.strip() in tiers:  # as a TOML [tiers] table refuses a repeated key
            raise ValueError(f"tier {name.strip()!r} is given twice; give each tier once")
        tiers[name.strip()] = share
    return tiers


def format_tiers(tiers: Mapping[str, float]) -> str:
    """Inverse of :func:`parse_tiers`."""
    return ",".join(f"{name}:{prop:g}" for name, prop in tiers.items())


def _parse_ids(spec: object) -> object:
    """``"0,3,7"`` -> (0, 3, 7); "" -> (); sequences pass through."""
    if not isinstance(spec, str):
        return spec
    try:
        return tuple(int(p) for p in spec.split(",") if p.strip())
    except ValueError:
        raise ValueError("give partition ids as integers, comma-separated, e.g. '0,3,7'") from None


def _parse_slowdown(spec: object) -> object:
    """``"cpu-fp32:4:8,mcu-int2:6:3"`` -> (Slowdown(...), ...); sequences pass through."""
    if not isinstance(spec, str):
        return spec
    entries = []
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        parts = entry.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            entries.append(Slowdown(parts[0].strip(), int(parts[1]), float(parts[2])))
        except ValueError:
            raise ValueError(
                f"entry {entry!r} is not TIER:ROUND:FACTOR, e.g. 'cpu-fp32:4:8'"
            ) from None
    return tuple(entries)


def _format_slowdown(entries: tuple[Slowdown, ...]) -> str:
    return ",".join(f"{e.tier}:{e.start_round}:{e.factor:g}" for e in entries)


def _integer_text(value: object) -> object:
    """``"8"`` -> 8 where a choice of integers is expected (flags and ``--run-config`` give
    text; pydantic coerces text to int for plain integers, not for a Literal of them)."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


TierShare = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
BitModes = Annotated[tuple[int, ...], BeforeValidator(parse_bit_modes)]


# ---------------------------------------------------------------- the config


class FederatedConfig(BaseModel):
    """Everything a federated Quantizable-DNN run depends on (validated on creation)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    model: ModelName = MODEL
    bits: BitModes = Field((2, 4, 32), description="the model's bit modes, e.g. '2,4,32'")
    tiers: Annotated[dict[str, TierShare], BeforeValidator(parse_tiers)] = Field(
        default_factory=lambda: {"mcu-int2": 0.3333, "phone-npu-int4": 0.3333, "cpu-fp32": 0.3334},
        description="hardware profile -> share of the fleet, e.g. 'cpu-fp32:0.5,mcu-int2:0.5'",
    )
    num_clients: NonNegativeInt = Field(
        9, description="devices in the fleet (0 with partition = natural: one per id)"
    )
    rounds: RoundCount = Field(12, description="federated rounds")
    fraction_train: Fraction = Field(1.0, description="share of devices sampled to train")
    fraction_evaluate: Fraction = Field(1.0, description="share of devices sampled to evaluate")
    local_epochs: EpochCount = Field(2, description="local epochs per round")
    evaluate_every: PositiveInt = Field(
        1, description="evaluate (central and on devices) every k rounds and at the last round"
    )
    final_average: PositiveInt = Field(
        1, description="final accuracy = mean over the last N evaluations (their models kept)"
    )
    serve_ema: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        0.0,
        description="served model = exponential average of the aggregates with this decay "
        "per round (evaluated, kept and deployed; training goes on from the aggregate); "
        "0: the latest aggregate",
    )
    target_accuracy: Probability = Field(
        0.9, description="accuracy whose first crossing per tier is reported (rounds, time)"
    )
    loss: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(batch_size=32, lr=0.002, cosine=False)
    )
    train_modes: TrainModes = Field(
        TrainModes.AFFORDABLE, description="which modes a device trains"
    )
    bn_stats: BNStats = Field(BNStats.RECALIBRATE, description="BN statistics a client uploads")
    aggregation: Aggregation = Field(Aggregation.FEDQDNN, description="server aggregation")
    server_optimizer: ServerOptimizer = Field(
        ServerOptimizer.NONE, description="server optimizer on the shared weights"
    )
    server_lr: LearningRate = Field(
        1.0, description="server learning rate (FedAvgM lr, FedAdam/Yogi/Adagrad eta)"
    )
    server_momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        0.0, description="FedAvgM server momentum"
    )
    shared_weighting: SharedWeighting = Field(
        SharedWeighting.EXAMPLES, description="weight of a client in the shared-weight average"
    )
    mode_state_decay: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        0.0,
        description="per-mode BN/clip state blended with the previous global value, weighted "
        "by decay x the data behind it (0: replaced by this round's trainers)",
    )
    mode_start: Annotated[tuple[tuple[int, int], ...], BeforeValidator(parse_mode_pairs)] = Field(
        (), description="round from which a mode is trained, e.g. '32:40' (schedule)"
    )
    participants: Annotated[tuple[NonNegativeInt, ...], BeforeValidator(_parse_ids)] = Field(
        (), description="partition ids taking part, e.g. '0,3,7' ('' = all)"
    )
    sampling: Sampling = Field(
        Sampling.UNIFORM,
        description="a round's devices drawn from all (uniform), or in proportion from each "
        "group training the same modes (stratified), and sharing a most frequent label "
        "(stratified-labels)",
    )
    partition: PartitionScheme = Field(PartitionScheme.IID, description="data split over devices")
    alpha: Concentration = Field(0.5, description="Dirichlet concentration (partition=dirichlet)")
    partition_by: str = Field(
        "", description="column of natural ids for partition = natural, e.g. 'writer_id'"
    )
    local_test_fraction: OpenFraction = Field(
        0.2, description="share of a device's data kept for its local test split"
    )
    bn: BNLayout = BN
    head: HeadLayout = HEAD
    learnable_clip: bool = LEARNABLE_CLIP
    availability: bool = Field(
        False, description="devices online with their profile's probability per round"
    )
    deadline_seconds: Seconds = Field(
        0.0, description="simulated round deadline in seconds (0 = none)"
    )
    slowdown: Annotated[tuple[Slowdown, ...], BeforeValidator(_parse_slowdown)] = Field(
        (), description="tiers throttled from a round on, 'TIER:ROUND:FACTOR,...'"
    )
    fault_crash: Probability = Field(0.0, description="per-round probability a client crashes")
    fault_nan: Probability = Field(0.0, description="per-round probability of a NaN update")
    fault_shape: Probability = Field(0.0, description="per-round probability of a bad shape")
    fault_slow: Probability = Field(0.0, description="per-round probability of a 10x slow client")
    upload_bits: Annotated[Literal[8, 32], BeforeValidator(_integer_text)] = Field(
        32, description="update upload precision: 32 or 8"
    )
    max_nodes: NonNegativeInt = Field(
        100,
        description="most SuperNodes a simulation runs; a larger fleet's devices are served in "
        "turn by that pool of nodes (0: one node per device, bound by its partition-id, as on "
        "real devices)",
    )
    fleet: FleetSource = Field(
        FleetSource.SIMULATED,
        description="simulated: tiers and data shards drawn from this scenario; declared: each "
        "SuperNode is one device that declares its hardware and data in its node config",
    )
    checkpoint_every: NonNegativeInt = Field(
        1, description="rounds between checkpoints (0 = never)"
    )
    device: DeviceSpec = DEVICE
    data: DataSource = Field(default_factory=DataSource)
    seed: Seed = Field(0, description="seed of partitions, tiers, sampling and training")

    @_model_validator(mode="after")
    def _consistent(self) -> FederatedConfig:
        """Rules that involve several keys."""
        for name, share in self.tiers.items():
            try:
                get_profile(name).affordable_modes(self.bits)  # the tier must run some mode
            except ValueError as err:
                raise ValueError(f"tiers: {err}") from None
            if not 0 < share <= 1:
                raise ValueError(f"tiers: {name} = {share!r} must be in (0, 1]")
        if not self.tiers:
            raise ValueError("tiers is empty; give NAME:PROPORTION pairs, e.g. 'cpu-fp32:1.0'")
        total = sum(self.tiers.values())
        if abs(total - 1) > PROPORTION_TOLERANCE:
            raise ValueError(
                f"tiers: proportions sum to {total:.4g}; they must sum to 1 "
                f"(+-{PROPORTION_TOLERANCE:g})"
            )
        self._check_data_keys()
        ids = self.participants
        if self.num_clients and (
            any(p >= self.num_clients for p in ids) or len(set(ids)) != len(ids)
        ):
            raise ValueError(
                f"participants = {to_flat_value(ids)!r} is not allowed: distinct partition ids "
                f"in 0..{self.num_clients - 1}"
            )
        for entry in self.slowdown:
            factor_ok = 0 < entry.factor <= SLOWDOWN_LIMIT  # False for nan
            if entry.tier not in self.tiers or entry.start_round < 1 or not factor_ok:
                raise ValueError(
                    f"slowdown entry {_format_slowdown((entry,))!r} is not allowed: "
                    "TIER:ROUND:FACTOR with a tier of this scenario, ROUND >= 1, "
                    f"0 < FACTOR <= {SLOWDOWN_LIMIT:g}"
                )
        for bits, start in self.mode_start:
            if bits not in self.bits or start < 1 or bits == self.bits[0]:
                raise ValueError(
                    f"mode-start entry {bits}:{start} is not allowed: a mode of the model "
                    f"above its lowest ({self.bits[0]}-bit, trained from round 1), ROUND >= 1"
                )
            if start > self.rounds:  # the mode would never train, yet be reported
                raise ValueError(
                    f"mode-start entry {bits}:{start} is not allowed: ROUND must be <= "
                    f"rounds = {self.rounds} (the {bits}-bit mode would never train)"
                )
        systems = (
            self.availability
            or self.deadline_seconds
            or self.upload_bits != 32
            or any(self.fault_probabilities.values())
        )
        if self.fleet == FleetSource.DECLARED:
            self._check_declared()
        if self.aggregation == Aggregation.FEDAVG and systems:
            raise ValueError(
                "aggregation = 'fedavg' needs identical replies from every "
                "client: no availability, deadline, faults or 8-bit upload"
            )
        if self.loss.one_mode_kd_weight > 0 and self.train_modes in (
            TrainModes.LOWEST_COMMON,
            TrainModes.FP32,
        ):
            raise ValueError(
                f"one-mode-kd-weight > 0 is not allowed with train-modes = "
                f"{self.train_modes.value!r} (no device trains the teacher, the next mode up); "
                "allowed: affordable, top"
            )
        if self.loss.one_mode_kd_weight > 0 and self.mode_start:
            raise ValueError(
                "one-mode-kd-weight > 0 is not allowed with mode-start = "
                f"{to_flat_value(self.mode_start)!r} (a teacher mode would teach before it "
                "trains); allowed: mode-start = '' (every mode from round 1)"
            )
        if self.aggregation == Aggregation.FEDAVG and self.sampling != Sampling.UNIFORM:
            raise ValueError(
                f"sampling = {self.sampling.value!r} is not allowed with aggregation = 'fedavg' "
                "(Flower's FedAvg samples nodes, not devices); allowed: uniform"
            )
        return self

    def _check_declared(self) -> None:
        """A declared fleet takes its devices from the nodes: keys that pick devices or tiers
        from the scenario do not apply."""
        if self.aggregation != Aggregation.FEDQDNN:
            raise ValueError(
                f"fleet = 'declared' needs aggregation = 'fedqdnn' (the server plans each "
                f"declared device's modes); got aggregation = {self.aggregation.value!r}"
            )
        if self.sampling == Sampling.STRATIFIED_LABELS:
            raise ValueError(
                "sampling = 'stratified-labels' is not allowed with fleet = 'declared': the "
                "server knows no real device's labels; allowed: uniform, stratified"
            )
        for key, value, default in (
            ("participants", self.participants, ()),
            ("slowdown", self.slowdown, ()),
        ):
            if value != default:
                raise ValueError(
                    f"{key} = {to_flat_value(value)!r} is not allowed with fleet = 'declared': "
                    "the nodes declare the devices; allowed: leave it empty"
                )
        if self.num_clients == 0:
            raise ValueError(
                "num-clients = 0 is not allowed with fleet = 'declared'; allowed: the number of "
                "SuperNodes (devices) the run waits for, >= 1"
            )

    def _check_data_keys(self) -> None:
        """Natural partitions and column names need an hf: data set (built-ins have neither)."""
        natural = self.partition == PartitionScheme.NATURAL
        if natural and not self.partition_by:
            raise ValueError(
                "partition = 'natural' needs partition-by = the column of natural ids, "
                "e.g. 'writer_id'"
            )
        if self.num_clients == 0 and not natural:
            raise ValueError(
                "num-clients = 0 (one device per natural id) needs partition = 'natural'; "
                "otherwise give the number of devices, >= 1"
            )
        if not is_hf_name(self.data.dataset):
            for key, value in (
                ("partition_by", self.partition_by),
                ("image_column", self.data.image_column),
                ("label_column", self.data.label_column),
            ):
                if value and (key != "partition_by" or natural):
                    raise ValueError(
                        f"{key.replace('_', '-')} = {value!r} needs an hf: data "
                        f"set; {self.data.dataset} has no such column"
                    )

    # ------------------------------------------------------------ derived values

    @property
    def fault_probabilities(self) -> dict[str, float]:
        """Injected-fault probabilities by fault name."""
        return {fault: getattr(self, f"fault_{fault}") for fault in FAULTS}

    @property
    def participant_ids(self) -> list[int]:
        """Partition ids taking part in training (all of the fleet by default)."""
        if self.num_clients == 0:
            raise ValueError(
                "num-clients = 0 (one device per natural id) is resolved from the data first "
                "(fedqdnn simulate / compare do; with flwr run, give the number of devices)"
            )
        return list(self.participants) if self.participants else list(range(self.num_clients))

    @property
    def pooled(self) -> bool:
        """Whether nodes serve devices in turn (the message names the device) rather than each
        node being one device. Flower's own FedAvg addresses nodes itself: never pooled."""
        declared = self.fleet == FleetSource.DECLARED
        return self.max_nodes > 0 and self.aggregation == Aggregation.FEDQDNN and not declared

    def untrained_modes(self) -> tuple[int, ...]:
        """The model's modes no participating device trains in any round (under its tier and
        ``train-modes``): they are still evaluated centrally, at whatever the shared weights
        give them. A legitimate choice for baselines (lowest-common, top-only, one tier's
        run), so the run warns and records them rather than refusing; () while ``num-clients
        = 0`` is unresolved."""
        if self.num_clients == 0 or self.fleet == FleetSource.DECLARED:
            return ()  # a declared fleet's: from the declarations, at the run's start
        trained = {b for modes in self.device_train_modes().values() for b in modes}
        return tuple(b for b in self.bits if b not in trained)

    def device_train_modes(self) -> dict[int, tuple[int, ...]]:
        """The modes each participating device trains (its tier's runnable modes under
        ``train-modes``); a simulated fleet with ``num-clients`` resolved only."""
        tiers = assign_profiles(self.num_clients, self.tiers, self.seed)
        lowest_top = fleet_lowest_top_mode(list(self.tiers), self.bits)
        return {
            p: self.train_modes.modes(get_profile(tiers[p]).affordable_modes(self.bits), lowest_top)
            for p in self.participant_ids
        }

    @property
    def num_nodes(self) -> int:
        """SuperNodes the run needs: one per participating device, at most ``max-nodes``."""
        devices = len(self.participant_ids)
        return min(devices, self.max_nodes) if self.pooled else devices

    # ------------------------------------------------------------ flat form

    def to_flat(self) -> dict[str, int | float | str | bool]:
        """Flower-friendly flat dict: scalars only, keys with dashes, in :data:`FLAT_KEYS` order."""
        out: dict[str, int | float | str | bool] = {}
        for name, section in _SECTION_OF.items():
            owner = self if section is None else getattr(self, section)
            out[name.replace("_", "-")] = to_flat_value(getattr(owner, name))
        return out

    def replace(self, **changes: object) -> FederatedConfig:
        """A copy with flat-named ``changes`` applied (validated again)."""
        return from_flat(changes, base=self)

    def __hash__(self) -> int:  # tiers is a dict: hash the flat form (used by worker caches)
        return hash(tuple(self.to_flat().items()))


SECTIONS: dict[str, Any] = {"loss": ConsistencyConfig, "optim": OptimConfig, "data": DataSource}


def _flat_layout() -> dict[str, str | None]:
    """Flat key (underscores) -> the section it belongs to, or None for a top-level field, in
    the flat form's order: the fields' order, a section's keys where it is declared, except
    ``dataset``, which leads (results and run folders record this order)."""
    layout: dict[str, str | None] = {}
    for name in FederatedConfig.model_fields:
        if name in SECTIONS:
            layout.update({f: name for f in SECTIONS[name].__dataclass_fields__})
        else:
            layout[name] = None
    return {"dataset": layout.pop("dataset"), **layout}


_SECTION_OF = _flat_layout()
assert len(_SECTION_OF) == len(FederatedConfig.model_fields) - len(SECTIONS) + sum(
    len(cls.__dataclass_fields__) for cls in SECTIONS.values()
), "a section field shadows another flat key"
FLAT_KEYS = tuple(k.replace("_", "-") for k in _SECTION_OF)


def to_flat_value(value: object) -> int | float | str | bool:
    """One typed config value as a flat scalar."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return format_tiers(value)
    if isinstance(value, tuple):
        if value and isinstance(value[0], Slowdown):
            return _format_slowdown(value)
        if value and isinstance(value[0], tuple):
            return ",".join(f"{k}:{v:g}" if isinstance(v, float) else f"{k}:{v}" for k, v in value)
        return ",".join(map(str, value))
    return value  # type: ignore[return-value]


def flat_key(loc: tuple) -> str:
    """The flat (dashed) name of a pydantic error location."""
    path = [str(p) for p in loc]
    if path and path[0] in SECTIONS and len(path) > 1:
        path = path[1:]
    return ".".join(path).replace("_", "-")


def from_flat(flat: Mapping[str, object], base: FederatedConfig | None = None) -> FederatedConfig:
    """A config from flat keys (dashes or underscores) applied over ``base`` (default: the
    defaults). Unknown keys and bad values raise one-line ValueErrors naming them."""
    base = base or FederatedConfig()
    data: dict[str, Any] = {
        name: (
            dict(_section_dict(getattr(base, name))) if name in SECTIONS else getattr(base, name)
        )
        for name in FederatedConfig.model_fields
    }
    for raw_key, value in flat.items():
        key = str(raw_key).replace("-", "_")
        if key not in _SECTION_OF:
            raise ValueError(f"unknown config key {raw_key!r}; allowed: {', '.join(FLAT_KEYS)}")
        section = _SECTION_OF[key]
        if section is None:
            data[key] = value
        else:
            data[section][key] = value
    try:
        return FederatedConfig.model_validate(data)
    except ValidationError as err:
        raise ValueError(one_line(err, flat_key)) from None


def _section_dict(section: object) -> dict[str, Any]:
    return {f: getattr(section, f) for f in type(section).__dataclass_fields__}
