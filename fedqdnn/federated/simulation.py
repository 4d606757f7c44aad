"""Run the Flower apps on Flower's simulation engine (Ray) in this process."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from fedqdnn.accelerator import release_cuda_memory, select_device
from fedqdnn.config import FederatedConfig, from_flat
from fedqdnn.device import initial_model
from fedqdnn.federated.checkpoint import CHECKPOINT_DIR, Checkpoint, check_matches, load_checkpoint
from fedqdnn.federated.server_app import RoundEnd, RunSpec, build_app


def simulate(
    cfg: FederatedConfig,
    out: Path,
    ray_address: str | None = None,
    cpus_per_client: float = 1,
    gpus_per_client: float = 0.0,
    verbose: bool = False,
    resume: Checkpoint | None = None,
    on_round_end: Callable[[RoundEnd], None] | None = None,
) -> dict:
    """Run ``cfg`` (one virtual SuperNode per participating partition); return results.json.

    ``ray_address`` (or ``RAY_ADDRESS``) joins an existing Ray cluster instead of starting
    a local one. ``resume`` is a loaded checkpoint (see :func:`load_resume`);
    ``on_round_end`` is called in this process after every round's central evaluation.
    Raises RuntimeError if the run produced no results.
    """
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.simulation import run_simulation  # importing flwr resets its logger level

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)

    from fedqdnn.federated.client_app import app as client_app

    preflight(cfg, resume, gpus_per_client)
    out = Path(out)
    results_file = out / "results.json"
    started_before = results_file.stat().st_mtime_ns if results_file.exists() else None
    init_args: dict[str, object] = {
        "logging_level": "WARNING" if verbose else "ERROR",
        "log_to_driver": verbose,
    }
    # "local" starts a fresh instance; without it ray.init() would silently join any
    # cluster this machine already runs (e.g. after `ray start --head`).
    init_args["address"] = ray_address or os.environ.get("RAY_ADDRESS") or "local"
    backend_config = {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client},
        "init_args": init_args,
    }
    spec = RunSpec(cfg, out, resume, on_round_end, reply_poll_seconds=0.005)
    run_simulation(
        server_app=build_app(spec),
        client_app=client_app,
        num_supernodes=cfg.num_nodes,
        backend_config=backend_config,  # type: ignore[arg-type]
        verbose_logging=verbose,
    )
    release_cuda_memory()  # the server's model and test set (client actors have ended)
    if not results_file.exists() or results_file.stat().st_mtime_ns == started_before:
        raise RuntimeError(f"the simulation wrote no results to {results_file}; see the log")
    return json.loads(results_file.read_text())


def preflight(
    cfg: FederatedConfig, resume: Checkpoint | None = None, gpus_per_client: float = 0.0
) -> None:
    """Fail before any Ray or Flower work: the server's device exists here, clients told to use
    CUDA get a GPU share, data files present, checkpoint fits the model."""
    select_device(cfg.device)  # the server computes in this process
    if cfg.device.startswith("cuda") and not gpus_per_client > 0:
        raise ValueError(
            f"device = {cfg.device!r} needs --gpus-per-client > 0: Ray gives a client actor a "
            "GPU only through its share (or use device = auto)"
        )
    model = initial_model(cfg)  # loads (and caches) the data set: missing files fail here
    if resume is not None:
        check_matches(resume.arrays, {k: v.numpy() for k, v in model.state_dict().items()})


def load_resume(directory: Path) -> tuple[FederatedConfig, Checkpoint]:
    """Config and checkpoint of an interrupted run in ``directory`` (``--resume``)."""
    checkpoint = load_checkpoint(Path(directory) / CHECKPOINT_DIR)
    return from_flat(checkpoint.config), checkpoint
