"""Reliability end to end: same-seed determinism and SIGKILL + --resume equality, with the
served model a running average of the aggregates (``serve-ema``), which a resume carries on."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from fedqdnn.federated.checkpoint import load_checkpoint
from fedqdnn.hardware import get_profile
from fedqdnn.hardware.fleet import assign_profiles
from fedqdnn.round_plan import is_online, select_partitions
from simulations.scenarios import load_scenario
from tests.e2e_helpers import BIN, REPO, run

pytestmark = pytest.mark.e2e
ARGS = [
    "--num-clients",
    "4",
    "--rounds",
    "3",
    "--fraction-train",
    "0.75",
    "--availability",
    "true",
    "--serve-ema",
    "0.5",
    "--final-average",
    "2",
]


def _comparable(results: dict) -> dict:
    """results.json without timings (wall clock differs run to run by nature)."""
    results = json.loads(json.dumps(results))
    results.pop("wall_seconds")
    for h in results["history"]:
        h.pop("round_seconds")
    return results


def _seeded_plan() -> list[tuple[list[int], list[tuple[int, str]]]]:
    """Per round, from the seeded draws alone (no Flower, no strategy): the 3 of 4 partitions
    sampled, split into those online (trained) and those offline (dropped), each device
    online with its tier's availability."""
    cfg = load_scenario().replace(num_clients=4, rounds=3, fraction_train=0.75)
    tiers = assign_profiles(cfg.num_clients, cfg.tiers, cfg.seed)
    plan = []
    for rnd in range(1, cfg.rounds + 1):
        sampled = select_partitions(range(cfg.num_clients), 0.75, cfg.seed, rnd)
        assert len(sampled) == 3
        online = [
            p for p in sampled if is_online(get_profile(tiers[p]).availability, cfg.seed, rnd, p)
        ]
        plan.append((online, [(p, "offline") for p in sampled if p not in online]))
    return plan


def _who_trained_and_who_dropped(results: dict) -> list[tuple[list[int], list[tuple[int, str]]]]:
    return [
        (
            sorted(c["partition-id"] for c in h["clients"]),
            sorted((d["partition-id"], d["status"]) for d in h["dropped"]),
        )
        for h in results["history"]
    ]


def _simulate(out, *extra):
    code, log = run([str(BIN / "fedqdnn"), "simulate", *extra, "--out", str(out)], timeout=300)
    assert code == 0, log[-3000:]
    return json.loads((out / "results.json").read_text())


def _assert_served_is_the_running_average(out) -> None:
    """The served (evaluated, deployed) model of round 3 = 0.5 x round 2's served model (kept
    in the final window) + 0.5 x round 3's aggregate (the last checkpoint's global model)."""
    from safetensors.numpy import load_file

    served_2 = load_file(str(out / "final-models" / "model-round2.safetensors"))
    served_3 = load_file(str(out / "model.safetensors"))
    checkpoint = load_checkpoint(out / "checkpoint")
    assert checkpoint.round == 3
    floats = [k for k, v in served_3.items() if v.dtype.kind == "f"]
    assert floats and set(served_3) == set(checkpoint.arrays)
    for k in floats:
        expected = 0.5 * served_2[k] + 0.5 * checkpoint.arrays[k]
        np.testing.assert_allclose(served_3[k], expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(checkpoint.served_arrays[k], served_3[k])
    assert any(not np.array_equal(served_3[k], checkpoint.arrays[k]) for k in floats)


def test_same_seed_identical_and_killed_run_resumes_identically(tmp_path):
    first = _simulate(tmp_path / "a", *ARGS)
    rerun = [str(BIN / "fedqdnn"), "simulate", *ARGS, "--out", str(tmp_path / "a")]
    code, log = run(rerun, timeout=120)  # a finished run is never overwritten silently
    assert code == 2 and log.strip().count("\n") == 0, log
    assert "already holds a finished run (results.json)" in log and "--overwrite" in log
    assert json.loads((tmp_path / "a" / "results.json").read_text()) == first
    second = _simulate(tmp_path / "b", *ARGS)
    assert _comparable(first) == _comparable(second)
    plan = _seeded_plan()  # 3 of 4 sampled per round, some of them offline
    assert _who_trained_and_who_dropped(first) == plan
    counts = [(h["num_trained"], h["num_dropped"]) for h in first["history"]]
    assert counts == [(len(trained), len(dropped)) for trained, dropped in plan]
    _assert_served_is_the_running_average(tmp_path / "a")

    killed = tmp_path / "c"
    state = killed / "checkpoint" / "state.json"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [str(BIN / "fedqdnn"), "simulate", *ARGS, "--out", str(killed)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: round 1 checkpointed, round 2 under way
    proc.wait()
    kept = json.loads(state.read_text())
    checkpointed, elapsed = kept["round"], kept["elapsed_seconds"]
    assert checkpointed < 3, "the run finished before it could be killed"
    assert not (killed / "results.json").exists()

    resumed = _simulate(killed, "--resume", str(killed))
    assert _comparable(resumed) == _comparable(first)
    assert elapsed > 0 and resumed["wall_seconds"] > elapsed  # the killed session counts


def test_resume_refuses_pickle_and_mismatched_checkpoints(tmp_path):
    import pickle

    from fedqdnn.federated.checkpoint import CheckpointError

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "model-round1.safetensors").write_bytes(pickle.dumps({"w": [1, 2]}))
    (ckpt / "state.json").write_text(
        json.dumps(
            {
                "format": 2,
                "round": 1,
                "model_file": "model-round1.safetensors",
                "config": {},
                "history": {},
                "strategy": {},
            }
        )
    )
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(ckpt)
    (ckpt / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_checkpoint(ckpt)
    code, log = run([str(BIN / "fedqdnn"), "simulate", "--resume", str(tmp_path)], timeout=60)
    assert code == 2 and "corrupt checkpoint" in log and log.strip().count("\n") == 0
