"""Run a simulation in a child process that this process supervises, so that a signal or an
engine failure ends the whole run within seconds and nothing of it keeps running.

Flower's in-process engine cannot be stopped from inside: after Ctrl-C its ServerApp thread
keeps waiting for replies from actors that are gone and the process hangs joining it; an engine
error leaves the same thread behind; SIGTERM ends in a Ray core dump. So ``fedqdnn simulate``
runs :func:`~fedqdnn.federated.simulation.simulate` in a child process started in its own
session (Ray's GCS, raylet, agents and workers all join that session) and only supervises it:

* on SIGINT or SIGTERM, or when the child reports an error or dies, every process of the
  child's session is killed (SIGKILL) and waited for; checkpoints are atomic (the state file is
  renamed last), so the last complete checkpoint survives any kill;
* the child dies with its supervisor (``PR_SET_PDEATHSIG``), so a run never outlives the
  process that holds its folder's lock;
* the child reports over a pipe, one JSON object per line: ``{"ray": "connecting"}``,
  ``{"ray": "connected"}``, ``{"log": "...", "level": 30, "name": "fedqdnn..."}`` (a record
  of the child's fedqdnn loggers, sent by :class:`PipeHandler` and handled here by the logger
  of that name, so the console handler of :mod:`fedqdnn.console` prints it),
  ``{"round": k}`` after every round, and ``{"error": "...", "exit": 1 | 2}`` before it
  exits on an error. Its own output (Ray's and Flower's logs) is discarded unless
  ``verbose``, so a failure is one line.

A cluster that does not answer within :data:`RAY_CONNECT_SECONDS` of the child's connection
attempt ends the run with one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

import fedqdnn
from fedqdnn.console import ROOT, quiet_engines

if TYPE_CHECKING:  # the CLI imports this module first thing: keep it light
    from fedqdnn.config import FederatedConfig
    from fedqdnn.federated.checkpoint import Checkpoint
    from fedqdnn.federated.resources import Resources
    from fedqdnn.federated.simulation import PreparedRun
    from fedqdnn.schema import RunResults

RAY_CONNECT_SECONDS = 30.0
POLL_SECONDS = 0.2
KILL_WAIT_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1
_PACKAGE_ROOT = str(Path(fedqdnn.__file__).resolve().parents[1])


class Interrupted(Exception):  # noqa: N818 (a signal, not an error)
    """SIGINT or SIGTERM arrived. ``exit_code`` is 128 + the signal number (130, 143); a
    supervised run fills in how far it got (``round_reached`` of ``rounds``, ``out``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum
        self.out: Path | None = None
        self.rounds_done: int | None = None
        self.rounds: int | None = None


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within this block, the first SIGINT or SIGTERM raises :class:`Interrupted` in the main
    thread; later ones are ignored, so the cleanup that follows runs to its end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- the supervising side


@dataclass
class _Progress:
    """What the child reported."""

    rounds_done: int | None = None
    connecting_since: float | None = None
    connected: bool = False
    error: str | None = None
    exit_code: int = 1


def simulate_supervised(
    cfg: FederatedConfig,
    out: Path,
    resources: Resources | None = None,
    *,
    resume: bool = False,
    checkpoint: Checkpoint | None = None,
    overwrite: bool = False,
    verbose: bool = False,
) -> RunResults:
    """:func:`~fedqdnn.federated.simulation.simulate` in a supervised child process: every
    check here, once, before the child starts (:func:`~fedqdnn.federated.simulation.prepare`);
    the child runs the prepared run without checking again. ``resources`` come checked
    (:func:`~fedqdnn.federated.resources.checked_resources`; default: 1 CPU per client, local
    Ray). ``resume`` continues the run in ``out`` from its checkpoint (``checkpoint``, when
    the caller has already loaded it with ``load_resume``). A signal raises
    :class:`Interrupted` once nothing of the run is left; an error in the run raises
    ValueError (bad input) or RuntimeError, with the child's one line."""
    from fedqdnn.federated.report import read_results
    from fedqdnn.federated.resources import checked_resources
    from fedqdnn.federated.run_folder import claim
    from fedqdnn.federated.simulation import load_resume, prepare
    from fedqdnn.schema import RESULTS_FILE

    out = Path(out)
    resources = resources or checked_resources()
    if resume and checkpoint is None:
        checkpoint = load_resume(out)[1]
    prepared, identity = prepare(cfg, out, resources, checkpoint, overwrite, verbose)
    with claim(out, resume=resume, overwrite=overwrite, identity=identity) as lock_fd:
        done = checkpoint.round if checkpoint is not None else None
        progress = _supervise(prepared, lock_fd, _Progress(rounds_done=done))
    if progress.error is not None:
        raise (ValueError if progress.exit_code == 2 else RuntimeError)(progress.error)
    return read_results(out / RESULTS_FILE)


def _supervise(prepared: PreparedRun, lock_fd: int, progress: _Progress) -> _Progress:
    """Start the child, follow its reports into ``progress`` until it ends; end its session in
    every case."""
    read_fd, write_fd = os.pipe()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
    }
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only
    parent = os.getpid()

    def die_with_parent() -> None:  # runs in the child between fork and exec
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    proc = None
    verbose = prepared.verbose
    spec = {**prepared.to_json(), "events_fd": write_fd}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", __name__, json.dumps(spec)],
            pass_fds=(write_fd, lock_fd),
            start_new_session=True,
            preexec_fn=die_with_parent,
            stdin=subprocess.DEVNULL,
            stdout=None if verbose else subprocess.DEVNULL,
            stderr=None if verbose else subprocess.DEVNULL,
            env=env,
        )
        os.close(write_fd)
        write_fd = -1
        _follow(proc, read_fd, progress, prepared.resources.ray_address)
    except Interrupted as stop:
        if proc is not None:
            end_session(proc)
        stop.out, stop.rounds_done = prepared.out, progress.rounds_done
        stop.rounds = prepared.config.rounds
        raise
    finally:
        if proc is not None:
            end_session(proc)
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if progress.error is None and proc.returncode != 0:
        progress.error = f"the simulation process ended with {_status(proc.returncode)}"
    return progress


