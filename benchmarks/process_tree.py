"""Measure a workload in a fresh process tree: wall time, peak memory and CPU of the whole
tree (driver, Ray's GCS and raylet, every worker), sampled with psutil; killed on timeout.

Every measured run is a child process started in its own session, so the tree can be ended
whole; children start their own local Ray (``RAY_ADDRESS=local``), never someone else's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from fedqdnn.provenance import load_average_1min

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 420.0
SAMPLE_INTERVAL_S = 0.5


def _tree(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and everything below it (empty once ``root`` is gone)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_seconds(process: psutil.Process) -> float | None:
    """User plus system CPU seconds of ``process`` (not of its children), None if gone."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def _label(process: psutil.Process, previous: str | None) -> str:
    """Short name of a process: Ray's title (``ray::ClientAppActor``), else the program or
    python script name. A worker that was once a ClientAppActor keeps that name."""
    try:
        args = process.cmdline() or [""]
    except psutil.Error:
        return previous or "?"
    first = args[0]
    if first.startswith("ray::"):
        label = first.split()[0].split(".")[0]
    elif "python" in Path(first).name and len(args) > 1:
        script = next((a for a in args[1:] if a.endswith(".py")), "")
        label = Path(script).name or Path(first).name
    else:
        label = Path(first).name
    if previous and previous.startswith("ray::") and previous != "ray::IDLE":
        return previous  # an actor process keeps its class name
    return label


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def _pss(process: psutil.Process) -> int:
    try:
        return process.memory_full_info().pss
    except (psutil.Error, AttributeError):  # gone, or no PSS on this system
        return 0


class TreeSampler(threading.Thread):
    """Samples the memory of a process tree until stopped; remembers every process it saw."""

    def __init__(self, root: int, pss: bool) -> None:
        super().__init__(daemon=True)
        self.root, self.pss = psutil.Process(root), pss
        self.seen: dict[int, psutil.Process] = {}  # pid -> the process (pid reuse is checked)
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds when last sampled
        self.labels: dict[int, str] = {}  # pid -> what it is (driver, ray::ClientAppActor, ...)
        self.peak_rss = self.peak_pss = self.peak_procs = self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(SAMPLE_INTERVAL_S)

    def sample(self) -> None:
        tree = {}
        for process in _tree(self.root):
            cpu = _cpu_seconds(process)
            if cpu is not None:
                tree[process.pid], self.cpu[process.pid] = process, cpu
        if not tree:
            return
        self.seen.update(tree)
        for pid, process in tree.items():
            previous = self.labels.get(pid)
            self.labels[pid] = "driver" if process == self.root else _label(process, previous)
        self.samples += 1
        self.peak_procs = max(self.peak_procs, len(tree))
        self.peak_rss = max(self.peak_rss, sum(_rss(p) for p in tree.values()))
        if self.pss:
            self.peak_pss = max(self.peak_pss, sum(_pss(p) for p in tree.values()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def cpu_seconds(self) -> float:
        """CPU seconds of the tree (each process as last sampled)."""
        return sum(self.cpu.values())

    def cpu_by_label(self) -> dict[str, float]:
        """CPU seconds per kind of process, largest first."""
        out: dict[str, float] = {}
        for pid, cpu in self.cpu.items():
            label = self.labels.get(pid, "?")
            out[label] = out.get(label, 0.0) + cpu
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}

    def kill_leftovers(self, grace: float) -> int:
        """SIGKILL the processes of this tree still alive after ``grace`` s. The root is left
        to its Popen, which reaps it (psutil would take its exit status)."""
        others = [p for p in self.seen.values() if p != self.root]
        _, alive = psutil.wait_procs(others, timeout=grace)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        return len(alive)


class Child:
    """One measurement in a fresh process tree: started on creation, collected by wait()."""

    def __init__(
        self,
        name: str,
        spec: dict,
        work: Path,
        pss: bool = False,
        check: Callable[[dict, dict], list[str]] = lambda spec, record: [],
    ) -> None:
        self.check = check
        self.spec = {**spec, "result_file": str(work / f"{name}.result.json")}
        spec_file = work / f"{name}.spec.json"
        spec_file.write_text(json.dumps(self.spec))
        self.log_file = work / f"{name}.log"
        # OMP_NUM_THREADS=1: Ray then leaves it alone in its workers, so every client computes
        # with one torch thread whatever its CPU share (the ClientApp follows OMP_NUM_THREADS);
        # 1 actor vs 2 actors then differ in parallel clients only, and bare matches both.
        env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO)}
        env["OMP_NUM_THREADS"] = "1"
        if len(str(work)) <= 40:  # Ray's session logs go with the work dir (socket paths
            env["RAY_TMPDIR"] = str(work)  # below it must stay under 107 characters)
        self.pss = pss
        self.load_before = load_average_1min()
        self.started = time.perf_counter()
        with self.log_file.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.workloads", str(spec_file)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.sampler = TreeSampler(self.proc.pid, pss)
        self.sampler.start()

    def kill(self) -> None:
        """SIGKILL every process of the tree (the child started it in its own session)."""
        self.sampler.stop()
        self.sampler.sample()  # the latest descendants, so none is missed
        self.sampler.kill_leftovers(0.0)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()

    def wait(self) -> dict:
        """Wait (killing the tree on timeout); wall time, peak memory and the child's result."""
        proc, sampler, spec = self.proc, self.sampler, self.spec
        timed_out = False
        try:
            proc.wait(timeout=max(1.0, CHILD_TIMEOUT_S - (time.perf_counter() - self.started)))
        except BaseException as err:  # timeout, or Ctrl-C / an error here: end the tree
            timed_out = isinstance(err, subprocess.TimeoutExpired)
            self.kill()
            if not timed_out:
                raise
        wall = time.perf_counter() - self.started
        if sampler.is_alive():
            sampler.stop()
        leftovers = sampler.kill_leftovers(10.0)
        record = {
            "kind": spec["kind"],
            "cpus_per_client": spec.get("cpus_per_client"),
            "num_clients": spec["config"]["num-clients"],
            "rounds": spec["config"]["rounds"],
            "process_wall_seconds": round(wall, 3),
            "returncode": proc.returncode,
            "timed_out": timed_out,
            "load_avg_1min_before_after": [self.load_before, load_average_1min()],
            "processes_seen": len(sampler.seen),
            "peak_processes": sampler.peak_procs,
            "peak_tree_rss_mb": round(sampler.peak_rss / 2**20, 1),
            "tree_cpu_seconds": round(sampler.cpu_seconds(), 2),
            "driver_cpu_seconds": round(sampler.cpu.get(proc.pid, 0.0), 2),
            "cpu_seconds_by_process": sampler.cpu_by_label(),
            "leftover_processes_killed": leftovers,
        }
        if self.pss:
            record["peak_tree_pss_mb"] = round(sampler.peak_pss / 2**20, 1)
        result_file = Path(spec["result_file"])
        if proc.returncode == 0 and result_file.exists():
            result = json.loads(result_file.read_text())
            result["round_stamps"] = {int(k): v for k, v in result["round_stamps"].items()}
            record.update(result)
            record["problems"] = self.check(spec, record)
        else:
            record["problems"] = ["the run failed or timed out"]
            record["error"] = self.log_file.read_text()[-2000:]
        return record


def run_child(
    name: str,
    spec: dict,
    work: Path,
    pss: bool = False,
    check: Callable[[dict, dict], list[str]] = lambda spec, record: [],
) -> dict:
    """Run one measurement in a fresh process tree and wait for it."""
    return Child(name, spec, work, pss, check).wait()
