"""Command line: ``fedqdnn train | simulate | compare | merge | tables | plot | bench``.

The CLI is the edge: it validates flags once, builds config objects and passes them in.
Every config key is a flag ``--KEY VALUE`` generated from the config models (FederatedConfig
for simulate and compare, TrainJob for train): one spelling everywhere, its help the field's
description and default. Bad input ends with one line naming the value and what is allowed,
exit status 2; an unexpected error with one line and the path of its traceback, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedqdnn.schema import Comparison, RunResults


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _flat_text(value: object) -> str:
    """A config value as a flag would take it."""
    from fedqdnn.config import to_flat_value

    if value is None:
        return "none"
    flat = to_flat_value(value)
    return str(flat).lower() if isinstance(flat, bool) else (str(flat) or "''")


def _flat_defaults(config: Any, sections: dict[str, Any]) -> dict[str, str]:
    """{flat key: text} of a config instance's values (its sections' keys flat beside)."""
    out = {}
    for name in type(config).model_fields:
        owner = getattr(config, name) if name in sections else config
        names = sections[name].__pydantic_fields__ if name in sections else [name]
        out.update({k.replace("_", "-"): _flat_text(getattr(owner, k)) for k in names})
    return out


def _add_config_flags(
    parser: argparse.ArgumentParser,
    fields: dict[str, Any],
    defaults: dict[str, str],
    skip: tuple[str, ...] = (),
) -> None:
    """One flag ``--KEY VALUE`` per flat config key (its help: the field's description and
    default); the value is parsed and checked by the config, like a scenario file's. A flag
    not given leaves the key to the scenario (or the job's default). Booleans take an
    optional value: ``--download`` is ``--download true``."""
    group = parser.add_argument_group("config keys (docs/federated.md; default: as shown)")
    for key, info in fields.items():
        if key in skip:
            continue
        extra: dict[str, Any] = {"metavar": "VALUE"}
        if info.annotation is bool:
            extra = {"nargs": "?", "const": "true", "metavar": "true|false"}
        group.add_argument(
            f"--{key}",
            dest=_dest(key),
            default=None,
            help=f"{info.description or key} (default: {defaults[key]})",
            **extra,
        )


def _dest(key: str) -> str:
    return "key_" + key.replace("-", "_")


def _given_keys(args: argparse.Namespace, fields: dict[str, Any]) -> dict[str, str]:
    """The config keys given as flags: {flat key: text}."""
    return {k: v for k in fields if (v := getattr(args, _dest(k), None)) is not None}


# ---------------------------------------------------------------- train


def _train_fields() -> dict[str, Any]:
    from fedqdnn.centralized import JOB_SECTIONS, TrainJob
    from fedqdnn.validation import flat_fields

    return flat_fields(TrainJob, JOB_SECTIONS)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from fedqdnn.centralized import JOB_SECTIONS, TrainJob

    p = sub.add_parser("train", help="train one Quantizable DNN (joint) or one model per mode")
    _add_config_flags(p, _train_fields(), _flat_defaults(TrainJob(), JOB_SECTIONS))
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    _add_overwrite(p)
    p.set_defaults(handler=_run_train)


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results a folder already holds (default: refuse such a folder)",
    )


def _run_train(args: argparse.Namespace) -> int:
    from fedqdnn.centralized import format_table, job_data, make_job, run_training
    from fedqdnn.federated.run_folder import check_folder, claim
    from fedqdnn.files import write_json
    from fedqdnn.schema import RESULTS_FILE

    job = make_job(
        **{k.replace("-", "_"): v for k, v in _given_keys(args, _train_fields()).items()}
    )
    check_folder(args.out, overwrite=args.overwrite)
    job_data(job)  # missing data fails before the folder is touched
    with claim(args.out, overwrite=args.overwrite):
        results = run_training(job)
        write_json(args.out / RESULTS_FILE, results)
    print(format_table(results))
    print(f"results written to {args.out / RESULTS_FILE}")
    return 0


# ---------------------------------------------------------------- simulate / compare


def _scenario_fields() -> dict[str, Any]:
    from fedqdnn.config import FLAT_KEYS, SECTIONS, FederatedConfig
    from fedqdnn.validation import flat_fields

    fields = flat_fields(FederatedConfig, SECTIONS)
    return {k: fields[k] for k in FLAT_KEYS}  # the flat form's order


def _add_scenario_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Flags shared by simulate and compare: a scenario and a flag per key overriding it."""
    from fedqdnn.config import FederatedConfig
    from simulations.scenarios import DEFAULT_SCENARIO

    p.add_argument(
        "--scenario",
        default=None,
        help=f"preset name or scenario .toml file (default: {DEFAULT_SCENARIO}, whose values "
        "the config keys below show)",
    )
    defaults = {k: _flat_text(v) for k, v in FederatedConfig().to_flat().items()}
    _add_config_flags(p, _scenario_fields(), defaults, skip)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="federated simulation on Flower + Ray (default: three-tier)"
    )
    _add_scenario_flags(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/simulate"),
        help="output folder (default: outputs/simulate)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="join an existing Ray cluster (default: $RAY_ADDRESS, else a private local one)",
    )
    _add_resource_flags(p)
    p.add_argument(
        "--verbose", action="store_true", help="also show Flower's and Ray's logs (default: off)"
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the interrupted run in DIR from its last checkpoint (default: none)",
    )
    _add_overwrite(p)
    p.set_defaults(handler=_run_simulate)


