"""Supervision without Flower: signals become one exception, a run's whole process session is
ended however its processes behave, the child's log records reach the parent's loggers, and
resources are checked before Ray."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fedqdnn.federated.resources import (
    check_client_resources,
    check_ray_address,
    client_fit_problem,
)
from fedqdnn.federated.supervisor import (
    Interrupted,
    _follow,
    _innermost_line,
    _Progress,
    end_session,
    interruptible,
    session_members,
)
from fedqdnn.fleet import build_model_for, check_fleet, server_round_bytes, state_bytes
from simulations.scenarios import load_scenario
from tests.e2e_helpers import REPO, free_port

# A session as a Ray run makes one: a leader, a child that ignores SIGTERM, and a child that
# moved to its own process group (killpg of the leader's group misses it).
TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
regrouped = "import os, time; os.setpgid(0, 0); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", stubborn])
subprocess.Popen([sys.executable, "-c", regrouped])
print("ready", flush=True)
time.sleep(600)
"""


def test_end_session_leaves_no_process_of_the_session():
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    for _ in range(100):  # both children started
        if len(session_members(proc.pid)) == 3:
            break
        time.sleep(0.05)
    assert len(session_members(proc.pid)) == 3
    assert end_session(proc) == []
    assert session_members(proc.pid) == []
    assert proc.returncode == -signal.SIGKILL


# A supervised child's logging, as _child_main sets it up, over the fd given in argv[1].
LOGGING_CHILD = """
import logging, sys
from fedqdnn.federated.supervisor import EventPipe, log_to_pipe
pipe = EventPipe(int(sys.argv[1]))
log_to_pipe(pipe)
log = logging.getLogger("fedqdnn.federated.server_app")
log.warning("round %d/%d: excluded 1 reply (partition %d): %s", 1, 12, 4, "NaN")
log.info("round 1/12: central accuracy 2-bit 0.500")
log.debug("below INFO: not sent")
pipe.send(round=1)
logging.getLogger("fedqdnn").info("x" * 100000)  # longer than a pipe holds at once
"""


def test_a_record_logged_in_the_child_is_handled_by_the_parents_logger_of_its_name(caplog):
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", LOGGING_CHILD, str(write_fd)], pass_fds=(write_fd,), cwd=REPO
    )
    os.close(write_fd)
    progress = _Progress()
    try:
        with caplog.at_level(logging.DEBUG, logger="fedqdnn"):
            _follow(proc, read_fd, progress, None)
    finally:
        os.close(read_fd)
        proc.wait()
    assert proc.returncode == 0
    server = "fedqdnn.federated.server_app"
    assert [(r.name, r.levelno, r.levelname, r.getMessage()) for r in caplog.records] == [
        (server, logging.WARNING, "WARNING", "round 1/12: excluded 1 reply (partition 4): NaN"),
        (server, logging.INFO, "INFO", "round 1/12: central accuracy 2-bit 0.500"),
        ("fedqdnn", logging.INFO, "INFO", "x" * 100000),
    ]
    assert progress.rounds_done == 1 and progress.error is None


def test_first_signal_raises_interrupted_and_later_ones_are_ignored():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught, interruptible():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises in here
        except Interrupted:
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while cleaning up
            time.sleep(0.2)
            raise
    assert caught.value.exit_code == 143 and caught.value.signum == signal.SIGTERM
    assert str(caught.value) == "interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_engine_error_is_reported_by_its_innermost_line():
    try:
        try:
            raise ValueError("Traceback ...\n  File x\nActorPool is empty. Stopping Simulation.")
        except ValueError as inner:
            raise RuntimeError("An error was encountered. Ending simulation.") from inner
    except RuntimeError as err:
        assert _innermost_line(err) == "ActorPool is empty. Stopping Simulation."


@pytest.mark.parametrize(
    "nodes, cpus, gpus, problem",
    [
        ([{"CPU": 2.0}], 1, 0, None),
        ([{"CPU": 2.0}], 3, 0, "no client fits, this machine has 2 CPUs and 0 GPUs"),
        ([{"CPU": 2.0, "GPU": 1.0}], 1, 0.5, None),
        ([{"CPU": 2.0}], 1, 1, "--gpus-per-client 1: no client fits, this machine has 2 CPUs"),
        ([{"CPU": 1.0}, {"CPU": 4.0}], 3, 0, None),  # Flower places actors per node
        ([{"CPU": 2.0}, {"CPU": 2.0}], 3, 0, "the largest of 2 nodes has 2 CPUs"),
    ],
)
def test_client_fit(nodes, cpus, gpus, problem):
    found = client_fit_problem(nodes, cpus, gpus)
    assert found is None if problem is None else problem in found


def test_resource_values_and_an_address_nobody_listens_on():
    with pytest.raises(ValueError, match="--cpus-per-client = nan is not allowed"):
        check_client_resources(float("nan"), 0)
    with pytest.raises(ValueError, match="--gpus-per-client = -1 is not allowed"):
        check_client_resources(1, -1)
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match=f"--ray-address {address}: cannot reach a Ray cluster"):
        check_ray_address(address)
    with pytest.raises(ValueError, match="the port is not in 0..65535"):
        check_ray_address("127.0.0.1:99999")
    check_ray_address("auto")  # left to Ray


def test_fleet_memory_bound():
    """digits: 1437 training and 360 test examples of 8x8 float32 inputs, int64 labels; each
    sampled device's update is one full model state, held twice while aggregating.

    The three-tier model (bits 2, 4, 32; one BatchNorm per mode): float32 conv weights
    1*32*9 + 32*64*9 + 64*64*9, 3 modes x 4 BatchNorm vectors x (32 + 64 + 64) channels,
    2 activation clips (2, 4 bits) x 3 layers, a 64->10 linear layer with bias; 3 modes x 3
    BatchNorm layers of int64 batch counters."""
    cfg = load_scenario("three-tier").replace(num_clients=10)
    data_bytes = 1437 * 64 * 4 + 1437 * 8 + 360 * 64 * 4 + 360 * 8
    floats = (1 * 32 + 32 * 64 + 64 * 64) * 9 + 3 * 4 * (32 + 64 + 64) + 2 * 3 + 64 * 10 + 10
    update = floats * 4 + 3 * 3 * 8
    assert state_bytes(build_model_for(cfg)) == update == 232_712
    needed = server_round_bytes(cfg)
    assert needed == data_bytes + 10 * 2 * update
    assert server_round_bytes(cfg.replace(fraction_train=0.25)) == data_bytes + 3 * 2 * update
    check_fleet(cfg, needed)
    with pytest.raises(ValueError, match="num-clients = 10 is not allowed: the server would hold"):
        check_fleet(cfg, needed - 1)
    with pytest.raises(ValueError, match="allowed: at most 718"):
        check_fleet(cfg.replace(num_clients=719))
    check_fleet(cfg.replace(num_clients=718))


def test_ctrl_c_during_training_exits_130_in_one_line(tmp_path, capsys):
    from fedqdnn.cli import main

    out = tmp_path / "train"
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code = main(["train", "--epochs", "10000", "--out", str(out)])
    finally:
        timer.cancel()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert err[-1] == "fedqdnn: interrupted by SIGINT; no result was written"
    assert not (out / "results.json").exists()
