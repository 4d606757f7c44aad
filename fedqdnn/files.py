"""Atomic writes of strict JSON and other outputs: a crash or a kill never leaves half a file;
checked reads.

Every output (results, comparisons, checkpoints, benchmark JSON) goes through here: the data is
written to a temporary file beside the target, flushed to disk, then renamed over it. An output
read back (``fedqdnn plot``) is checked against the keys its reader needs, so a stale, empty or
truncated file fails with one line instead of a traceback.

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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

NON_FINITE_KEY = "non_finite_values"  # {json path: "nan" | "inf" | "-inf"} of nulls written


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a flushed temporary file and a rename.

    On any failure (a full disk, a quota, a signal) the temporary is removed and ``path`` is
    left as it was; an ``OSError`` is raised again naming ``path`` (the bare "[Errno 28] No
    space left on device" names no file), without a cause, so that the one line a run ends
    with (the innermost cause's) is this one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            reason = err.strerror or str(err) or type(err).__name__
            raise OSError(err.errno, f"cannot write {path}: {reason}") from None
        raise


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


def read_json_checked(path: Path, schema: object) -> dict:
    """A JSON output read back for redrawing: ``ValueError`` with one line naming the file and
    what is wrong (not JSON, truncated, a key missing) when it does not match ``schema`` (a type
    pydantic validates, e.g. a model of the keys the reader needs). Returns the data as read."""
    from pydantic import TypeAdapter, ValidationError

    from fedqdnn.validation import one_line

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated?): {err}") from None
    try:
        TypeAdapter(schema).validate_python(data)
    except ValidationError as err:
        raise ValueError(f"{path} {_problems(err, one_line(err, _location))}") from None
    return data


def _problems(err: ValidationError, first: str) -> str:
    """pydantic errors as one phrase: the missing keys (one example per key, not one per list
    item or dict entry), else the ``first`` error as :func:`~fedqdnn.validation.one_line` says
    it."""
    missing: dict[tuple, str] = {}
    for e in err.errors(include_url=False):
        if e["type"] == "missing":
            missing.setdefault((e["loc"][0], e["loc"][-1]), _location(e["loc"]))
    if missing:
        shown = ", ".join(list(missing.values())[:4])
        more = f" and {len(missing) - 4} more keys" if len(missing) > 4 else ""
        return f"lacks {shown}{more} (written by another fedqdnn version? run it again)"
    return f"is invalid: {first}"


def _location(loc: tuple) -> str:
    """``('history', 3, 'round')`` -> ``history[3].round``."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    return where.removeprefix(".") or "its top level"
