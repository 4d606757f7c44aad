"""Reproduce the seed paper's claim at small scale, offline (docs/results.md).

Runs, for each data set and seed: dedicated models per bit mode; the joint Quantizable
DNN (bit-specific BN + consistency loss); joint with one shared BN (as trained and after
per-mode BN recalibration); joint without the consistency term; joint with learnable
per-mode activation clips. Each run's results.json is kept (an interrupted sweep resumes
where it stopped) and a markdown table of mean ± std per mode is written.

    python -m simulations.reproduce_core --seeds 0,1,2 --out results/core
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fedqdnn.centralized import make_job, run_training
from fedqdnn.files import write_json
from fedqdnn.tables import markdown_table, mean_std_cell

EPOCHS = {"digits": 20, "mnist1d": 20}
VARIANTS: dict[str, dict] = {
    "dedicated": {"method": "dedicated", "learnable_clip": False},
    "joint": {"learnable_clip": False},
    "joint, shared BN": {"bn": "shared", "recalibrate_bn": True, "learnable_clip": False},
    "joint, no consistency": {"loss": {"kd_weight": 0.0}, "learnable_clip": False},
    "joint, learnable clip": {"learnable_clip": True},
}


def run_sweep(datasets: list[str], seeds: list[int], out: Path, bits=(2, 4, 8, 32)) -> dict:
    """Run (or load, if already done) every variant x data set x seed."""
    results: dict = {}
    for dataset in datasets:
        for variant, overrides in VARIANTS.items():
            for seed in seeds:
                path = (
                    out
                    / dataset
                    / variant.replace(", ", "_").replace(" ", "-")
                    / f"seed{seed}.json"
                )
                if path.exists():
                    res = json.loads(path.read_text())
                else:
                    job = make_job(
                        dataset=dataset, bits=bits, epochs=EPOCHS[dataset], seed=seed, **overrides
                    )
                    print(f"== {dataset} / {variant} / seed {seed}", flush=True)
                    res = run_training(job, log=lambda m: None)
                    write_json(path, res)
                results.setdefault(dataset, {}).setdefault(variant, []).append(res)
    return results


def results_table(results: dict, bits=(2, 4, 8, 32)) -> str:
    """Mean ± std test accuracy (%) per mode, one table per data set."""
    sections = []
    for dataset, by_variant in results.items():
        n = len(next(iter(by_variant.values())))
        rows = []
        for variant, runs in by_variant.items():
            rows.append(
                [
                    variant,
                    *(mean_std_cell([r["accuracy_by_bits"][str(b)] for r in runs]) for b in bits),
                ]
            )
            if "accuracy_by_bits_recalibrated" in runs[0]:
                key = "accuracy_by_bits_recalibrated"
                rows.append(
                    [
                        f"{variant}, BN recalibrated per mode",
                        *(mean_std_cell([r[key][str(b)] for r in runs]) for b in bits),
                    ]
                )
        title = f"### {dataset} ({EPOCHS[dataset]} epochs, {n} seeds, test accuracy %)"
        sections.append(
            f"{title}\n\n{markdown_table(['method', *(f'{b}-bit' for b in bits)], rows)}\n"
        )
    return "\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist1d")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/core"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run_sweep(args.datasets.split(","), [int(s) for s in args.seeds.split(",")], args.out)
    table = results_table(results)
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
