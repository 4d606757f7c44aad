"""One run per output folder: what a folder holds, a lock that dies with its process, and the
identity of the run it holds (``run.json``), which a checkpoint must match to be resumed.

A folder holding a finished run, an unfinished run or a comparison is never overwritten
silently: a new run into it is refused in one line offering ``--resume DIR`` (an unfinished
run) or ``--overwrite``. ``--overwrite`` removes only the names fedqdnn writes
(:data:`OUTPUTS`), never anything else in the folder. The lock is ``fcntl.flock`` on
``DIR/.fedqdnn.lock``: the kernel drops it when the process holding it ends, however it ends,
so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from fedqdnn.config import FederatedConfig, from_flat
from fedqdnn.federated.checkpoint import CheckpointError
from fedqdnn.files import write_json
from fedqdnn.provenance import versions
from fedqdnn.schema import (
    CHECKPOINT_DIR,
    CHECKPOINT_STATE_FILE,
    COMPARISON_CSV,
    COMPARISON_FILE,
    COMPARISON_PLOTS,
    FINAL_MODELS_DIR,
    LOCK_FILE,
    MODEL_FILE,
    RESULTS_FILE,
    RUN_FILE,
    RUN_PLOTS,
    WINDOW_AVERAGE_MODEL_FILE,
)

# Everything a run, a training job or a comparison writes at the top of its folder; the
# comparison's cache of runs (runs/) is kept: each run there is keyed by its whole config.
OUTPUTS = tuple(
    dict.fromkeys(
        (
            RUN_FILE,
            RESULTS_FILE,
            MODEL_FILE,
            WINDOW_AVERAGE_MODEL_FILE,
            CHECKPOINT_DIR,
            FINAL_MODELS_DIR,
            *RUN_PLOTS,
            COMPARISON_FILE,
            COMPARISON_CSV,
            *COMPARISON_PLOTS,
        )
    )
)


class FolderError(ValueError):
    """An output folder that cannot take this run (one line naming it and the way out)."""


def checkpoint_round(out: Path) -> int | None:
    """Round of the checkpoint in ``out`` (None: none, or unreadable)."""
    try:
        return int(json.loads((out / CHECKPOINT_DIR / CHECKPOINT_STATE_FILE).read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def continue_hint(out: Path) -> str:
    """How to go on after a run in ``out`` stopped: resume from its checkpoint when one
    survives (the last round written in full), else start over."""
    import shlex

    kept = checkpoint_round(out)
    if kept is None:
        return "no checkpoint was written, run the same command again to start over"
    return (
        f"the checkpoint of round {kept} is kept, continue with: "
        f"fedqdnn simulate --resume {shlex.quote(str(out))}"
    )


def holding(out: Path) -> str | None:
    """What ``out`` holds that a new run would overwrite, in words; None if nothing.

    A run that ended before its first checkpoint holds nothing worth keeping.
    """
    if (out / COMPARISON_FILE).is_file():
        return f"a comparison ({COMPARISON_FILE})"
    if (out / RESULTS_FILE).is_file():
        return f"a finished run ({RESULTS_FILE})"
    if (out / CHECKPOINT_DIR / CHECKPOINT_STATE_FILE).is_file():
        rnd = checkpoint_round(out)
        return "an unfinished run" + (f" (checkpoint of round {rnd})" if rnd is not None else "")
    return None


def _locker(out: Path) -> str | None:
    """``pid N`` of the process holding the folder's lock; None if nobody holds it."""
    path = out / LOCK_FILE
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = f.read().strip()
            return f"pid {pid}" if pid.isdigit() else "pid unknown"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _in_use(out: Path, who: str, flag: str) -> FolderError:
    way = "wait for it to end" + ("" if flag == "--resume" else " or choose another folder")
    return FolderError(f"{flag} {out} is in use by another fedqdnn run ({who}); {way}")


