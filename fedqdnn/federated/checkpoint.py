"""Round checkpoints: global model (safetensors) + run state (JSON); never pickle.

Layout of ``DIR/checkpoint/``: ``state.json`` names the model file of the same round
(``model-round<k>.safetensors``). Both are written to temporary files and renamed, the
state last, so a kill at any point leaves the previous checkpoint complete and usable.
All randomness in a run is keyed by (seed, round, partition), so the round number is
the only generator state a resume needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedqdnn.config import FederatedConfig, from_flat
from fedqdnn.files import write_bytes_atomic, write_json
from fedqdnn.round_plan import final_window
from fedqdnn.schema import CHECKPOINT_STATE_FILE, model_file
from fedqdnn.state_check import mismatch
from fedqdnn.validation import one_line

FORMAT = 2  # the only format read: another one is refused, naming both
STRATEGY_PREFIX = "strategy/"  # strategy arrays (server optimizer moments) in the model file
SERVED_PREFIX = "served/"  # the served model (``serve-ema``) in the model file


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, unsafe or does not match the model."""


@dataclass
class RunHistory:
    """Per-round metrics of a run (Flower Result's attribute names) and round wall times."""

    train_metrics_clientapp: dict[int, dict] = field(default_factory=dict)
    evaluate_metrics_clientapp: dict[int, dict] = field(default_factory=dict)
    evaluate_metrics_serverapp: dict[int, dict] = field(default_factory=dict)
    round_seconds: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-ready form (round keys as strings)."""
        return {k: {str(r): v for r, v in d.items()} for k, d in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> RunHistory:
        """Inverse of :meth:`to_json`."""
        return cls(**{k: {int(r): v for r, v in d.items()} for k, d in data.items()})


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the round it ends, the run's flat config, its history, the
    strategy's round records (JSON) and the global model arrays."""

    round: int
    config: dict
    history: RunHistory
    strategy: dict  # the strategy's JSON state ("rounds": its round records, ...)
    arrays: dict[str, np.ndarray]  # the global model
    strategy_arrays: dict[str, np.ndarray]  # the strategy's array state (may be empty)
    elapsed_seconds: float = 0.0  # the run's wall time up to this checkpoint, every session
    served_arrays: dict[str, np.ndarray] = field(default_factory=dict)  # serve-ema's model


def save_checkpoint(
    directory: Path,
    server_round: int,
    state: dict[str, np.ndarray],
    history: RunHistory,
    strategy: dict,
    strategy_arrays: dict[str, np.ndarray],
    config: dict,
    elapsed_seconds: float = 0.0,
    served: dict[str, np.ndarray] | None = None,
) -> None:
    """Write round ``server_round``'s checkpoint and remove older model files;
    ``elapsed_seconds``: the run's wall time so far, earlier sessions included; ``served``:
    the served model when it is not the global one (``serve-ema``)."""
    from safetensors.numpy import save

    directory.mkdir(parents=True, exist_ok=True)
    model_name = model_file(server_round)
    tensors = {k: np.require(v, requirements="C") for k, v in state.items()}
    tensors.update(
        {STRATEGY_PREFIX + k: np.require(v, requirements="C") for k, v in strategy_arrays.items()}
    )
    tensors.update(
        {SERVED_PREFIX + k: np.require(v, requirements="C") for k, v in (served or {}).items()}
    )
    write_bytes_atomic(directory / model_name, save(tensors))
    payload = {
        "format": FORMAT,
        "round": server_round,
        "model_file": model_name,
        "config": config,
        "history": history.to_json(),
        "strategy": strategy,
        "elapsed_seconds": round(elapsed_seconds, 3),
    }
    write_json(directory / CHECKPOINT_STATE_FILE, payload, indent=None)
    for old in directory.glob(model_file("*")):
        if old.name != model_name:
            old.unlink()


