"""What the machine or the Ray cluster can give a run, checked before the run asks for it.

Ray never fails a request it cannot grant: an actor asking for a GPU that does not exist waits
forever, and ``ray.init`` retries an unreachable address forever. So the CPUs and GPUs per
client are checked against this machine before Ray starts (and against every node of the
cluster right after connecting), and a cluster address is probed with a plain TCP connection
first. Every failure is one line naming what was asked and what exists.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ADDRESS_PROBE_SECONDS = 5.0  # TCP connect timeout of the --ray-address probe


@dataclass(frozen=True)
class Resources:
    """What Ray reserves per client actor, and the cluster to join (None: a private local
    Ray). Build it with :func:`checked_resources`, which checks it once."""

    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    ray_address: str | None = None


def checked_resources(
    cpus_per_client: float = 1.0, gpus_per_client: float = 0.0, ray_address: str | None = None
) -> Resources:
    """The resources of a run, checked: the values themselves, then this machine (no
    address; ``RAY_ADDRESS`` counts as one) or a cluster address that answers."""
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    check_client_resources(cpus_per_client, gpus_per_client)
    if address:
        check_ray_address(address, from_environment=not ray_address)
    else:
        check_local_resources(cpus_per_client, gpus_per_client)
    return Resources(cpus_per_client, gpus_per_client, address)


def check_client_resources(cpus_per_client: float, gpus_per_client: float) -> None:
    """The values themselves: CPUs a finite number > 0, GPUs a finite number >= 0."""
    if not (math.isfinite(cpus_per_client) and cpus_per_client > 0):
        raise ValueError(
            f"--cpus-per-client = {cpus_per_client!r} is not allowed: a finite number > 0"
        )
    if not (math.isfinite(gpus_per_client) and gpus_per_client >= 0):
        raise ValueError(
            f"--gpus-per-client = {gpus_per_client!r} is not allowed: a finite number >= 0"
        )


def local_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as a container sees it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_gpus() -> int:
    """CUDA devices torch can use on this machine."""
    import torch

    return torch.cuda.device_count()


def available_memory_bytes() -> int | None:
    """Memory available to new work (``MemAvailable`` of /proc/meminfo); None if unknown."""
    try:
        for line in open("/proc/meminfo").read().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def client_fit_problem(
    nodes: Sequence[Mapping[str, float]], cpus_per_client: float, gpus_per_client: float
) -> str | None:
    """Why no client actor fits on any node (each node's {"CPU": n, "GPU": n}), or None.

    Flower sizes its actor pool per node: a node hosts floor(CPU / cpus) actors, further
    limited by floor(GPU / gpus) when clients ask for GPUs.
    """
    for node in nodes:
        fits_cpu = node.get("CPU", 0) >= cpus_per_client
        fits_gpu = gpus_per_client == 0 or node.get("GPU", 0) >= gpus_per_client
        if fits_cpu and fits_gpu:
            return None
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    where = "this machine has" if len(nodes) == 1 else f"the largest of {len(nodes)} nodes has"
    return (
        f"--cpus-per-client {cpus_per_client:g} --gpus-per-client {gpus_per_client:g}: no client "
        f"fits, {where} {most_cpus:g} CPUs and {most_gpus:g} GPUs; lower the resources per client"
    )


def check_local_resources(cpus_per_client: float, gpus_per_client: float) -> None:
    """Refuse, before Ray starts, resources per client that this machine cannot give."""
    gpus = local_gpus() if gpus_per_client > 0 else 0
    node = {"CPU": local_cpus(), "GPU": gpus}
    problem = client_fit_problem([node], cpus_per_client, gpus_per_client)
    if problem:
        raise ValueError(problem)


def check_ray_address(address: str, from_environment: bool = False) -> None:
    """Refuse, within :data:`ADDRESS_PROBE_SECONDS`, a ``HOST:PORT`` nobody listens on; the
    error names where the address came from (``--ray-address``, or the ``RAY_ADDRESS``
    variable, which a user who gave no address would not think of).

    Other forms (``auto``, ``ray://...``) are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        if int(port) > 65535:
            raise OverflowError
        with socket.create_connection((host.strip("[]"), int(port)), ADDRESS_PROBE_SECONDS):
            return
    except OverflowError:
        reason = "the port is not in 0..65535"
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
    if from_environment:
        raise ValueError(
            f"RAY_ADDRESS={address} (from the environment): cannot reach a Ray cluster there "
            f"({reason}); start one with `ray start --head` or unset RAY_ADDRESS to run a "
            "private local one"
        )
    raise ValueError(
        f"--ray-address {address}: cannot reach a Ray cluster there ({reason}); start one with "
        "`ray start --head` or drop --ray-address to run a private local one"
    )