def _follow(proc: subprocess.Popen, read_fd: int, progress: _Progress, address: object) -> None:
    """Read the child's reports until it reports an error or ends (every report read)."""
    buffer = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], POLL_SECONDS)
        chunk = os.read(read_fd, 65536) if ready else b""
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            _note(json.loads(line), progress)
        if progress.error is not None or (ready and not chunk):
            return  # the child reported its error, or closed the pipe: it has ended
        if not ready and proc.poll() is not None:
            return  # it ended and nothing is left to read
        since = progress.connecting_since
        late = since is not None and time.monotonic() - since > RAY_CONNECT_SECONDS
        if address and late and not progress.connected:
            progress.error = (
                f"--ray-address {address}: no Ray cluster answered within "
                f"{RAY_CONNECT_SECONDS:.0f}s; check the address (`ray status` on the head node)"
            )
            progress.exit_code = 2
            return


def _note(event: dict, progress: _Progress) -> None:
    if event.get("ray") == "connecting":
        progress.connecting_since = time.monotonic()
    elif event.get("ray") == "connected":
        progress.connected = True
    elif "log" in event:
        relay(event)
    elif "round" in event:
        progress.rounds_done = int(event["round"])
    elif "error" in event:
        progress.error, progress.exit_code = str(event["error"]), int(event.get("exit", 1))


def relay(event: dict) -> None:
    """Hand a ``{"log": ...}`` event to the logger it came from, in this process."""
    level = int(event.get("level", logging.INFO))
    name = str(event.get("name", ROOT))
    record = logging.makeLogRecord(
        {"name": name, "levelno": level, "levelname": logging.getLevelName(level)}
        | {"msg": str(event["log"])}
    )
    logging.getLogger(name).handle(record)


