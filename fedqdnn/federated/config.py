"""One validated configuration for a federated run, whatever path it came from.

CLI flags, scenario files, ``[tool.flwr.app.config]`` and ``--run-config`` all become a
flat dict of scalars (Flower's config format) and pass through :func:`from_flat`; the
server sends the same flat dict to clients in every instruction's ConfigRecord, so a
client needs no ``run_config`` of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from fedqdnn.bitmodes import parse_bit_modes
from fedqdnn.data import DATASET_NAMES
from fedqdnn.models import MODELS
from fedqdnn.partition import PARTITION_SCHEMES

# Which of its modes a device trains: all it can run (FedQDNN), only its top one, only the
# fleet's lowest top mode (lowest-common baseline), or only 32-bit (fp32-exclusive baseline).
TRAIN_MODE_POLICIES = ("affordable", "top", "lowest-common", "fp32")
SERVER_STRATEGIES = ("fedqdnn", "fedavg")
# How clients set the BN running statistics they upload: re-estimated exactly on their local
# data at the final local weights (default), or left as the momentum averages of training.
BN_STATS_POLICIES = ("recalibrate", "momentum")
OPTIMIZERS = ("adam", "sgd")


def parse_tiers(spec: str) -> dict[str, float]:
    """``"mcu-int2:0.34,phone-npu-int4:0.33,cpu-fp32:0.33"`` -> {name: proportion}."""
    tiers: dict[str, float] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, sep, value = item.partition(":")
        try:
            tiers[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"tier entry {item!r} is not NAME:PROPORTION, e.g. 'cpu-fp32:0.5'")
    if not tiers:
        raise ValueError("tiers is empty; give NAME:PROPORTION pairs, e.g. 'cpu-fp32:1.0'")
    return tiers


def format_tiers(tiers: Mapping[str, float]) -> str:
    """Inverse of :func:`parse_tiers`."""
    return ",".join(f"{name}:{prop:g}" for name, prop in tiers.items())


@dataclass(frozen=True)
class FederatedConfig:
    """Everything a federated Quantizable-DNN run depends on (validated on creation)."""

    dataset: str = "digits"
    model: str = ""  # "" -> the data set's default model
    bits: tuple[int, ...] = (2, 4, 32)
    tiers: dict[str, float] = field(
        default_factory=lambda: {"mcu-int2": 0.3333, "phone-npu-int4": 0.3333, "cpu-fp32": 0.3334}
    )
    num_clients: int = 10
    rounds: int = 15
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    train_modes: str = "affordable"
    bn_stats: str = "recalibrate"  # "momentum": upload BN running stats as training left them
    server_strategy: str = "fedqdnn"  # "fedavg": Flower's FedAvg (needs identical reply keys)
    participants: str = ""  # comma-separated partition ids taking part; "" -> all
    partition: str = "iid"
    alpha: float = 0.5
    local_test_fraction: float = 0.2
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    temperature: float = 1.0
    bit_specific_bn: bool = True
    learnable_clip: bool = True
    availability: bool = False  # devices online with their profile's probability per round
    deadline_seconds: float = 0.0  # simulated round deadline; 0 -> none (see round_plan.py)
    slowdown: str = ""  # "tier:round:factor,...": a tier throttled from that round on
    fault_crash: float = 0.0  # per-client, per-round probabilities of injected faults
    fault_nan: float = 0.0
    fault_shape: float = 0.0
    fault_slow: float = 0.0
    upload_bits: int = 32  # 8 -> updates uploaded as per-tensor uint8 codes
    checkpoint_every: int = 1  # rounds between checkpoints; 0 -> none
    num_samples: int = 0  # mnist1d sample count; 0 -> library default
    data_root: str = ""
    data_seed: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, value: object, allowed: str) -> ValueError:
            return ValueError(f"{name} = {value!r} is not allowed; allowed: {allowed}")

        if self.dataset not in DATASET_NAMES:
            raise bad("dataset", self.dataset, ", ".join(DATASET_NAMES))
        if self.model and self.model not in MODELS:
            raise bad("model", self.model, ", ".join(sorted(MODELS)))
        object.__setattr__(self, "bits", parse_bit_modes(self.bits))
        if self.num_clients < 1:
            raise bad("num_clients", self.num_clients, "an integer >= 1")
        if self.rounds < 1:
            raise bad("rounds", self.rounds, "an integer >= 1")
        for name in ("fraction_train", "fraction_evaluate"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise bad(name, value, "a number in (0, 1]")
        if self.local_epochs < 1:
            raise bad("local_epochs", self.local_epochs, "an integer >= 1")
        if self.batch_size < 1:
            raise bad("batch_size", self.batch_size, "an integer >= 1")
        if not self.lr > 0:
            raise bad("lr", self.lr, "a number > 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", self.optimizer, ", ".join(OPTIMIZERS))
        if self.train_modes not in TRAIN_MODE_POLICIES:
            raise bad("train_modes", self.train_modes, ", ".join(TRAIN_MODE_POLICIES))
        if self.bn_stats not in BN_STATS_POLICIES:
            raise bad("bn_stats", self.bn_stats, ", ".join(BN_STATS_POLICIES))
        if self.server_strategy not in SERVER_STRATEGIES:
            raise bad("server_strategy", self.server_strategy, ", ".join(SERVER_STRATEGIES))
        self._validate_participants()
        if self.partition not in PARTITION_SCHEMES:
            raise bad("partition", self.partition, ", ".join(PARTITION_SCHEMES))
        if not self.alpha > 0:
            raise bad("alpha", self.alpha, "a number > 0")
        if not 0 < self.local_test_fraction < 1:
            raise bad("local_test_fraction", self.local_test_fraction, "a number in (0, 1)")
        if self.temperature <= 0 or self.ce_weight < 0 or self.kd_weight < 0:
            raise bad(
                "loss weights",
                (self.ce_weight, self.kd_weight, self.temperature),
                "ce_weight >= 0, kd_weight >= 0, temperature > 0",
            )
        self._validate_tiers()
        self._validate_systems()

    def _validate_systems(self) -> None:
        def bad(name: str, value: object, allowed: str) -> ValueError:
            return ValueError(f"{name} = {value!r} is not allowed; allowed: {allowed}")

        for name in ("fault_crash", "fault_nan", "fault_shape", "fault_slow"):
            if not 0 <= getattr(self, name) <= 1:
                raise bad(name, getattr(self, name), "a probability in [0, 1]")
        if self.deadline_seconds < 0:
            raise bad("deadline_seconds", self.deadline_seconds, "a number >= 0 (0 = none)")
        if self.upload_bits not in (8, 32):
            raise bad("upload_bits", self.upload_bits, "8 or 32")
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", self.checkpoint_every, "an integer >= 0 (0 = never)")
        for entry in (e.strip() for e in self.slowdown.split(",") if e.strip()):
            parts = entry.split(":")
            try:
                ok = (
                    len(parts) == 3
                    and parts[0] in self.tiers
                    and int(parts[1]) >= 1
                    and float(parts[2]) > 0
                )
            except ValueError:
                ok = False
            if not ok:
                raise bad(
                    "slowdown entry",
                    entry,
                    "TIER:ROUND:FACTOR with a tier of this scenario, ROUND >= 1, FACTOR > 0",
                )
        if self.server_strategy == "fedavg" and (
            self.availability
            or self.deadline_seconds
            or self.upload_bits != 32
            or self.fault_crash
            or self.fault_nan
            or self.fault_shape
            or self.fault_slow
        ):
            raise ValueError(
                "server_strategy = 'fedavg' needs identical replies from every "
                "client: no availability, deadline, faults or 8-bit upload"
            )

    @property
    def fault_probabilities(self) -> dict[str, float]:
        """Injected-fault probabilities by fault name."""
        return {
            "crash": self.fault_crash,
            "nan": self.fault_nan,
            "shape": self.fault_shape,
            "slow": self.fault_slow,
        }

    def _validate_participants(self) -> None:
        if not self.participants:
            return
        try:
            ids = [int(p) for p in self.participants.split(",")]
        except ValueError:
            ids = [-1]
        if not ids or any(not 0 <= p < self.num_clients for p in ids) or len(set(ids)) != len(ids):
            raise ValueError(
                f"participants = {self.participants!r} is not allowed; allowed: distinct "
                f"partition ids in 0..{self.num_clients - 1}, comma-separated"
            )

    @property
    def participant_ids(self) -> list[int]:
        """Partition ids taking part in training (all of the fleet by default)."""
        if not self.participants:
            return list(range(self.num_clients))
        return [int(p) for p in self.participants.split(",")]

    @property
    def num_nodes(self) -> int:
        """SuperNodes the run needs: one per participating partition."""
        return len(self.participant_ids)

    def _validate_tiers(self) -> None:
        from fedqdnn.hardware import PROPORTION_TOLERANCE, get_profile

        if not self.tiers:
            raise ValueError("tiers is empty; give at least one hardware profile")
        for name, proportion in self.tiers.items():
            get_profile(name).affordable_modes(self.bits)  # the tier must run some mode
            if not 0 < proportion <= 1:
                raise ValueError(f"tier {name!r} proportion {proportion} must be in (0, 1]")
        total = sum(self.tiers.values())
        if abs(total - 1) > PROPORTION_TOLERANCE:
            raise ValueError(f"tier proportions sum to {total:.4g}; they must sum to 1")

    def __hash__(self) -> int:  # tiers is a dict: hash the flat form (used by worker caches)
        return hash(tuple(self.to_flat().items()))

    @property
    def model_name(self) -> str:
        """The model to build (the data set's default when none is given)."""
        from fedqdnn.data import DEFAULT_MODEL

        return self.model or DEFAULT_MODEL[self.dataset]

    def to_flat(self) -> dict[str, int | float | str | bool]:
        """Flower-friendly flat dict (``bits`` and ``tiers`` as strings, keys with dashes)."""
        out: dict[str, int | float | str | bool] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "bits":
                value = ",".join(map(str, value))
            elif f.name == "tiers":
                value = format_tiers(value)
            out[f.name.replace("_", "-")] = value
        return out

    def replace(self, **changes: object) -> FederatedConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(FederatedConfig)}


def from_flat(flat: Mapping[str, object], base: FederatedConfig | None = None) -> FederatedConfig:
    """Build a config from flat keys (dashes or underscores); unknown keys are an error."""
    base = base or FederatedConfig()
    changes: dict[str, object] = {}
    for raw_key, value in flat.items():
        key = raw_key.replace("-", "_")
        if key not in _FIELDS:
            allowed = ", ".join(k.replace("_", "-") for k in _FIELDS)
            raise ValueError(f"unknown config key {raw_key!r}; allowed: {allowed}")
        if key == "tiers" and isinstance(value, str):
            value = parse_tiers(value)
        elif key == "bits" and isinstance(value, str):
            value = parse_bit_modes(value)
        else:
            value = _coerce(key, value, type(getattr(base, key)))
        changes[key] = value
    return dataclasses.replace(base, **changes)


def _coerce(key: str, value: object, kind: type) -> object:
    """Accept the scalar types TOML and Flower give; refuse anything else in one line."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str and isinstance(value, str):
        return value
    elif kind is dict and isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return _coerce(key, int(value) if kind is int else float(value), kind)
        except ValueError:
            pass
    raise ValueError(
        f"config key {key.replace('_', '-')!r} = {value!r} is not a valid {kind.__name__}"
    )
