"""The secured deployment of docs/deployment.md on loopback (TLS + SuperNode auth, end to end),
and a check that every documented step resolves."""

import json

import pytest

from tests.deployment_harness import (
    MODES,
    PLACEHOLDERS,
    documented_blocks,
    documented_command,
    documented_config,
    documented_lines,
    run_federation,
)

NODES = 3


def test_every_documented_step_resolves():
    """Each mode's blocks exist and use only placeholders the harness fills (no Flower run)."""
    values = {name: f"<{name}>" for name in PLACEHOLDERS}
    steps = set(documented_blocks())
    expected = {"run", "status", "log", "register", "config", "config-tls"}
    expected |= {"device-data", "node-configs"}
    expected |= {
        f"{role}{suffix}" for role in ("superlink", "supernode") for suffix in ("", "-tls", "-auth")
    }
    assert steps == expected
    assert len(MODES) == 3
    for step in steps - {"config", "config-tls", "node-configs"}:
        argv = documented_command(step, **values)
        assert argv[0] in {"flower-superlink", "flower-supernode", "flwr", "python"}, argv
    supernode = documented_command("supernode-auth", **values)
    assert supernode[supernode.index("--node-config") + 1] == "<NODE_CONFIG>"
    assert "--enable-supernode-auth" in documented_command("superlink-auth", **values)
    assert 'root-certificates = "<CERTS_DIR>/ca.crt"' in documented_config("config-tls", **values)


@pytest.mark.e2e
def test_tls_with_supernode_auth_refuses_an_unregistered_node(tmp_path):
    """The walk-through's federation over TLS with SuperNode authentication: the three
    registered devices complete the run; a fourth, unregistered, is refused."""
    data_dir, out = tmp_path / "data", tmp_path / "out"
    node_configs = documented_lines("node-configs", DATA_DIR=str(data_dir))
    result = run_federation(
        tmp_path,
        node_configs,
        f"fleet='declared' num-clients={NODES} rounds=2 dataset='digits' out-dir='{out}'",
        mode="auth",
        unregistered_node_configs=(node_configs[0],),
        timeout=400,
        prepare={"device-data": {"DATA_DIR": str(data_dir)}},
    )
    assert result.status == "finished:completed", result.log[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert sorted(d["device-name"] for d in results["declared_devices"]) == [
        "jetson",
        "laptop",
        "pi",
    ]
    assert len(results["per_device"]) == NODES
    assert len(result.refused) == 1
    assert "[code: 2004] Failed to activate SuperNode" in result.refused[0], result.refused[0][
        -3000:
    ]
