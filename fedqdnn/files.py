"""Atomic file writes: a crash or a kill never leaves half a file behind.

Every output (results, comparisons, checkpoints, benchmark JSON) goes through here: the data is
written to a temporary file beside the target, flushed to disk, then renamed over it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a flushed temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_json(path: Path, payload: object) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_bytes_atomic(Path(path), json.dumps(payload, indent=2).encode())
