"""End to end on a two-node Ray cluster: `fedqdnn simulate --ray-address` uses both nodes.

The cluster (head + one worker node, 1 CPU each) is started on this machine with Ray's own
``ray.cluster_utils.Cluster``; with ``--cpus-per-client 1`` Flower builds one ClientApp actor
per CPU, so one actor must land on each node. Where the clients ran is read afterwards from
Ray's GCS through this test's own driver connection: the actor table (node of each
``ClientAppActor``) and the task events (node that executed each ``ClientAppActor.run``,
one per Flower message). ``ray.util.state`` would say the same but needs the Ray dashboard
(``ray[default]``), which ``flwr[simulation]`` does not install, so the GCS tables are read
directly (``ray._private.state``, a Ray-internal API).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time

import pytest

from tests.e2e_helpers import BIN, run

pytestmark = pytest.mark.e2e
ray = pytest.importorskip("ray")
NODE_RESOURCE = {"head": "fedqdnn_test_head", "worker": "fedqdnn_test_worker"}


@pytest.fixture
def two_node_cluster(monkeypatch):
    """Head + worker node on this machine; yields (cluster, {"head": id, "worker": id})."""
    from ray.cluster_utils import Cluster

    # A private Ray temp dir: Cluster writes its address to <tmp>/ray/ray_current_cluster,
    # where any address-less ray.init() on this machine (another run, another user's test)
    # would otherwise find it and join this cluster. Short path: Ray's unix sockets live
    # below it (107-character limit).
    tmp = tempfile.mkdtemp(prefix="fqray", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {NODE_RESOURCE["head"]: 1}},
    )
    try:
        worker = cluster.add_node(num_cpus=1, resources={NODE_RESOURCE["worker"]: 1})
        cluster.wait_for_nodes()
        yield cluster, {"head": cluster.head_node.node_id, "worker": worker.node_id}
    finally:
        if ray.is_initialized():
            ray.shutdown()  # our driver only; the cluster goes down below
        cluster.shutdown()  # stops exactly the nodes this fixture started
        shutil.rmtree(tmp, ignore_errors=True)


def _clientapp_actor_nodes() -> dict[str, str]:
    """{actor id: node id} of every ClientAppActor the cluster ever ran (dead ones too)."""
    from ray._private import state

    return {
        actor_id: info["Address"]["NodeID"]
        for actor_id, info in state.actors().items()
        if info["ActorClassName"] == "ClientAppActor"
    }


def _clientapp_run_task_nodes() -> list[str]:
    """Node id of each executed ``ClientAppActor.run`` task (one per Flower message)."""
    from ray._private import state
    from ray.core.generated import gcs_pb2

    nodes = []
    for raw in state.state._connect_and_get_accessor().get_task_events():
        event = gcs_pb2.TaskEvents.FromString(raw)
        if event.task_info.name == "ClientAppActor.run" and event.state_updates.node_id:
            nodes.append(event.state_updates.node_id.hex())
    return nodes


def test_simulate_on_two_node_cluster_runs_clients_on_both_nodes(two_node_cluster, tmp_path):
    cluster, node_ids = two_node_cluster
    both = set(node_ids.values())
    out = tmp_path / "sim"
    cmd = [str(BIN / "fedqdnn"), "simulate", "--ray-address", cluster.address]
    cmd += ["--num-clients", "4", "--rounds", "1", "--dataset", "digits", "--out", str(out)]
    code, log = run([*cmd, "--cpus-per-client", "1"], timeout=240)
    assert code == 0, log[-3000:]
    first = json.loads((out / "results.json").read_text())["history"][0]
    assert len(first["clients"]) == 4 and first["rejected"] == []

    # run_simulation ends with ray.shutdown(): that disconnected the CLI's driver only.
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    assert {n["NodeID"] for n in ray.nodes() if n["Alive"]} == both

    @ray.remote(num_cpus=0)
    def node_id() -> str:
        return ray.get_runtime_context().get_node_id()

    for name, resource in NODE_RESOURCE.items():  # the cluster still runs work on each node
        assert ray.get(node_id.options(resources={resource: 0.01}).remote()) == node_ids[name]

    actors = _clientapp_actor_nodes()
    assert len(actors) == 2 and set(actors.values()) == both, actors

    # Task events reach the GCS asynchronously (workers flush about once a second).
    deadline, ran = time.monotonic() + 15, []
    while time.monotonic() < deadline:
        ran = _clientapp_run_task_nodes()
        if set(ran) == both:  # up to 8: 4 train + 4 evaluate messages
            break
        time.sleep(0.5)
    per_node = {name: ran.count(nid) for name, nid in node_ids.items()}
    assert set(ran) == both and all(per_node.values()), per_node
