"""Merge comparisons of one scenario, run apart, into one: seeds run on several machines or
days, arms added later. Nothing is re-run or re-evaluated: the rows, curves and deployed
devices of each part are kept as they are, so the merged tables are exactly the parts' rows.

A merge is refused (one line) unless the parts share the scenario (every config key but the
seed) and together hold every arm at every seed exactly once: a mean over arms measured on
different seeds would compare different partitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedqdnn.config import from_flat
from fedqdnn.federated.run_folder import claim
from fedqdnn.provenance import versions
from fedqdnn.schema import COMPARISON_FILE, Comparison, ComparisonPart, run_key
from simulations.compare import read_comparison, write_comparison

SCENARIO_FREE_KEYS = ("seed",)  # keys a comparison's runs set themselves


def scenario_difference(a: dict, b: dict) -> str | None:
    """The first config key two comparisons differ in (the seed aside), as ``key: a vs b``.
    A key one of them lacks (written before the key existed) counts as its default."""
    a, b = _with_defaults(a), _with_defaults(b)
    for key in sorted(set(a) | set(b)):
        if key not in SCENARIO_FREE_KEYS and a.get(key) != b.get(key):
            return f"{key}: {a.get(key)!r} vs {b.get(key)!r}"
    return None


def _with_defaults(flat: dict) -> dict:
    try:
        return from_flat(flat).to_flat()
    except ValueError:  # a key this version no longer knows: compared as written
        return dict(flat)


def merge_comparisons(parts: Sequence[Comparison], folders: Sequence[str]) -> Comparison:
    """One comparison of every part's arms and seeds (``folders`` name the parts in errors and
    in the merged file's ``parts``); ``ValueError`` unless they form a full arm x seed grid of
    one scenario."""
    if len(parts) < 2:
        raise ValueError("give at least two comparisons to merge")
    first = parts[0]
    owner: dict[tuple[str, int], str] = {}
    for part, folder in zip(parts, folders, strict=True):
        if (diff := scenario_difference(first.config, part.config)) is not None:
            raise ValueError(
                f"{folder} is another scenario than {folders[0]} ({diff}); merge runs of one"
            )
        for arm in part.arms:
            for seed in part.seeds:
                if (arm, seed) in owner:
                    raise ValueError(
                        f"arm {arm} seed {seed} is in both {owner[arm, seed]} and {folder}"
                    )
                owner[arm, seed] = folder
    arms = {name: text for part in parts for name, text in part.arms.items()}
    seeds = sorted({s for part in parts for s in part.seeds})
    missing = [f"{a} seed {s}" for a in arms for s in seeds if (a, s) not in owner]
    if missing:
        raise ValueError(
            f"every arm needs every seed ({', '.join(map(str, seeds))}); missing: "
            + ", ".join(missing)
        )
    return Comparison(
        rows=[r for part in parts for r in part.rows],
        curves={k: v for part in parts for k, v in part.curves.items()},
        per_device={k: v for part in parts for k, v in part.per_device.items()},
        arms=arms,
        seeds=seeds,
        distinct_seeds=len(seeds),
        config=first.config,
        versions=versions(),
        wall_seconds=round(sum(part.wall_seconds for part in parts), 1),
        parts=[
            ComparisonPart(
                folder=str(folder),
                arms=list(part.arms),
                seeds=list(part.seeds),
                versions=part.versions,
                wall_seconds=part.wall_seconds,
            )
            for part, folder in zip(parts, folders, strict=True)
        ],
    )


def select_arms(result: Comparison, arms: Sequence[str]) -> Comparison:
    """``result`` restricted to ``arms`` (in that order); ``ValueError`` naming an arm it lacks."""
    lacking = [a for a in arms if a not in result.arms]
    if lacking:
        raise ValueError(f"no arm {', '.join(lacking)} in it (it has {', '.join(result.arms)})")
    keys = {run_key(a, s) for a in arms for s in result.seeds}
    return result.model_copy(
        update={
            "rows": [r for r in result.rows if r.arm in arms],
            "curves": {k: v for k, v in result.curves.items() if k in keys},
            "per_device": {k: v for k, v in result.per_device.items() if k in keys},
            "arms": {a: result.arms[a] for a in arms},
        }
    )


def merge_folders(
    folders: Sequence[Path],
    out: Path,
    overwrite: bool = False,
    arms: Sequence[str] | None = None,
) -> Comparison:
    """Merge the comparisons in ``folders`` into ``out`` (comparison.json, .csv and plots);
    with ``arms``, only those arms of every part (to merge the arms that parts run at other
    seeds share, e.g. two arms re-run at more seeds beside a full comparison)."""

    parts = [read_comparison(Path(f) / COMPARISON_FILE) for f in folders]
    if arms is not None:
        parts = [_selected(part, arms, folder) for part, folder in zip(parts, folders, strict=True)]
    result = merge_comparisons(parts, [str(f) for f in folders])
    with claim(Path(out), overwrite=overwrite):
        write_comparison(Path(out), result)
    return result


def _selected(part: Comparison, arms: Sequence[str], folder: Path) -> Comparison:
    try:
        return select_arms(part, arms)
    except ValueError as err:
        raise ValueError(f"{folder}: {err}") from None