def _add_resource_flags(p: argparse.ArgumentParser) -> None:
    """What Ray reserves per client actor (simulate and compare)."""
    p.add_argument(
        "--cpus-per-client",
        type=float,
        default=1.0,
        help="CPUs Ray reserves per client actor (default: 1)",
    )
    p.add_argument(
        "--gpus-per-client",
        type=float,
        default=0.0,
        help="GPUs Ray reserves per client actor, fractions share one; with device auto the "
        "clients then train on it (default: 0)",
    )


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="FedQDNN vs every baseline on the same seeds/partitions")
    _add_scenario_flags(p, skip=("seed",))  # --seeds
    p.add_argument(
        "--arms",
        default=None,
        help="comma list of arms (strategies/arms.py; default: every baseline, ablation and "
        "reference; research variants by name)",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default: 0,1,2)")
    _add_resource_flags(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/compare"),
        help="output folder (default: outputs/compare)",
    )
    _add_overwrite(p)
    p.set_defaults(handler=_run_compare)


def scenario_config(args: argparse.Namespace):
    """Scenario + flag overrides -> one validated FederatedConfig (its fleet resolved)."""
    from fedqdnn.config import from_flat
    from fedqdnn.fleet import resolve_fleet
    from simulations.scenarios import DEFAULT_SCENARIO, load_scenario

    cfg = load_scenario(args.scenario or DEFAULT_SCENARIO)
    flat = _given_keys(args, _scenario_fields())
    if "dataset" in flat and "model" not in flat:
        flat["model"] = ""  # the new data set's default model
    return resolve_fleet(from_flat(flat, base=cfg))


def _run_simulate(args: argparse.Namespace) -> int:
    from fedqdnn.federated.resources import checked_resources
    from fedqdnn.federated.simulation import load_resume
    from fedqdnn.federated.supervisor import simulate_supervised

    # checked once, before the data is loaded
    resources = checked_resources(args.cpus_per_client, args.gpus_per_client, args.ray_address)
    out, checkpoint = args.out, None
    if args.resume is not None:
        given = [*_given_keys(args, _scenario_fields())]
        given += [f for f in ("scenario", "overwrite") if getattr(args, f) not in (None, False)]
        if given:
            raise ValueError(
                f"--resume continues the run in its folder with its own config; drop "
                f"--{given[0].replace('_', '-')}"
            )
        cfg, checkpoint = load_resume(args.resume)
        out = args.resume
    else:
        cfg = scenario_config(args)
    try:
        results = simulate_supervised(
            cfg,
            out,
            resources,
            resume=checkpoint is not None,
            checkpoint=checkpoint,
            overwrite=args.overwrite,
            verbose=args.verbose,
        )
    except RuntimeError as err:  # the run failed (e.g. a full disk): what is kept, what next
        from fedqdnn.federated.run_folder import continue_hint

        raise RuntimeError(f"{err}; {continue_hint(Path(out))}") from None
    print(format_federated_table(results))
    print(f"results and plots written to {out}")
    return 0


