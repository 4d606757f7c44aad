"""Sweeps a researcher edits: label skew (Dirichlet alpha) and fleet composition (tier mix).

Each point is a full comparison (``simulations.compare``) on the same seeds and arms, so every
number is reproducible from the seeds; each point's comparison lands in ``OUT/<point>/`` (its
runs cached there, so a sweep that stopped resumes; a point already compared, e.g. seeds run
apart and joined by ``fedqdnn merge``, is read, not run again), and ``OUT/sweep.json`` plus
``OUT/accuracy_vs_sweep.png`` give every arm's deployed accuracy per tier at every point.

    python -m simulations.sweeps alpha --scenario fleet-100 --values 0.1,0.3,0.5 \\
        --arms fedqdnn,lowest-common,fp32-exclusive,per-tier --seeds 0,1,2 --out results/alpha
    python -m simulations.sweeps tiers --seeds 0 --out results/tiers
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from fedqdnn.config import FederatedConfig
from fedqdnn.console import setup_console
from fedqdnn.files import write_json
from fedqdnn.plotting import save
from fedqdnn.provenance import versions
from fedqdnn.schema import COMPARISON_FILE, SWEEP_FILE, SWEEP_PLOT, Comparison, Sweep, SweepCell
from fedqdnn.tables import markdown_table, mean_std_cell
from simulations.compare import check_comparison, parse_seeds, read_comparison, run_comparison
from simulations.compare_plots import DEPLOYED_FIELD, DEPLOYMENTS
from simulations.margins import margins_table
from simulations.merge import scenario_difference, select_arms
from simulations.scenarios import load_scenario

# Fleet compositions for the tier-mix sweep: share of 2-bit / 4-bit / FP32 devices.
TIER_MIXES = {
    "mostly-mcu": {"mcu-int2": 0.6, "phone-npu-int4": 0.2, "cpu-fp32": 0.2},
    "balanced": {"mcu-int2": 0.3333, "phone-npu-int4": 0.3333, "cpu-fp32": 0.3334},
    "mostly-fp32": {"mcu-int2": 0.2, "phone-npu-int4": 0.2, "cpu-fp32": 0.6},
}


def sweep(
    points: dict[str, FederatedConfig],
    arms: list[str],
    seeds: list[int],
    out: Path,
    overwrite: bool = False,
) -> dict[str, Comparison]:
    """Run a comparison per point; returns {point: comparison}. Every point is checked first;
    a point whose folder already holds a finished comparison of its scenario and seeds with
    these arms (among others) is read, not run again (``overwrite``: run it again)."""
    finished = {}
    for name, cfg in points.items():
        try:
            check_comparison(cfg, arms, seeds)
            if not overwrite and (out / name / COMPARISON_FILE).is_file():
                finished[name] = finished_point(out / name, cfg, arms, seeds)
        except ValueError as err:
            raise ValueError(f"sweep point {name}: {err}") from None
    return {
        name: finished.get(name)
        or run_comparison(cfg, arms, seeds, out / name, overwrite=overwrite)
        for name, cfg in points.items()
    }


def finished_point(
    folder: Path, cfg: FederatedConfig, arms: list[str], seeds: list[int]
) -> Comparison:
    """The comparison in ``folder`` restricted to ``arms``; ``ValueError`` unless it is one of
    ``cfg``'s scenario on exactly ``seeds`` holding every arm (e.g. made by fedqdnn merge)."""
    result = read_comparison(folder / COMPARISON_FILE)
    if (diff := scenario_difference(cfg.to_flat(), result.config)) is not None:
        raise ValueError(f"{folder} holds another scenario ({diff}); --overwrite runs it again")
    if sorted(result.seeds) != sorted(seeds):
        raise ValueError(
            f"{folder} holds seeds {','.join(map(str, result.seeds))}, not "
            f"{','.join(map(str, seeds))}; --overwrite runs it again"
        )
    try:
        return select_arms(result, arms)
    except ValueError as err:
        raise ValueError(f"{folder}: {err}; --overwrite runs it again") from None


