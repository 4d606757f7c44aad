"""End to end: a real SIGINT and a real SIGTERM stop a running simulation within seconds, in
one line, with its checkpoint kept and no process of the run left; one run per folder.

Two Flower + Ray runs: the first is interrupted (SIGINT) after its first checkpoint, while it
runs a second simulate on the same folder is refused; the second resumes the first and is
stopped (SIGTERM) while under way. Then a cluster address that never answers ends a run in
one line (no Flower run). Only processes these tests started are ever killed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from fedqdnn.federated.run_folder import checkpoint_round
from fedqdnn.federated.simulation import load_resume
from fedqdnn.federated.supervisor import RAY_CONNECT_SECONDS, session_members
from tests.e2e_helpers import BIN, REPO, run

pytestmark = pytest.mark.e2e
ROUNDS = 40  # far more than the test lets run: it is always stopped under way
ARGS = ["--num-clients", "2", "--rounds", str(ROUNDS), "--local-epochs", "1"]
EXIT_WITHIN_SECONDS = 10.0
OURS = re.compile(rf"^(round \d+/{ROUNDS}: central accuracy .*|resuming after round \d+)$")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Simulation:
    """``fedqdnn simulate`` in its own session; its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "fedqdnn"), "simulate", *args],
            cwd=REPO,
            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.seen: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def processes(self) -> set[int]:
        """Live processes of this run: the CLI's session and its child's session (Ray)."""
        try:
            children = [child.pid for child in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            children = []
        found = set(session_members(self.proc.pid))
        for child in children:
            found |= set(session_members(child))
        self.seen |= found
        return found

    def wait_until(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and self.proc.poll() is None and time.monotonic() < deadline:
            self.processes()
            time.sleep(0.2)
        assert condition(), "\n".join(self.lines[-30:])

    def stop(self, sig: signal.Signals) -> tuple[int, float]:
        """Send ``sig``; the exit status and the seconds until the process ended."""
        sent = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        seconds = time.monotonic() - sent
        self._reader.join(timeout=10)
        return code, seconds

    def cleanup(self) -> None:
        """Kill whatever of this run is still alive (only after a failed assertion)."""
        for pid in self.seen | self.processes():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _check_stopped(sim: Simulation, code: int, seconds: float, name: str, out: Path) -> int:
    """Exit status, time, the one line, no dump, nothing left; returns the kept round."""
    assert code == 128 + signal.Signals[name], "\n".join(sim.lines[-30:])
    assert seconds < EXIT_WITHIN_SECONDS, seconds
    *progress, last = sim.lines
    assert all(OURS.match(line) for line in progress), progress  # no Python or Ray dump
    kept = checkpoint_round(out)
    pattern = (
        rf"fedqdnn: interrupted by {name} in round (\d+) of {ROUNDS}; the checkpoint of round "
        rf"{kept} is kept, continue with: fedqdnn simulate --resume "
        + re.escape(shlex.quote(str(out)))
    )
    reached = re.fullmatch(pattern, last)
    assert reached and kept < int(reached.group(1)), last
    time.sleep(0.5)
    assert not [pid for pid in sim.seen if _alive(pid)], "processes of the run left behind"
    return kept


def test_sigint_and_sigterm_stop_a_run_and_keep_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    first = Simulation(*ARGS, "--out", str(out))
    try:
        first.wait_until(lambda: checkpoint_round(out) is not None, timeout=420)
        assert len(first.processes()) > 3  # the CLI, its child, Ray's GCS, raylet, workers

        code, log = run([str(BIN / "fedqdnn"), "simulate", *ARGS, "--out", str(out)], 120)
        assert code == 2 and log.strip().count("\n") == 0, log
        assert f"is in use by another fedqdnn run (pid {first.proc.pid})" in log

        code, seconds = first.stop(signal.SIGINT)
        kept = _check_stopped(first, code, seconds, "SIGINT", out)
    finally:
        first.cleanup()

    second = Simulation("--resume", str(out))
    rounds_seen: list[int | None] = []

    def checkpointed_past_kept() -> bool:
        rounds_seen.append(checkpoint_round(out))
        return (rounds_seen[-1] or 0) > kept

    try:
        second.wait_until(lambda: f"resuming after round {kept}" in second.lines, timeout=300)
        second.wait_until(checkpointed_past_kept, timeout=300)  # it checkpoints its own rounds
        code, seconds = second.stop(signal.SIGTERM)
        again = _check_stopped(second, code, seconds, "SIGTERM", out)
    finally:
        second.cleanup()
    assert None not in rounds_seen and rounds_seen == sorted(rounds_seen), rounds_seen
    assert kept <= rounds_seen[0] and rounds_seen[-1] > kept  # checkpoints never go back
    assert again >= rounds_seen[-1]

    code, log = run([str(BIN / "fedqdnn"), "simulate", *ARGS, "--out", str(out)], 120)
    assert code == 2 and log.strip().count("\n") == 0, log
    assert f"already holds an unfinished run (checkpoint of round {again})" in log
    cfg, checkpoint = load_resume(out)  # what --resume would continue
    assert checkpoint.round == again and cfg.rounds == ROUNDS and cfg.num_clients == 2
    # every round before the checkpoint exactly once, across the SIGINT and the resume
    assert sorted(checkpoint.history.round_seconds) == list(range(1, again + 1))
    assert sorted(checkpoint.history.evaluate_metrics_serverapp) == list(range(again + 1))


def test_a_ray_address_that_never_answers_fails_in_one_line(tmp_path):
    """The port accepts TCP connections (the probe passes) but speaks no Ray: Ray would wait
    for it forever; the run ends after the connection deadline, in one line."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        sim = Simulation(*ARGS, "--ray-address", address, "--out", str(tmp_path / "run"))
        try:
            sim.wait_until(lambda: sim.proc.poll() is not None, timeout=300)
            sim._reader.join(timeout=10)
        finally:
            sim.cleanup()
    assert sim.proc.returncode == 2
    assert sim.lines == [
        f"fedqdnn: error: --ray-address {address}: no Ray cluster answered within "
        f"{RAY_CONNECT_SECONDS:.0f}s; check the address (`ray status` on the head node)"
    ]
    assert not [pid for pid in sim.seen if _alive(pid)]
    assert not (tmp_path / "run" / "results.json").exists()