def format_federated_table(results: RunResults) -> str:
    """Per-tier and per-mode accuracy table of a federated run."""
    from fedqdnn.deployment import evaluated_model
    from fedqdnn.tables import markdown_table

    final = results.final
    rows = []
    for tier, acc in final.accuracy_by_tier.items():
        devices = [d for d in results.per_device if d.tier == tier]
        rows.append([tier, devices[0].bits if devices else "?", len(devices), f"{acc:.4f}"])
    table = markdown_table(["tier", "bits", "devices", "accuracy (local test splits)"], rows)
    central = "  ".join(f"{b}-bit {a:.4f}" for b, a in final.accuracy_by_bits.items())
    model = evaluated_model(results.config)
    return (
        f"{table}\ncentral test set, global model {model}, per bit mode: {central}\n"
        f"wall time {results.wall_seconds:.1f}s"
    )


def _run_compare(args: argparse.Namespace) -> int:
    import functools

    from fedqdnn.federated.resources import checked_resources
    from fedqdnn.federated.supervisor import simulate_supervised
    from simulations.compare import check_arms_and_seeds, parse_seeds, run_comparison
    from strategies.arms import default_arms, get_arm

    given = ",".join(default_arms()) if args.arms is None else args.arms
    names = [s.strip() for s in given.split(",") if s.strip()]
    if not names:
        allowed = ", ".join(default_arms())
        raise ValueError(f"--arms {given!r} names no arm; e.g. {allowed}")
    for name in names:
        get_arm(name)
    seeds = parse_seeds(args.seeds)
    check_arms_and_seeds(names, seeds)  # before any resource is checked or data loaded
    resources = checked_resources(args.cpus_per_client, args.gpus_per_client)
    cfg = scenario_config(args)
    simulate_fn = functools.partial(simulate_supervised, resources=resources)
    result = run_comparison(cfg, names, seeds, args.out, simulate_fn, overwrite=args.overwrite)
    print(_comparison_tables(result))
    print(f"comparison written to {args.out} ({result.wall_seconds:.0f}s)")
    return 0


def _comparison_tables(result: Comparison) -> str:
    """Every table of a comparison, as compare, merge and tables print them: accuracy per
    deployment (the measured winner first), rounds to target, stability, the margins of
    FedQDNN and of every research variant compared."""
    from simulations.compare import convergence_table, stability_table, summary_table
    from simulations.compare_plots import DEPLOYMENTS, measured_field
    from simulations.margins import margins_table
    from strategies.arms import ARMS, Kind

    parts = []
    for field in DEPLOYMENTS:
        measured, what = measured_field(result, field)
        if measured == field:  # a deployment an older comparison did not measure: left out
            parts += [f"deployed: {what}", summary_table(result, field)]
    parts += [convergence_table(result), stability_table(result)]
    for arm in result.arms:  # the method and each research variant face the same claim
        kind = ARMS[arm].kind if arm in ARMS else None
        if kind in (Kind.METHOD, Kind.VARIANT):
            parts += [
                f"{arm} against the best deployable baseline, paired by seed (each arm at its "
                "better deployment: statistics carried or pooled)",
                margins_table(result, arm),
            ]
        if kind == Kind.VARIANT and "fedqdnn" in result.arms:
            parts += [
                f"{arm} against fedqdnn (what the change buys), paired by seed",
                margins_table(result, arm, against="fedqdnn"),
            ]
    return "\n\n".join(parts)


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge comparisons of one scenario run apart (other seeds or arms) into one",
    )
    p.add_argument("folders", type=Path, nargs="+", help="compare output folders")
    p.add_argument("--out", type=Path, required=True, help="output folder of the merged one")
    p.add_argument(
        "--arms",
        help="comma list: merge only these arms of every part (default: every arm)",
    )
    _add_overwrite(p)
    p.set_defaults(handler=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from simulations.merge import merge_folders

    arms = None
    if args.arms is not None:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        if not arms:
            raise ValueError(f"--arms {args.arms!r} names no arm; give a comma list of arms")
    result = merge_folders(args.folders, args.out, overwrite=args.overwrite, arms=arms)
    print(_comparison_tables(result))
    print(f"{len(args.folders)} comparisons merged into {args.out}")
    return 0


def _add_tables(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tables", help="print the tables of a saved comparison (compare or merge output folder)"
    )
    p.add_argument("directory", type=Path, help="a compare or merge output folder")
    p.set_defaults(handler=_run_tables)


def _run_tables(args: argparse.Namespace) -> int:
    from fedqdnn.schema import COMPARISON_FILE
    from simulations.compare import read_comparison

    path = args.directory / COMPARISON_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{args.directory} holds no {COMPARISON_FILE}; give a compare or merge output folder"
        )
    print(_comparison_tables(read_comparison(path)))
    return 0