def _check_contents(out: Path, resume: bool, overwrite: bool, flag: str) -> None:
    held = holding(out)
    if resume:
        if (out / RESULTS_FILE).is_file():
            raise FolderError(f"--resume {out}: the run there is finished ({RESULTS_FILE})")
        return
    if held and not overwrite:
        quoted = shlex.quote(str(out))
        way = (
            f"continue it with --resume {quoted} or replace it with --overwrite"
            if held.startswith("an unfinished")
            else "choose another folder or replace it with --overwrite"
        )
        raise FolderError(f"{flag} {out} already holds {held}; {way}")


def _check_writable(out: Path, flag: str) -> None:
    """Probe the folder, or the nearest existing folder above it, leaving nothing behind."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FolderError(f"{flag} {out} is not writable ({existing} is a file)")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".fedqdnn-probe-"))
    except OSError as err:
        raise FolderError(f"{flag} {out} is not writable ({err.strerror or err})") from None


def _flag(resume: bool) -> str:
    """The option that named the folder: a resumed run's is ``--resume``."""
    return "--resume" if resume else "--out"


def check_folder(
    out: Path, *, resume: bool = False, overwrite: bool = False, flag: str | None = None
) -> None:
    """Refuse, before any work, a folder this run may not write: a file, not writable, in use
    by another run, or holding a result (see the module docstring). Errors name the folder
    by ``flag``, by default the one that gave it (``--resume`` or ``--out``)."""
    out = Path(out)
    flag = flag or _flag(resume)
    if out.exists() and not out.is_dir():
        raise FolderError(f"{flag} {out} is a file; give a folder")
    who = _locker(out) if out.is_dir() else None
    if who:
        raise _in_use(out, who, flag)
    _check_contents(out, resume, overwrite, flag)
    _check_writable(out, flag)


def remove_outputs(out: Path) -> None:
    """Remove what fedqdnn wrote in ``out`` (:data:`OUTPUTS` and their temporary files)."""
    for name in OUTPUTS:
        for path in (out / name, out / f"{name}.tmp"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


@contextlib.contextmanager
def claim(
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    identity: dict | None = None,
    flag: str | None = None,
) -> Iterator[int]:
    """Hold ``out`` for one run: checked, locked, cleared of an earlier run's outputs (a new
    run), ``identity`` written as run.json; yields the lock's file descriptor (a child process
    that inherits it keeps the folder locked while it lives)."""
    out = Path(out)
    flag = flag or _flag(resume)
    check_folder(out, resume=resume, overwrite=overwrite, flag=flag)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / LOCK_FILE, "a+")  # noqa: SIM115 (held for the whole run)
    except OSError as err:
        raise FolderError(f"{flag} {out} is not writable ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(out, _locker_pid_text(lock), flag) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        _check_contents(out, resume, overwrite, flag)  # again, now that nobody else can write
        if not resume:
            remove_outputs(out)
            if identity is not None:
                write_json(out / RUN_FILE, identity)
        yield lock.fileno()
    finally:
        lock.close()  # releases the lock


def _locker_pid_text(lock) -> str:
    lock.seek(0)
    pid = lock.read().strip()
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


# ---------------------------------------------------------------- the run a folder holds


def run_identity(cfg: FederatedConfig, data_fingerprint: str) -> dict:
    """What run.json records: which run this folder holds (a checkpoint must match it)."""
    return {
        "run_id": uuid.uuid4().hex,
        "config": cfg.to_flat(),
        "data": data_fingerprint,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
    }


def check_belongs(out: Path, cfg: FederatedConfig, data_fingerprint: str) -> None:
    """Refuse a checkpoint (config ``cfg``) that is not the one of the run in ``out``: its
    config and the data must be those the run started with (run.json). A folder from before
    run.json existed has only its checkpoint to go by."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
        started = from_flat(record["config"]).to_flat()
        data = str(record["data"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a readable run record ({err})") from None
    mine = cfg.to_flat()
    for key in started:
        if mine.get(key) != started[key]:
            raise CheckpointError(
                f"the checkpoint in {out} does not belong to its run: checkpoint {key} = "
                f"{mine.get(key)!r}, the run's {key} = {started[key]!r} ({path})"
            )
    if data != data_fingerprint:
        raise CheckpointError(
            f"the {cfg.data.dataset} data differs from the data the run in {out} started with "
            f"(digest {data_fingerprint}, run.json has {data}); resume it on the same data"
        )
