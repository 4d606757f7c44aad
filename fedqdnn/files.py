"""Atomic writes of strict JSON and other outputs: a crash or a kill never leaves half a file.

Every output (results, comparisons, checkpoints, benchmark JSON) goes through here: the data is
written to a temporary file beside the target, flushed to disk, then renamed over it.

JSON is strict (RFC 8259): NaN and infinities, which Python's ``json`` would write as the
non-standard ``NaN`` / ``Infinity``, are written as ``null`` and each replacement is recorded
under :data:`NON_FINITE_KEY` (JSON path -> the value it replaced), so a reader knows why a
number is missing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

NON_FINITE_KEY = "non_finite_values"  # {json path: "nan" | "inf" | "-inf"} of nulls written


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode())


def strict_json_value(payload: object) -> tuple[object, dict[str, str]]:
    """``payload`` with every non-finite float replaced by None, and {path: what it was}.

    Paths are dotted keys and list indices, e.g. ``history.3.train_loss``.
    """
    replaced: dict[str, str] = {}

    def clean(value: object, path: str) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            replaced[path] = str(value)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(value)]
        return value

    return clean(payload, ""), replaced


def dumps_strict(payload: object, indent: int | None = None) -> str:
    """Strict JSON text of ``payload``; non-finite numbers become null, recorded under
    :data:`NON_FINITE_KEY` when ``payload`` is a dict (see the module docstring)."""
    cleaned, replaced = strict_json_value(payload)
    if replaced and isinstance(cleaned, dict):
        cleaned[NON_FINITE_KEY] = {**cleaned.get(NON_FINITE_KEY, {}), **replaced}
    return json.dumps(cleaned, indent=indent, allow_nan=False)


def write_json(path: Path, payload: object, indent: int | None = 2) -> None:
    """Write ``payload`` as strict JSON, atomically."""
    write_text_atomic(Path(path), dumps_strict(payload, indent))


def read_json_object(path: Path, required: tuple[str, ...], what: str) -> dict:
    """A JSON object with keys ``required`` from ``path``, or a one-line ValueError naming the
    file and what is wrong (not JSON, cut short, another kind of file)."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON, perhaps cut short ({err})") from None
    missing = [k for k in required if k not in data] if isinstance(data, dict) else required
    if missing:
        raise ValueError(f"{path} is not {what}: it has no {missing[0]!r}")
    return data
