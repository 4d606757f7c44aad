"""Atomic file writes: a crash or a kill never leaves half a file behind; checked reads.

Every output (results, comparisons, checkpoints, benchmark JSON) goes through here: the data is
written to a temporary file beside the target, flushed to disk, then renamed over it. An output
read back (``fedqdnn plot``) is checked against the keys its reader needs, so a stale, empty or
truncated file fails with one line instead of a traceback.
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


def read_json_checked(path: Path, schema: object) -> dict:
    """A JSON output read back for redrawing: ``ValueError`` with one line naming the file and
    what is wrong (not JSON, truncated, a key missing) when it does not match ``schema`` (a type
    pydantic validates, e.g. a model of the keys the reader needs). Returns the data as read."""
    from pydantic import TypeAdapter, ValidationError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated?): {err}") from None
    try:
        TypeAdapter(schema).validate_python(data)
    except ValidationError as err:
        raise ValueError(f"{path} {_problems(err.errors(include_url=False))}") from None
    return data


def _problems(errors: list[dict]) -> str:
    """pydantic errors as one phrase: the missing keys (one example per key, not one per list
    item or dict entry), else the first bad value and why."""
    missing: dict[tuple, str] = {}
    for e in errors:
        if e["type"] == "missing":
            missing.setdefault((e["loc"][0], e["loc"][-1]), _location(e["loc"]))
    if missing:
        shown = ", ".join(list(missing.values())[:4])
        more = f" and {len(missing) - 4} more keys" if len(missing) > 4 else ""
        return f"lacks {shown}{more} (written by another fedqdnn version? run it again)"
    first = errors[0]
    reason = first["msg"].removeprefix("Value error, ")
    reason = reason[:1].lower() + reason[1:]
    if first["type"] == "value_error":  # a check across fields: the value is the whole entry
        return f"has {_location(first['loc'])}: {reason}"
    value = repr(first["input"])
    value = value if len(value) <= 40 else value[:37] + "..."
    return f"has {_location(first['loc'])} = {value}: {reason}"


def _location(loc: tuple) -> str:
    """``('history', 3, 'round')`` -> ``history[3].round``."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    return where.removeprefix(".") or "its top level"
