"""Run the Flower apps on Flower's simulation engine (Ray) in this process.

Everything that can be checked is checked once, before Ray starts: the resources per client
against the machine or the cluster (:func:`~fedqdnn.federated.resources.checked_resources`),
then :func:`prepare`: the torch device, the output folder
(:mod:`fedqdnn.federated.run_folder`), the data files, the fleet against the data and the
memory, the checkpoint of a resume against its run and model. What passes is a
:class:`PreparedRun`, which :func:`run_prepared` runs without checking again: in this process
(:func:`simulate`) or, for ``fedqdnn simulate``, in a supervised child process
(:mod:`fedqdnn.federated.supervisor`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from fedqdnn.accelerator import release_cuda_memory, select_device
from fedqdnn.config import FederatedConfig, from_flat
from fedqdnn.console import logger
from fedqdnn.federated.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_matches,
    checkpoint_config,
    load_checkpoint,
)
from fedqdnn.federated.report import read_results
from fedqdnn.federated.resources import (
    Resources,
    available_memory_bytes,
    checked_resources,
    client_fit_problem,
)
from fedqdnn.federated.run_folder import (
    check_belongs,
    check_folder,
    claim,
    run_identity,
)
from fedqdnn.federated.server_app import RoundEnd, RunSpec, build_app
from fedqdnn.fleet import check_fleet, initial_model, run_data
from fedqdnn.schema import CHECKPOINT_DIR, RESULTS_FILE, RunResults


@dataclass(frozen=True)
class PreparedRun:
    """A run that passed every check (:func:`prepare`): what the engine needs and nothing it
    must check again. It crosses into the supervised child as JSON (:meth:`to_json`)."""

    config: FederatedConfig
    out: Path
    resources: Resources
    resume: bool = False  # continue from the checkpoint in ``out`` (checked by prepare)
    verbose: bool = False

    def to_json(self) -> dict:
        return {
            "config": self.config.to_flat(),
            "out": str(self.out),
            "resources": asdict(self.resources),
            "resume": self.resume,
            "verbose": self.verbose,
        }

    @classmethod
    def from_json(cls, data: dict) -> PreparedRun:
        """The run :meth:`to_json` describes (its config parsed, not checked again)."""
        return cls(
            from_flat(data["config"]),
            Path(data["out"]),
            Resources(**data["resources"]),
            bool(data["resume"]),
            bool(data["verbose"]),
        )


def simulate(
    cfg: FederatedConfig,
    out: Path,
    resources: Resources | None = None,
    verbose: bool = False,
    resume: bool = False,
    on_round_end: Callable[[RoundEnd], None] | None = None,
    overwrite: bool = False,
) -> RunResults:
    """Run ``cfg`` in this process (one virtual SuperNode per participating partition, or
    the node pool); return its results.

    ``resources`` (default: 1 CPU per client, a private local Ray) are checked here;
    ``resume`` continues the run in ``out`` from its checkpoint; a folder holding a run is
    otherwise refused unless ``overwrite``. ``on_round_end`` is called after every round. The
    server's progress lines go to the ``fedqdnn`` loggers (:mod:`fedqdnn.console`). Raises
    RuntimeError if the run produced no results.
    """
    resources = resources or Resources()
    resources = checked_resources(
        resources.cpus_per_client, resources.gpus_per_client, resources.ray_address
    )
    checkpoint = load_resume(out)[1] if resume else None
    prepared, identity = prepare(cfg, out, resources, checkpoint, overwrite, verbose)
    with claim(prepared.out, resume=resume, overwrite=overwrite, identity=identity):
        connect_ray(prepared.resources, prepared.verbose)
        return run_prepared(prepared, checkpoint, on_round_end)


def prepare(
    cfg: FederatedConfig,
    out: Path,
    resources: Resources,
    checkpoint: Checkpoint | None = None,
    overwrite: bool = False,
    verbose: bool = False,
) -> tuple[PreparedRun, dict | None]:
    """Every check a run needs before Ray, once, in the order of their cost: the server's
    torch device, the output folder, the data files, the fleet against the data and the
    memory, and the checkpoint to resume (``checkpoint``, from :func:`load_resume`) against
    the run and the model. ``resources`` come checked (:func:`checked_resources`). Returns the
    prepared run and the identity a new run writes to its folder (None for a resume)."""
    out = Path(out)
    check_device(cfg, resources.gpus_per_client)
    check_folder(out, resume=checkpoint is not None, overwrite=overwrite)
    model = initial_model(cfg)  # loads (and caches) the data set: missing files fail here
    check_fleet(cfg, available_memory_bytes())
    if untrained := cfg.untrained_modes():  # a baseline's choice: said, and in results.json
        logger(__name__).warning(
            "no participating device trains the %s-bit mode(s) (train-modes = %s); their "
            "accuracy is that of untrained modes",
            ",".join(map(str, untrained)),
            cfg.train_modes.value,
        )
    if checkpoint is not None:
        if from_flat(checkpoint.config) != cfg:
            raise CheckpointError(f"the checkpoint in {out} is of another config")
        reference = {k: v.numpy() for k, v in model.state_dict().items()}
        check_matches(checkpoint.arrays, reference)
        if cfg.serve_ema and checkpoint.round > 0:  # the served average goes on from it
            check_matches(checkpoint.served_arrays, reference)
    identity = None if checkpoint is not None else run_identity(cfg, run_data(cfg).fingerprint)
    return PreparedRun(cfg, out, resources, checkpoint is not None, verbose), identity


def run_prepared(
    prepared: PreparedRun,
    checkpoint: Checkpoint | None = None,
    on_round_end: Callable[[RoundEnd], None] | None = None,
) -> RunResults:
    """Run a prepared run on Flower's simulation engine, on the Ray the caller connected
    (:func:`connect_ray`), and shut Ray down. The caller holds the output folder."""
    if prepared.resume and checkpoint is None:  # in the supervised child: load, not check
        checkpoint = load_checkpoint(prepared.out / CHECKPOINT_DIR)
    spec = RunSpec(
        prepared.config,
        prepared.out,
        checkpoint,
        on_round_end,
        reply_poll_seconds=0.005,  # an in-memory grid: cheap to ask for replies often
    )
    return _run_engine(spec, prepared.resources, prepared.verbose)


def check_device(cfg: FederatedConfig, gpus_per_client: float) -> None:
    """The server's device exists in this process (it computes here), and clients told to use
    CUDA get a GPU share (Ray gives a client actor a GPU only through it)."""
    select_device(cfg.device)
    if cfg.device.startswith("cuda") and not gpus_per_client > 0:
        raise ValueError(
            f"device = {cfg.device!r} needs --gpus-per-client > 0: Ray gives a client actor a "
            "GPU only through its share (or use device = auto)"
        )


def load_resume(directory: Path) -> tuple[FederatedConfig, Checkpoint]:
    """Config and checkpoint of an interrupted run in ``directory`` (``--resume``), checked:
    its schema, its round within the run, and that it belongs to the run in ``directory``."""
    where = Path(directory) / CHECKPOINT_DIR
    checkpoint = load_checkpoint(where)
    cfg = checkpoint_config(checkpoint, where)
    check_belongs(Path(directory), cfg, run_data(cfg).fingerprint)
    return cfg, checkpoint


def connect_ray(resources: Resources, verbose: bool) -> None:
    """Start a private local Ray (or join the cluster at ``resources.ray_address``) as Flower
    would, then refuse resources per client that no node of it can give (Flower would wait
    forever)."""
    import ray

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not ray.is_initialized():
        # Workers import this checkout, as Flower's RayBackend.init_ray arranges.
        pythonpath = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
        os.environ["PYTHONPATH"] = pythonpath
        ray.init(
            # "local" starts a fresh instance; without it ray.init() would silently join any
            # cluster this machine already runs (e.g. after `ray start --head`).
            address=resources.ray_address or "local",
            include_dashboard=False,
            logging_level="WARNING" if verbose else "ERROR",
            log_to_driver=verbose,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        )
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n.get("Resources")]
    problem = client_fit_problem(nodes, resources.cpus_per_client, resources.gpus_per_client)
    if problem:
        ray.shutdown()
        raise ValueError(problem)


def _run_engine(spec: RunSpec, resources: Resources, verbose: bool) -> RunResults:
    from flwr.simulation import run_simulation  # importing flwr resets its logger level

    if not verbose:  # at least ERROR (the supervised child silences it entirely)
        flwr_log = logging.getLogger("flwr")
        flwr_log.setLevel(max(flwr_log.level, logging.ERROR))
    import ray

    from fedqdnn.federated.client_app import app as client_app

    results_file = spec.out / RESULTS_FILE
    client_resources = {
        "num_cpus": resources.cpus_per_client,
        "num_gpus": resources.gpus_per_client,
    }
    try:
        run_simulation(
            server_app=build_app(spec),
            client_app=client_app,
            num_supernodes=spec.config.num_nodes,
            backend_config={"client_resources": client_resources},  # type: ignore[arg-type]
            verbose_logging=verbose,
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        release_cuda_memory()  # the server's model and test set (client actors have ended)
    if not results_file.exists():
        raise RuntimeError(f"the simulation wrote no results to {results_file}; see the log")
    return read_results(results_file)
