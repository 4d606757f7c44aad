"""Output folders: one run at a time (a lock that dies with its process), nothing overwritten
silently, --overwrite removes only what fedqdnn wrote, a checkpoint belongs to its run."""

import errno
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedqdnn import files
from fedqdnn.config import FederatedConfig
from fedqdnn.federated.run_folder import (
    RUN_FILE,
    FolderError,
    check_folder,
    claim,
    continue_hint,
    holding,
)
from fedqdnn.files import NON_FINITE_KEY, dumps_strict, write_json
from simulations.compare import _run, run_folder_name
from simulations.scenarios import load_scenario
from tests.e2e_helpers import REPO
from tests.full_disk import FullDisk
from tests.plot_data import results_at

HOLD = """
import sys, time
from pathlib import Path
from fedqdnn.federated.run_folder import claim
with claim(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_two_processes_on_one_folder_and_the_lock_dies_with_its_holder(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = rf"in use by another fedqdnn run \(pid {holder.pid}\)"
        with pytest.raises(FolderError, match=busy):
            check_folder(out)
        with pytest.raises(FolderError, match="in use"), claim(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs in the holder
        holder.wait()
    with claim(out) as fd:  # the kernel dropped the lock with the process
        assert fd >= 0


def test_a_new_run_clears_only_what_an_earlier_run_left(tmp_path):
    """An earlier run that ended before finishing (no results) left a checkpoint and run.json;
    a new run may take the folder only after it is told to (--overwrite), and then nothing of
    the old run stays, while files fedqdnn does not write are kept."""
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.json").write_text('{"round": 2}')
    (out / RUN_FILE).write_text('{"run_id": "old"}')
    (out / "notes.txt").write_text("mine")
    (out / "runs").mkdir()
    assert holding(out) == "an unfinished run (checkpoint of round 2)"
    with pytest.raises(FolderError, match="continue it with --resume"), claim(out):
        pass
    assert (out / "checkpoint" / "state.json").exists()
    with claim(out, overwrite=True, identity={"run_id": "new"}):
        pass
    assert sorted(p.name for p in out.iterdir()) == [".fedqdnn.lock", "notes.txt", RUN_FILE, "runs"]
    assert json.loads((out / RUN_FILE).read_text()) == {"run_id": "new"}


def test_a_run_that_never_checkpointed_holds_nothing_to_keep(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_FILE).write_text("{}")
    assert holding(out) is None
    with claim(out):
        assert not (out / RUN_FILE).exists()


def test_strict_json_writes_null_for_non_finite_numbers_and_says_why(tmp_path):
    payload = {"a": 1.5, "history": [{"loss": math.nan}, {"loss": -math.inf}], "b": math.inf}
    write_json(tmp_path / "r.json", payload)

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert data["history"] == [{"loss": None}, {"loss": None}] and data["b"] is None
    assert data[NON_FINITE_KEY] == {"history.0.loss": "nan", "history.1.loss": "-inf", "b": "inf"}
    assert json.loads(dumps_strict({"x": 1.0})) == {"x": 1.0}  # nothing to record: no key


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_failed_write_removes_its_temporary_names_the_file_and_keeps_the_old(
    where, tmp_path, monkeypatch
):
    target = tmp_path / "checkpoint" / "state.json"
    write_json(target, {"round": 1})
    if where == "write":
        monkeypatch.setattr(files, "open", lambda p, mode: FullDisk(open(p, mode)), raising=False)
    else:  # the data fit the page cache; the disk refused it on flush

        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(OSError) as caught:
        write_json(target, {"round": 2})
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"[Errno 28] cannot write {target}: No space left on device"
    assert caught.value.__cause__ is None  # a run's one line is the innermost cause's
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]  # no .tmp left
    assert json.loads(target.read_text()) == {"round": 1}


def test_continue_hint_names_the_resume_command_when_a_checkpoint_survives(tmp_path):
    out = tmp_path / "my run"
    assert continue_hint(out) == (
        "no checkpoint was written, run the same command again to start over"
    )
    write_json(out / "checkpoint" / "state.json", {"round": 1})
    assert continue_hint(out) == (
        f"the checkpoint of round 1 is kept, continue with: fedqdnn simulate --resume '{out}'"
    )


def test_a_comparison_reuses_finished_runs_resumes_unfinished_and_restarts_the_rest(
    tmp_path, caplog
):
    cfg = load_scenario("three-tier").replace(rounds=3)
    run_dir = tmp_path / "runs" / run_folder_name(cfg)
    calls = []
    results = results_at(3, rounds=3).model_copy(update={"config": cfg.to_flat()})

    def simulate_fn(cfg, out, resume=False, overwrite=False):
        calls.append((resume, overwrite))
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results.to_json()))
        (out / "model.safetensors").write_text("")
        return results

    run_dir.mkdir(parents=True)  # a run killed before its first checkpoint
    _run(cfg, tmp_path, simulate_fn)
    (run_dir / "results.json").unlink()
    (run_dir / "checkpoint").mkdir()
    (run_dir / "checkpoint" / "state.json").write_text('{"round": 2}')  # interrupted
    with caplog.at_level(logging.INFO, logger="fedqdnn"):
        _run(cfg, tmp_path, simulate_fn)
        assert _run(cfg, tmp_path, simulate_fn).results == results  # finished: reused
    assert calls == [(False, True), (True, False)]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("fedqdnn.simulations.compare", f"    resuming {run_dir.name} after round 2"),
        ("fedqdnn.simulations.compare", f"    reusing {run_dir.name}"),
    ]


def test_lock_file_names_its_holder_while_held(tmp_path):
    out = tmp_path / "run"
    with claim(out):
        assert (out / ".fedqdnn.lock").read_text() == str(os.getpid())


def test_a_read_only_folder_is_refused(tmp_path):
    """Permission bits do not stop root, the immutable attribute (chattr +i) does: as root the
    folder is made immutable as well, so the test runs (and can fail) as any user."""
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    immutable = os.geteuid() == 0 and _chattr("+i", out)
    try:
        if os.geteuid() == 0 and not immutable:
            pytest.skip("running as root without chattr +i on this filesystem")
        with pytest.raises(OSError):  # really read-only for this process
            (out / "probe").mkdir()
        with pytest.raises(FolderError) as refused:
            check_folder(out)
        reason = "Operation not permitted" if immutable else "Permission denied"
        assert str(refused.value) == f"--out {out} is not writable ({reason})"
        assert list(out.iterdir()) == []  # the probe left nothing behind
        with pytest.raises(FolderError, match=r"^--out .*/ro/new is not writable \("):
            check_folder(out / "new")  # a folder to be made under a read-only one
    finally:
        if immutable:
            _chattr("-i", out)
        out.chmod(0o700)
    check_folder(out)  # writable again: accepted


def _chattr(flag: str, path: Path) -> bool:
    """Set or clear a file attribute; False where chattr or the filesystem cannot."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def test_run_folder_is_named_by_the_keys_that_differ_from_the_defaults():
    """The name hashes only non-default keys: the defaults' name is the hash of {}, and a key
    set to its default (as a key added later is, in every cached run) does not change it."""

    def sha(entries: dict) -> str:
        return hashlib.sha1(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:12]

    assert run_folder_name(FederatedConfig()) == sha({})
    cfg = FederatedConfig().replace(rounds=3, alpha=0.1)
    assert run_folder_name(cfg) == sha({"alpha": 0.1, "rounds": 3})
    assert run_folder_name(cfg.replace(sampling="uniform", lr=0.002)) == run_folder_name(cfg)
    assert run_folder_name(cfg.replace(sampling="stratified")) != run_folder_name(cfg)


def test_a_finished_run_of_another_config_is_refused_not_reused(tmp_path):
    """Same folder name, another config (a default changed since the run): one line naming the
    key; a results file that lacks a key newer than it counts that key at its default."""
    cfg = load_scenario("three-tier").replace(rounds=3)
    run_dir = tmp_path / "runs" / run_folder_name(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "model.safetensors").write_text("")
    older = {k: v for k, v in cfg.to_flat().items() if k != "sampling"}  # before the key
    results = results_at(3, rounds=3)
    (run_dir / "results.json").write_text(json.dumps(results.to_json() | {"config": older}))
    assert _run(cfg, tmp_path, None).results.config == older  # reused
    other = dict(older, lr=0.01)
    (run_dir / "results.json").write_text(json.dumps(results.to_json() | {"config": other}))
    with pytest.raises(ValueError) as err:
        _run(cfg, tmp_path, None)
    assert str(err.value) == (
        f"{run_dir} holds a run of another config (lr = 0.01 there, 0.002 asked); "
        "move it away to run this one"
    )
