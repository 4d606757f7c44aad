"""Sweeps a researcher edits: label skew (Dirichlet alpha) and fleet composition (tier mix).

Each point is a full comparison (``simulations.compare``) on the same seeds, so every
number is reproducible from the seeds; results land in ``OUT/<point>/`` and a summary
table of FedQDNN's per-tier accuracy per point is printed.

    python -m simulations.sweeps alpha --values 0.1,0.5,10 --seeds 0 --out results/alpha
    python -m simulations.sweeps tiers --seeds 0 --out results/tiers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedqdnn.config import FederatedConfig
from fedqdnn.console import setup_console
from fedqdnn.schema import Comparison
from fedqdnn.tables import markdown_table, mean_cell
from simulations.compare import run_comparison
from simulations.scenarios import load_scenario

# Fleet compositions for the tier-mix sweep: share of 2-bit / 4-bit / FP32 devices.
TIER_MIXES = {
    "mostly-mcu": {"mcu-int2": 0.6, "phone-npu-int4": 0.2, "cpu-fp32": 0.2},
    "balanced": {"mcu-int2": 0.3333, "phone-npu-int4": 0.3333, "cpu-fp32": 0.3334},
    "mostly-fp32": {"mcu-int2": 0.2, "phone-npu-int4": 0.2, "cpu-fp32": 0.6},
}


def sweep(
    points: dict[str, FederatedConfig], arms: list[str], seeds: list[int], out: Path
) -> dict[str, Comparison]:
    """Run a comparison per point; returns {point: comparison}."""
    return {name: run_comparison(cfg, arms, seeds, out / name) for name, cfg in points.items()}


def summary(results: dict[str, Comparison], arm: str = "fedqdnn") -> str:
    """Markdown: the arm's mean per-tier accuracy (%) at every sweep point."""
    tiers = sorted({r.tier for res in results.values() for r in res.rows})
    rows = [
        [
            name,
            *(
                mean_cell([r.accuracy for r in res.rows if r.arm == arm and r.tier == tier])
                for tier in tiers
            ),
        ]
        for name, res in results.items()
    ]
    return markdown_table(["point", *tiers], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("alpha", "tiers"))
    parser.add_argument("--scenario", default="three-tier")
    parser.add_argument("--values", default="0.1,0.5,10", help="alpha values (alpha sweep)")
    parser.add_argument("--arms", default="fedqdnn,per-tier,fp32-exclusive")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/sweep"))
    args = parser.parse_args()
    setup_console()  # the comparisons' progress lines on stderr
    base = load_scenario(args.scenario)
    if args.rounds:
        base = base.replace(rounds=args.rounds)
    if args.kind == "alpha":
        points = {
            f"alpha-{a}": base.replace(partition="dirichlet", alpha=float(a))
            for a in args.values.split(",")
        }
    else:
        points = {name: base.replace(tiers=mix) for name, mix in TIER_MIXES.items()}
    results = sweep(points, args.arms.split(","), [int(s) for s in args.seeds.split(",")], args.out)
    print(summary(results))


if __name__ == "__main__":
    main()