# ---------------------------------------------------------------- plot / bench


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="redraw plots from a saved results or comparison directory")
    p.add_argument("directory", type=Path, help="a simulate or compare output folder")
    p.set_defaults(handler=_run_plot)


def _is_centralized(path: Path) -> bool:
    """Whether results.json at ``path`` is what ``fedqdnn train`` writes (accuracy per mode,
    no rounds), not a federated run's (anything unreadable is left to the checked read)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "accuracy_by_bits" in data and "history" not in data


def _run_plot(args: argparse.Namespace) -> int:
    from fedqdnn.schema import COMPARISON_FILE, RESULTS_FILE

    comparison, results = args.directory / COMPARISON_FILE, args.directory / RESULTS_FILE
    if comparison.is_file():
        from simulations.compare import read_comparison
        from simulations.compare_plots import plot_comparison

        paths = plot_comparison(args.directory, read_comparison(comparison))
    elif results.is_file():
        from fedqdnn.federated.report import read_results
        from fedqdnn.federated.report_plots import plot_results

        if _is_centralized(results):
            raise ValueError(
                f"{results} is a centralized training result (fedqdnn train), which has no "
                "plots; fedqdnn plot redraws those of a simulate or compare folder"
            )

        paths = plot_results(args.directory, read_results(results))
    else:
        raise FileNotFoundError(
            f"{args.directory} holds neither {COMPARISON_FILE} nor {RESULTS_FILE}"
        )
    print("\n".join(str(p) for p in paths))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run every benchmark and write one JSON (~15 min on 2 cores)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/bench.json"),
        help="JSON file to write (default: benchmarks/results/bench.json)",
    )
    p.add_argument("--quick", action="store_true", help="fewer rounds and repeats (default: off)")
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


def build_parser() -> argparse.ArgumentParser:
    """The ``fedqdnn`` argument parser with every subcommand."""
    parser = _Parser(prog="fedqdnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    _add_simulate(sub)
    _add_compare(sub)
    _add_merge(sub)
    _add_tables(sub)
    _add_plot(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedqdnn`` console script."""
    from fedqdnn.console import setup_console
    from fedqdnn.federated.supervisor import Interrupted, interruptible

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_console(verbose=getattr(args, "verbose", False))  # progress and warnings on stderr
    try:
        with interruptible():
            return int(args.handler(args) or 0)
    except Interrupted as stop:
        print(f"fedqdnn: {_interrupted_line(stop, args.command)}", file=sys.stderr)
        return stop.exit_code
    except (ValueError, FileNotFoundError) as err:
        print(f"fedqdnn: error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, FloatingPointError, OSError) as err:
        print(f"fedqdnn: run failed: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug or an input no check foresaw: one line, traceback kept
        where = _save_traceback(err, sys.argv[1:] if argv is None else list(argv))
        message = " ".join(str(err).split())  # one line, whatever the message holds
        print(
            f"fedqdnn: internal error: {type(err).__name__}: {message} ({where})", file=sys.stderr
        )
        return 1


def _save_traceback(err: BaseException, argv: list[str]) -> str:
    """Write ``err``'s traceback to ``$FEDQDNN_CACHE/errors/<time>-<pid>.log`` (default
    ``~/.cache/fedqdnn``) and say where, so an unforeseen error costs the user one line."""
    import os
    import time
    import traceback

    from fedqdnn.data_splits import default_cache_dir

    text = "".join(traceback.format_exception(err))
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path = default_cache_dir() / "errors" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"fedqdnn {' '.join(argv)}\n{text}")
    except OSError as failed:
        return f"traceback not saved: {failed}"
    return f"traceback in {path}"


def _interrupted_line(stop, command: str) -> str:
    """What an interrupted command reached and kept, and how to continue."""
    from fedqdnn.federated.run_folder import continue_hint

    line = str(stop)
    if command == "compare":
        return f"{line}; finished runs are kept, run the same command again to continue"
    if stop.out is None:  # train, plot, bench, or a simulation that had not started
        return f"{line}; no result was written"
    done, total = stop.rounds_done, stop.rounds
    if done is None:
        line += " before the first round"
    elif done < total:
        line += f" in round {done + 1} of {total}"
    else:
        line += " while writing the results"
    return f"{line}; {continue_hint(stop.out)}"


if __name__ == "__main__":
    sys.exit(main())
