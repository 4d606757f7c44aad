"""End to end: the secured deployment of docs/deployment.md on loopback (TLS, SuperNode auth)."""

import json

import pytest

from tests.deployment_harness import (
    MODES,
    PLACEHOLDERS,
    documented_blocks,
    documented_command,
    documented_config,
    run_federation,
)

NODES = 3


def _node_configs() -> list[str]:
    return [f"partition-id={k} num-partitions={NODES}" for k in range(NODES)]


def _run_config(out) -> str:
    return f"num-clients={NODES} max-nodes=0 rounds=2 dataset='digits' out-dir='{out}'"


def test_every_documented_step_resolves():
    """Each mode's blocks exist and use only placeholders the harness fills (no Flower run)."""
    values = {name: f"<{name}>" for name in PLACEHOLDERS}
    steps = set(documented_blocks())
    expected = {"run", "status", "log", "register", "config", "config-tls"}
    expected |= {
        f"{role}{suffix}" for role in ("superlink", "supernode") for suffix in ("", "-tls", "-auth")
    }
    assert steps == expected
    assert len(MODES) == 3
    for step in steps - {"config", "config-tls"}:
        argv = documented_command(step, **values)
        assert argv[0] in {"flower-superlink", "flower-supernode", "flwr"}, argv
    supernode = documented_command("supernode-auth", **values)
    assert supernode[supernode.index("--node-config") + 1] == "<NODE_CONFIG>"
    assert "--enable-supernode-auth" in documented_command("superlink-auth", **values)
    assert 'root-certificates = "<CERTS_DIR>/ca.crt"' in documented_config("config-tls", **values)


@pytest.mark.e2e
def test_tls_federation_completes(tmp_path):
    out = tmp_path / "out"
    result = run_federation(tmp_path, _node_configs(), _run_config(out), mode="tls", timeout=400)
    assert result.status == "finished:completed", result.log[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert len(results["per_device"]) == NODES
    assert results["config"]["rounds"] == 2


@pytest.mark.e2e
def test_supernode_auth_refuses_unregistered_node(tmp_path):
    out = tmp_path / "out"
    result = run_federation(
        tmp_path,
        _node_configs(),
        _run_config(out),
        mode="auth",
        unregistered_node_configs=(f"partition-id=0 num-partitions={NODES}",),
        timeout=400,
    )
    assert result.status == "finished:completed", result.log[-3000:]
    assert len(json.loads((out / "results.json").read_text())["per_device"]) == NODES
    assert len(result.refused) == 1
    assert "[code: 2004] Failed to activate SuperNode" in result.refused[0], result.refused[0][
        -3000:
    ]
