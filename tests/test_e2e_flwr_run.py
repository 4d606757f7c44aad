"""End to end: ``flwr run .`` on the local simulation engine, as the README documents."""

import json
import os
import signal
import time

import psutil
import pytest

from tests.e2e_helpers import BIN, free_port, run

pytestmark = pytest.mark.e2e


def _superlinks_of(flwr_home) -> list[int]:
    """PIDs of flower-superlink processes whose command line names ``flwr_home``."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "flower-superlink" in cmdline and str(flwr_home) in cmdline:
            pids.append(proc.pid)
    return pids


def test_flwr_run_completes_with_documented_command(tmp_path):
    home, out = tmp_path / "flwr-home", tmp_path / "out"
    env = {
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
    }
    flwr = str(BIN / "flwr")
    try:
        code, text = run(
            [
                flwr,
                "run",
                ".",
                "--federation-config",
                "num-supernodes=6 client-resources-num-cpus=1",
                "--run-config",
                f"num-clients=6 rounds=2 out-dir='{out}'",
                "--format",
                "json",
            ],
            timeout=120,
            env=env,
        )
        submitted = json.loads(text[text.index("{") :])
        assert code == 0 and submitted["success"], text
        status, deadline = "", time.monotonic() + 300
        while time.monotonic() < deadline:
            _, listing = run(
                [flwr, "ls", "--run-id", submitted["run-id"], "--format", "json"],
                timeout=60,
                env=env,
            )
            status = json.loads(listing[listing.index("{") :])["runs"][0]["status"]
            if status.startswith("finished"):
                break
            time.sleep(2)
        assert status == "finished:completed", status
        results = json.loads((out / "results.json").read_text())
        assert len(results["per_device"]) == 6
        assert results["config"]["rounds"] == 2
    finally:
        for pid in _superlinks_of(home):  # stop only the SuperLink this test started
            os.kill(pid, signal.SIGTERM)
        time.sleep(1)
        for pid in _superlinks_of(home):
            os.kill(pid, signal.SIGKILL)
        assert not _superlinks_of(home)
