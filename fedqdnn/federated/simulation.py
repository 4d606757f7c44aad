"""Run the Flower apps on Flower's simulation engine (Ray) in this process.

Everything that can be checked is checked before Ray starts (:func:`prepare`): the resources
per client against the machine (or the cluster address against a TCP probe), the data files,
the fleet against the data and the memory, the checkpoint of a resume against its run, and
the output folder (:mod:`fedqdnn.federated.run_folder`). ``fedqdnn simulate`` runs
:func:`simulate` in a supervised child process (:mod:`fedqdnn.federated.supervisor`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from fedqdnn.accelerator import release_cuda_memory, select_device
from fedqdnn.config import FederatedConfig
from fedqdnn.federated.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    CheckpointError,
    check_matches,
    checkpoint_config,
    load_checkpoint,
)
from fedqdnn.federated.resources import (
    available_memory_bytes,
    check_client_resources,
    check_local_resources,
    check_ray_address,
    client_fit_problem,
)
from fedqdnn.federated.run_folder import (
    RESULTS_FILE,
    check_belongs,
    check_folder,
    claim,
    run_identity,
)
from fedqdnn.federated.server_app import RoundEnd, RunSpec, build_app
from fedqdnn.fleet import check_fleet, initial_model, run_data


def simulate(
    cfg: FederatedConfig,
    out: Path,
    ray_address: str | None = None,
    cpus_per_client: float = 1,
    gpus_per_client: float = 0.0,
    verbose: bool = False,
    resume: bool = False,
    on_round_end: Callable[[RoundEnd], None] | None = None,
    overwrite: bool = False,
    folder_claimed: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run ``cfg`` (one virtual SuperNode per participating partition); return results.json.

    ``ray_address`` (or ``RAY_ADDRESS``) joins an existing Ray cluster instead of starting
    a local one. ``resume`` continues the run in ``out`` from its checkpoint; a folder holding
    a run is otherwise refused unless ``overwrite``. The folder is locked for the run unless
    the caller already holds it (``folder_claimed``). ``on_round_end`` is called in this
    process after every round; ``log`` receives the server's progress lines (default:
    stderr). Raises RuntimeError if the run produced no results.
    """
    ray_address = ray_address or os.environ.get("RAY_ADDRESS")
    out = Path(out)
    checkpoint, identity = prepare(
        cfg,
        out,
        resume=resume,
        overwrite=overwrite,
        ray_address=ray_address,
        cpus_per_client=cpus_per_client,
        gpus_per_client=gpus_per_client,
        check_out=not folder_claimed,
    )
    folder = (
        nullcontext()
        if folder_claimed
        else claim(out, resume=resume, overwrite=overwrite, identity=identity)
    )
    with folder:
        spec = RunSpec(
            cfg,
            out,
            checkpoint,
            on_round_end,
            reply_poll_seconds=0.005,  # an in-memory grid: cheap to ask for replies often
            **({"log": log} if log else {}),
        )
        return _run_engine(spec, ray_address, cpus_per_client, gpus_per_client, verbose)


def prepare(
    cfg: FederatedConfig,
    out: Path,
    *,
    resume: bool,
    overwrite: bool,
    ray_address: str | None,
    cpus_per_client: float,
    gpus_per_client: float,
    check_out: bool = True,
) -> tuple[Checkpoint | None, dict | None]:
    """Every check that needs no Ray, in the order of their cost; returns the checkpoint to
    resume (or None) and the run identity a new run writes to its folder (or None)."""
    check_resources(ray_address, cpus_per_client, gpus_per_client)
    check_device(cfg, gpus_per_client)
    if check_out:
        check_folder(out, resume=resume, overwrite=overwrite)
    checkpoint = preflight(cfg, out if resume else None)
    identity = None if resume else run_identity(cfg, run_data(cfg).fingerprint)
    return checkpoint, identity


