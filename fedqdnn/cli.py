"""Command line: ``fedqdnn train`` (centralized) and ``fedqdnn simulate`` (federated).

The CLI is the edge: it validates flags once, builds config objects and passes them in.
Bad input ends with one line naming the value and what is allowed, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fedqdnn.bitmodes import parse_bit_modes


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bits(text: str) -> tuple[int, ...]:
    try:
        return parse_bit_modes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_train(sub: argparse._SubParsersAction) -> None:
    from fedqdnn.centralized import METHODS
    from fedqdnn.data import DATASET_NAMES
    from fedqdnn.losses import TEACHERS
    from fedqdnn.models import MODELS

    p = sub.add_parser("train", help="train one Quantizable DNN (joint) or one model per mode")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument(
        "--model", default=None, choices=sorted(MODELS), help="default: the data set's model"
    )
    p.add_argument("--bits", type=_bits, default=(2, 4, 8, 32), help="e.g. 2,4,8,32")
    p.add_argument("--method", default="joint", choices=METHODS)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--num-samples", type=int, default=None, help="mnist1d sample count")
    p.add_argument("--data-root", default=None, help="folder holding CIFAR files")
    p.add_argument("--width", type=int, default=None, help="model width (multiplier for ResNet)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--ce-weight", type=float, default=1.0)
    p.add_argument("--kd-weight", type=float, default=1.0, help="0 disables the consistency term")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--teacher", default="top", choices=TEACHERS)
    p.add_argument("--shared-bn", action="store_true", help="ablation: one BN for all modes")
    p.add_argument(
        "--clip",
        default="learnable",
        choices=("learnable", "fixed"),
        help="activation clip: per-mode learnable (AdaBits, default) or fixed [0, 1] (DoReFa)",
    )
    p.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="also report accuracy after per-mode BN recalibration",
    )
    p.add_argument("--out", type=Path, default=Path("out"))
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from fedqdnn.centralized import TrainJob, format_table, run_training, write_json
    from fedqdnn.losses import ConsistencyConfig
    from fedqdnn.training import OptimConfig

    job = TrainJob(
        dataset=args.dataset,
        model=args.model,
        bits=args.bits,
        method=args.method,
        epochs=args.epochs,
        seed=args.seed,
        data_seed=args.data_seed,
        num_samples=args.num_samples,
        data_root=args.data_root,
        width=args.width,
        bit_specific_bn=not args.shared_bn,
        learnable_clip=args.clip == "learnable",
        recalibrate_bn=args.recalibrate_bn,
        loss=ConsistencyConfig(args.ce_weight, args.kd_weight, args.temperature, args.teacher),
        optim=OptimConfig(lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size),
    )
    results = run_training(job)
    write_json(args.out / "results.json", results)
    print(format_table(results))
    print(f"results written to {args.out / 'results.json'}")
    return 0


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from fedqdnn.data import DATASET_NAMES

    p = sub.add_parser(
        "simulate", help="federated simulation on Flower + Ray (default: three-tier)"
    )
    p.add_argument("--scenario", default=None, help="preset name or scenario .toml file")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--clients", type=int, default=None, help="number of virtual devices")
    p.add_argument("--dataset", default=None, choices=DATASET_NAMES)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any scenario key, e.g. --set local-epochs=1 (repeatable)",
    )
    p.add_argument("--out", type=Path, default=Path("outputs/simulate"))
    p.add_argument(
        "--ray-address",
        default=None,
        help="join an existing Ray cluster (default: $RAY_ADDRESS or a local one)",
    )
    p.add_argument("--cpus-per-client", type=float, default=1.0)
    p.add_argument("--gpus-per-client", type=float, default=0.0)
    p.add_argument("--verbose", action="store_true", help="show Flower and Ray logs")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the interrupted run in DIR from its last checkpoint",
    )
    p.set_defaults(handler=_run_simulate)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from fedqdnn.data import DATASET_NAMES

    p = sub.add_parser("compare", help="FedQDNN vs every baseline on the same seeds/partitions")
    p.add_argument("--scenario", default=None, help="preset name or scenario .toml file")
    p.add_argument("--dataset", default=None, choices=DATASET_NAMES)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--clients", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--strategies", default=None, help="comma list (default: all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=Path("outputs/compare"))
    p.set_defaults(handler=_run_compare, seed=None)


def _run_compare(args: argparse.Namespace) -> int:
    from simulations.compare import run_comparison, summary_table
    from strategies.baselines import STRATEGIES, get_strategy

    names = [s.strip() for s in (args.strategies or ",".join(STRATEGIES)).split(",") if s.strip()]
    for name in names:
        get_strategy(name)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r} is not a comma list of integers") from None
    if not seeds:
        raise ValueError("--seeds is empty; give e.g. 0,1,2")
    cfg = scenario_config(args)
    result = run_comparison(cfg, names, seeds, args.out, log=_progress)
    print(summary_table(result))
    print(f"comparison written to {args.out} ({result['wall_seconds']:.0f}s)")
    return 0


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="redraw plots from a saved results or comparison directory")
    p.add_argument("directory", type=Path)
    p.set_defaults(handler=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    import json

    comparison, results = args.directory / "comparison.json", args.directory / "results.json"
    if comparison.is_file():
        from simulations.compare_plots import plot_comparison

        paths = plot_comparison(args.directory, json.loads(comparison.read_text()))
    elif results.is_file():
        from fedqdnn.federated.report import plot_results

        paths = plot_results(args.directory, json.loads(results.read_text()))
    else:
        raise FileNotFoundError(f"{args.directory} holds neither comparison.json nor results.json")
    print("\n".join(str(p) for p in paths))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run every benchmark and write one JSON (~15 min on 2 cores)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench.json"))
    p.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    p.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    import json

    try:
        from benchmarks.run_all import HEADLINE, run_all
    except ImportError:
        raise FileNotFoundError(
            "the benchmarks package ships with the source tree; run from a clone of fedqdnn"
        ) from None
    result = run_all(args.out, quick=args.quick)
    print(json.dumps({k: result.get(k) for k in HEADLINE}, indent=2))
    print(f"benchmark JSON written to {args.out}")
    return 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def scenario_config(args: argparse.Namespace):
    """Scenario + flag overrides -> one validated FederatedConfig."""
    from fedqdnn.federated.config import from_flat
    from simulations.scenarios import DEFAULT_SCENARIO, load_scenario

    cfg = load_scenario(args.scenario or DEFAULT_SCENARIO)
    flat: dict[str, object] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r} is not KEY=VALUE")
        flat[key.strip()] = value.strip()
    for key, value in (
        ("rounds", args.rounds),
        ("num-clients", args.clients),
        ("dataset", args.dataset),
        ("seed", args.seed),
    ):
        if value is not None:
            flat[key] = value
    if args.dataset is not None and not any(k.startswith("model") for k in flat):
        flat["model"] = ""  # the new data set's default model
    return from_flat(flat, base=cfg)


def _run_simulate(args: argparse.Namespace) -> int:
    if args.cpus_per_client <= 0 or args.gpus_per_client < 0:
        raise ValueError("--cpus-per-client must be > 0 and --gpus-per-client >= 0")
    from fedqdnn.federated.simulation import load_resume, simulate

    resume, out = None, args.out
    if args.resume is not None:
        given = [
            f
            for f in ("scenario", "rounds", "clients", "dataset", "seed")
            if getattr(args, f) is not None
        ] + (["set"] if args.set else [])
        if given:
            raise ValueError(f"--resume takes the run's own config; drop --{given[0]}")
        cfg, resume = load_resume(args.resume)
        out = args.resume
    else:
        cfg = scenario_config(args)
    results = simulate(
        cfg,
        out,
        args.ray_address,
        args.cpus_per_client,
        args.gpus_per_client,
        args.verbose,
        resume,
    )
    print(format_federated_table(results))
    print(f"results and plots written to {out}")
    return 0


def format_federated_table(results: dict) -> str:
    """Per-tier and per-mode accuracy table of a federated run."""
    final = results["final"]
    rows = ["tier                 bits  devices  accuracy (local test, mean over devices)"]
    for tier, acc in final["accuracy_by_tier"].items():
        devices = [d for d in results["per_device"] if d["tier"] == tier]
        bits = devices[0]["bits"] if devices else "?"
        rows.append(f"{tier:<20} {bits:>4}  {len(devices):>7}  {acc:.4f}")
    rows.append(
        "central test set, global model per bit mode: "
        + "  ".join(f"{b}-bit {a:.4f}" for b, a in final["accuracy_by_bits"].items())
    )
    rows.append(f"wall time {results['wall_seconds']:.1f}s")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    """The ``fedqdnn`` argument parser with every subcommand."""
    parser = _Parser(prog="fedqdnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    _add_simulate(sub)
    _add_compare(sub)
    _add_plot(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedqdnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"fedqdnn: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"fedqdnn: run failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