def load_checkpoint(directory: Path) -> Checkpoint:
    """The checkpoint in ``directory``; every failure is a one-line CheckpointError.
    Nothing is executed: JSON and safetensors only."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    state_path = directory / CHECKPOINT_STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"no checkpoint in {directory} (missing {CHECKPOINT_STATE_FILE})")
    try:
        payload = json.loads(state_path.read_text())
        if isinstance(payload, dict) and payload.get("format", FORMAT) != FORMAT:
            raise CheckpointError(
                f"checkpoint {state_path} has format {payload['format']!r}; this version "
                f"reads format {FORMAT} only"
            )
        check_state_schema(payload, state_path)
        model_path = directory / payload["model_file"]
        server_round = int(payload["round"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"corrupt checkpoint {state_path}: {err}") from None
    if Path(payload["model_file"]).name != payload["model_file"]:
        raise CheckpointError(
            f"checkpoint model file {payload['model_file']!r} must be a "
            "plain file name inside the checkpoint directory"
        )
    try:
        arrays = load_file(str(model_path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"checkpoint model {model_path} is not a readable safetensors "
            f"file ({err}); pickle and other formats are refused"
        ) from None
    if server_round < 0:
        raise CheckpointError(f"corrupt checkpoint {state_path}: round {server_round}")
    try:
        return Checkpoint(
            server_round,
            dict(payload["config"]),
            RunHistory.from_json(payload["history"]),
            dict(payload["strategy"]),
            {k: v for k, v in arrays.items() if not k.startswith((STRATEGY_PREFIX, SERVED_PREFIX))},
            _prefixed(arrays, STRATEGY_PREFIX),
            float(payload.get("elapsed_seconds", 0.0)),  # absent before it was recorded
            _prefixed(arrays, SERVED_PREFIX),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"corrupt checkpoint {state_path}: {err!r}") from None


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix``, the prefix removed."""
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


def check_matches(arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    """Refuse arrays whose keys, shapes or dtypes differ from the model's."""
    problem = mismatch(arrays, reference)
    if problem is not None:
        raise CheckpointError(f"checkpoint does not match the model: {problem}")


# ---------------------------------------------------------------- validation of a state


_HISTORY_NAMES = tuple(f.name for f in fields(RunHistory))
_History = dict[Literal[_HISTORY_NAMES], dict[Annotated[int, Field(ge=0)], Any]]  # type: ignore[valid-type]


class _StateSchema(BaseModel):
    """Fields of a state.json and their types."""

    model_config = ConfigDict(extra="allow")

    format: int
    round: Annotated[int, Field(ge=0)]
    model_file: str
    config: dict[str, Any]  # its values are checked by from_flat (checkpoint_config)
    history: _History
    strategy: dict[str, Any]  # read by the strategy's load_state_dict
    elapsed_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


def check_state_schema(payload: object, state_path: Path) -> None:
    """One-line CheckpointError naming the first field of ``payload`` that is missing or of
    the wrong type."""
    if not isinstance(payload, dict):
        raise CheckpointError(f"corrupt checkpoint {state_path}: not a JSON object")
    try:
        _StateSchema.model_validate(payload)
    except ValidationError as err:
        field = one_line(err, lambda loc: ".".join(str(p) for p in loc if p != "[key]"))
        raise CheckpointError(f"corrupt checkpoint {state_path}: {field}") from None


def checkpoint_config(checkpoint: Checkpoint, where: Path) -> FederatedConfig:
    """The run config of a loaded checkpoint, checked against the checkpoint itself: a valid
    config, the round within the run, no history after the round."""
    try:
        cfg = from_flat(checkpoint.config)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {where}: config: {err}") from None
    if checkpoint.round > cfg.rounds:
        raise CheckpointError(
            f"checkpoint {where}: round = {checkpoint.round} is not allowed: the run has "
            f"{cfg.rounds} rounds"
        )
    for name, by_round in asdict(checkpoint.history).items():
        late = sorted(r for r in by_round if r > checkpoint.round)
        if late:
            raise CheckpointError(
                f"checkpoint {where}: history.{name} has round {late[0]}, after the "
                f"checkpoint's round {checkpoint.round}"
            )
    _check_history_complete(checkpoint, cfg, where)
    return cfg


def _check_history_complete(checkpoint: Checkpoint, cfg: FederatedConfig, where: Path) -> None:
    """Every round up to the checkpoint's has its wall time, and every round of the final
    window up to it its central evaluation (the server records both each round): a short
    history would give results without those rounds, at the last round an empty final
    accuracy."""
    history = checkpoint.history
    missing = [r for r in range(1, checkpoint.round + 1) if r not in history.round_seconds]
    if missing:
        raise CheckpointError(
            f"checkpoint {where}: history.round_seconds lacks round {missing[0]} of the "
            f"{checkpoint.round} rounds done; start the run again with --overwrite"
        )
    window = final_window(cfg.rounds, cfg.evaluate_every, cfg.final_average)
    due = [r for r in window if r <= checkpoint.round]
    missing = [r for r in due if r not in history.evaluate_metrics_serverapp]
    if missing:
        raise CheckpointError(
            f"checkpoint {where}: history.evaluate_metrics_serverapp lacks round {missing[0]} "
            f"of the final window {window} (its results would have no final accuracy); start "
            "the run again with --overwrite"
        )