def _status(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit status {returncode} before finishing; rerun with --verbose for the log"


def _session_processes(sid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of session ``sid``. A session, not a parent, because Ray's
    daemons re-parent to init; psutil has no session field, so ``os.getsid`` asks."""
    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError):  # gone meanwhile (ProcessLookupError), or hidden
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def session_members(sid: int) -> list[int]:
    """Pids of the live (not zombie) processes of session ``sid``."""
    return [process.pid for process in _session_processes(sid)]


def end_session(proc: subprocess.Popen) -> list[int]:
    """Kill every process of the child's session (the child leads it) and wait until none is
    left, at most :data:`KILL_WAIT_SECONDS`; returns the pids still alive (normally none)."""
    sid = proc.pid
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while True:
        members = _session_processes(sid)
        for member in members:
            with contextlib.suppress(psutil.Error):  # gone, or its pid reused meanwhile
                member.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGKILL)
        # Popen reaps its own child (psutil would take its exit status); the rest are waited
        # for until they are gone (or zombies of a parent that is dying too).
        psutil.wait_procs([m for m in members if m.pid != proc.pid], timeout=POLL_SECONDS)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL_SECONDS)
        if (not members and proc.poll() is not None) or time.monotonic() > deadline:
            return [member.pid for member in members]
        time.sleep(0.05)


# ---------------------------------------------------------------- the child


class EventPipe:
    """The child's end of the events pipe: whole JSON lines, one writer at a time (the
    ServerApp runs in its own thread)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, **event: object) -> None:
        data = memoryview((json.dumps(event) + "\n").encode())
        with self._lock:
            while data:
                data = data[os.write(self.fd, data) :]


class PipeHandler(logging.Handler):
    """Sends each record over the events pipe: message (with any traceback), level, name."""

    def __init__(self, pipe: EventPipe) -> None:
        super().__init__()
        self.pipe = pipe

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pipe.send(log=self.format(record), level=record.levelno, name=record.name)
        except Exception:  # noqa: BLE001 (logging's rule: a failed record never raises)
            self.handleError(record)


def log_to_pipe(pipe: EventPipe) -> None:
    """Every fedqdnn record of INFO and above goes over ``pipe`` only (not to this process's
    stderr, which is discarded unless verbose and would double each line if not)."""
    root = logging.getLogger(ROOT)
    root.handlers = [PipeHandler(pipe)]
    root.setLevel(logging.INFO)
    root.propagate = False


def _innermost_line(err: BaseException) -> str:
    """The last line of the innermost cause's message (Flower wraps engine errors)."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:400]


def _child_main(argv: list[str]) -> None:
    """Entry point of the supervised child: connect Ray, run, report, exit at once."""
    spec = json.loads(argv[1])
    pipe = EventPipe(int(spec["events_fd"]))
    emit = pipe.send
    log_to_pipe(pipe)
    code = 0
    try:
        import flwr.simulation  # noqa: F401 (importing flwr resets its logger level)

        from fedqdnn.federated.simulation import PreparedRun, connect_ray, run_prepared

        prepared = PreparedRun.from_json(spec)  # checked by the supervisor: not again
        quiet_engines(prepared.verbose)  # the supervisor prints the one line
        emit(ray="connecting")
        connect_ray(prepared.resources, prepared.verbose)
        emit(ray="connected")
        run_prepared(prepared, on_round_end=lambda end: emit(round=end.server_round))
    except (ValueError, FileNotFoundError) as err:
        code = 2
        emit(error=_innermost_line(err), exit=2)
    except BaseException as err:  # noqa: BLE001 (reported in one line, then exit)
        code = 1
        emit(error=_innermost_line(err), exit=1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never wait for Flower's threads


if __name__ == "__main__":
    _child_main(sys.argv)