def check_resources(
    ray_address: str | None, cpus_per_client: float, gpus_per_client: float
) -> None:
    """Resources per client this machine can give (no ``ray_address``), or a cluster address
    that answers; see :mod:`fedqdnn.federated.resources`."""
    check_client_resources(cpus_per_client, gpus_per_client)
    if ray_address:
        check_ray_address(ray_address)
    else:
        check_local_resources(cpus_per_client, gpus_per_client)


def check_device(cfg: FederatedConfig, gpus_per_client: float) -> None:
    """The server's device exists in this process (it computes here), and clients told to use
    CUDA get a GPU share (Ray gives a client actor a GPU only through it)."""
    select_device(cfg.device)
    if cfg.device.startswith("cuda") and not gpus_per_client > 0:
        raise ValueError(
            f"device = {cfg.device!r} needs --gpus-per-client > 0: Ray gives a client actor a "
            "GPU only through its share (or use device = auto)"
        )


def preflight(cfg: FederatedConfig, resume_from: Path | None = None) -> Checkpoint | None:
    """Fail before any Ray or Flower work: data files present, the fleet fits the data and
    the memory, and (resume) the checkpoint belongs to the run and fits the model."""
    model = initial_model(cfg)  # loads (and caches) the data set: missing files fail here
    check_fleet(cfg, available_memory_bytes())
    if resume_from is None:
        return None
    resumed, checkpoint = load_resume(resume_from)
    if resumed != cfg:
        raise CheckpointError(f"the checkpoint in {resume_from} is of another config")
    check_matches(checkpoint.arrays, {k: v.numpy() for k, v in model.state_dict().items()})
    return checkpoint


def load_resume(directory: Path) -> tuple[FederatedConfig, Checkpoint]:
    """Config and checkpoint of an interrupted run in ``directory`` (``--resume``), checked:
    its schema, its round within the run, and that it belongs to the run in ``directory``."""
    where = Path(directory) / CHECKPOINT_DIR
    checkpoint = load_checkpoint(where)
    cfg = checkpoint_config(checkpoint, where)
    check_belongs(Path(directory), cfg, run_data(cfg).fingerprint)
    return cfg, checkpoint


def connect_ray(
    ray_address: str | None, cpus_per_client: float, gpus_per_client: float, verbose: bool
) -> None:
    """Start a private local Ray (or join ``ray_address``) as Flower would, then refuse
    resources per client that no node of it can give (Flower would wait forever)."""
    import ray

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not ray.is_initialized():
        # Workers import this checkout, as Flower's RayBackend.init_ray arranges.
        pythonpath = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
        os.environ["PYTHONPATH"] = pythonpath
        ray.init(
            # "local" starts a fresh instance; without it ray.init() would silently join any
            # cluster this machine already runs (e.g. after `ray start --head`).
            address=ray_address or "local",
            include_dashboard=False,
            logging_level="WARNING" if verbose else "ERROR",
            log_to_driver=verbose,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        )
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n.get("Resources")]
    problem = client_fit_problem(nodes, cpus_per_client, gpus_per_client)
    if problem:
        ray.shutdown()
        raise ValueError(problem)


def _run_engine(
    spec: RunSpec,
    ray_address: str | None,
    cpus_per_client: float,
    gpus_per_client: float,
    verbose: bool,
) -> dict:
    from flwr.simulation import run_simulation  # importing flwr resets its logger level

    if not verbose:  # at least ERROR (the supervised child silences it entirely)
        flwr_log = logging.getLogger("flwr")
        flwr_log.setLevel(max(flwr_log.level, logging.ERROR))
    import ray

    from fedqdnn.federated.client_app import app as client_app

    results_file = spec.out / RESULTS_FILE
    connect_ray(ray_address, cpus_per_client, gpus_per_client, verbose)
    try:
        run_simulation(
            server_app=build_app(spec),
            client_app=client_app,
            num_supernodes=spec.config.num_nodes,
            backend_config={  # type: ignore[arg-type]
                "client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client}
            },
            verbose_logging=verbose,
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        release_cuda_memory()  # the server's model and test set (client actors have ended)
    if not results_file.exists():
        raise RuntimeError(f"the simulation wrote no results to {results_file}; see the log")
    return json.loads(results_file.read_text())