def sweep_cells(results: dict[str, Comparison]) -> list[SweepCell]:
    """Every arm's mean and std over seeds per tier at every point, for every deployment
    (ArmRow field) the point's comparison measured (one written before a deployment existed
    has no cells for it)."""
    cells = []
    for point, result in results.items():
        for field in DEPLOYMENTS:
            if any(getattr(r, field) is None for r in result.rows):
                continue
            for arm in result.arms:
                for tier in dict.fromkeys(r.tier for r in result.rows):
                    rows = [r for r in result.rows if r.arm == arm and r.tier == tier]
                    if not rows:
                        continue
                    values = [getattr(r, field) for r in rows]
                    cells.append(
                        SweepCell(
                            point=point,
                            arm=arm,
                            tier=tier,
                            field=field,
                            bits=rows[0].bits,
                            mean=statistics.fmean(values),
                            std=statistics.stdev(values) if len(values) > 1 else None,
                            seeds=len(values),
                        )
                    )
    return cells


def summary(result: Sweep, field: str = DEPLOYED_FIELD) -> str:
    """Markdown: every arm's accuracy (%) per tier at every point, deployed as ``field``."""
    cells = result.cells_of(field)
    tiers = list(dict.fromkeys(c.tier for c in cells))
    by_key = {(c.point, c.arm, c.tier): c for c in cells}
    arms = list(dict.fromkeys(c.arm for c in cells))
    rows = []
    for arm in arms:
        for point in result.points:
            if not any((point, arm, t) in by_key for t in tiers):
                continue
            cells = [by_key.get((point, arm, t)) for t in tiers]
            rows.append(
                [
                    arm,
                    point,
                    *(_cell(c) for c in cells),
                ]
            )
    return markdown_table(["arm", "point", *tiers], rows)


def _cell(cell: SweepCell | None) -> str:
    if cell is None:
        return "–"
    if cell.std is None:
        return mean_std_cell([cell.mean])
    return f"{100 * cell.mean:.1f} ± {100 * cell.std:.1f} (n = {cell.seeds})"


def write_sweep(
    out: Path, kind: str, values: dict[str, str], results: dict[str, Comparison]
) -> Sweep:
    """Write ``OUT/sweep.json`` and its plot; returns the sweep."""
    from simulations.sweep_plots import draw_sweep

    seeds = sorted({s for r in results.values() for s in r.seeds})
    result = Sweep(
        kind=kind,
        points=values,
        field=DEPLOYED_FIELD,
        cells=sweep_cells(results),
        seeds=seeds,
        versions=versions(),
    )
    write_json(out / SWEEP_FILE, result.to_json())
    save(draw_sweep(result), out / SWEEP_PLOT)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("alpha", "tiers"))
    parser.add_argument("--scenario", default="three-tier")
    parser.add_argument("--values", default="0.1,0.5,10", help="alpha values (alpha sweep)")
    parser.add_argument("--arms", default="fedqdnn,lowest-common,per-tier,fp32-exclusive")
    parser.add_argument("--seeds", default="0", help="comma list of seeds, the same at every point")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/sweep"))
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the points' finished comparisons (their cached runs are reused)",
    )
    args = parser.parse_args()
    setup_console()  # the comparisons' progress lines on stderr
    try:
        values, points = sweep_points(args.kind, args.scenario, args.values, args.rounds)
        seeds = parse_seeds(args.seeds)
        results = sweep(points, args.arms.split(","), seeds, args.out, overwrite=args.overwrite)
    except ValueError as err:  # a bad value, arm, seed or point: one line, as compare says it
        parser.exit(2, f"error: {err}\n")
    written = write_sweep(args.out, args.kind, values, results)
    for field in dict.fromkeys(c.field for c in written.cells):
        print(f"deployed: {DEPLOYMENTS[field]}")
        print(summary(written, field))
    for point, result in results.items():  # paired by seed, each arm at its better deployment
        print(f"margins at {point} ({values[point]}):")
        print(margins_table(result))


def sweep_points(
    kind: str, scenario: str, alphas: str, rounds: int | None
) -> tuple[dict[str, str], dict[str, FederatedConfig]]:
    """({point: swept value as shown}, {point: its config}) of an alpha or tier-mix sweep."""
    base = load_scenario(scenario)
    if rounds:
        base = base.replace(rounds=rounds)
    if kind == "tiers":
        values = {n: "/".join(f"{s:.0%}" for s in mix.values()) for n, mix in TIER_MIXES.items()}
        return values, {name: base.replace(tiers=mix) for name, mix in TIER_MIXES.items()}
    values = {f"alpha-{a}": a for a in alphas.split(",")}
    points = {}
    for name, a in values.items():
        try:
            alpha = float(a)
        except ValueError:
            raise ValueError(
                f"--values: {a!r} is not a number; give Dirichlet alphas: 0.1,0.5"
            ) from None
        points[name] = base.replace(partition="dirichlet", alpha=alpha)
    return values, points


if __name__ == "__main__":
    main()
