"""What a real device pays per message under Flower's Deployment Engine.

A SuperNode starts a fresh ``flwr-clientapp`` process for every message (train, evaluate,
query), so nothing a process caches survives to the next message. Each case below is such a
fresh process, timed phase by phase with fedqdnn's device API (the path of the ClientApp's
``train`` handler):

* ``interpreter``: ``python -c pass``;
* ``import_flwr``: ``flwr.supernode.cli`` (what the ``flwr-clientapp`` script imports; it
  brings ``flwr.app`` and ``flwr.clientapp``);
* ``import_client_app``: ``fedqdnn.federated.client_app`` on top of that;
* ``data``: the run's data set and its partitions (``run_data``, ``fleet_partitions``);
* ``device``: the torch device as the ClientApp selects it (``ray_gpu_share``) and
  ``device_for`` (the device's shard, its tier and the model build);
* ``train``: one train message on the default config (digits): decode the global arrays,
  ``plan_round``, load the state, ``train_round``, encode the reply;
* ``message_total``: process spawn to the reply ready (interpreter start included);
* ``train_again``: the same round again in the same process, i.e. what ``train`` costs
  without the process's first-use costs.

``digits`` runs every phase; ``mnist1d`` stops after ``device``; ``digits_cold_cache`` is
``digits`` up to ``device`` with an empty data cache (a device's first message). Cases run
in turn, ``--repeats`` times (medians; the machine may be shared, so compare ratios of one
run). ``--before TREE`` runs the same cases on another checkout of the project (say ``git
archive <commit> | tar -x -C TREE``) interleaved with this one. ``import_profile`` lists the
modules with the largest self time of ``python -X importtime`` importing the ClientApp, and
the self time per top-level package. Torch runs one thread (``OMP_NUM_THREADS=1``), as the
ClientApp's ``use_cpu_share`` sets it on a SuperNode.

Usage: python benchmarks/deployment_cost.py [--repeats 5] [--before TREE]
       --out benchmarks/results/deployment_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = "--child"
HEAVY = (  # packages a device's process should not need, and torch's lazy compiler stack
    "sklearn", "scipy", "datasets", "pyarrow", "pandas", "matplotlib", "ray", "torch._dynamo",
    "sympy",
)  # fmt: skip
CASES = {  # name: (dataset, trains, empty data cache)
    "digits": ("digits", True, False),
    "mnist1d": ("mnist1d", False, False),
    "digits_cold_cache": ("digits", False, True),
}
PHASES = ("import_flwr", "import_client_app", "data", "device", "train")


def _child(dataset: str, trains: bool) -> None:
    """One train message's work in this fresh process; prints its phase seconds as JSON."""
    clock = time.perf_counter
    seconds: dict[str, float] = {}
    loaded: dict[str, list[str]] = {}

    def mark(phase: str, start: float) -> float:
        now = clock()
        seconds[phase] = now - start
        loaded[phase] = [m for m in HEAVY if m in sys.modules]
        return now

    t = clock()
    import flwr.supernode.cli  # noqa: F401

    t = mark("import_flwr", t)
    from fedqdnn.federated.client_app import ray_gpu_share

    t = mark("import_client_app", t)
    from fedqdnn.accelerator import select_device
    from fedqdnn.config import from_flat
    from fedqdnn.device import device_for, load_state, plan_round, train_round
    from fedqdnn.fleet import fleet_partitions, run_data

    cfg = from_flat({"dataset": dataset})
    run_data(cfg)
    fleet_partitions(cfg)
    t = mark("data", t)
    where = select_device(cfg.device, gpu_share=ray_gpu_share())  # as the ClientApp selects it
    device = device_for(cfg, 0, where)
    t = mark("device", t)
    if trains:
        seconds["train"] = _message(cfg, device, 1, load_state, plan_round, train_round)
        loaded["train"] = [m for m in HEAVY if m in sys.modules]
    reply_ready = time.time()
    if trains:
        seconds["train_again"] = _message(cfg, device, 2, load_state, plan_round, train_round)
    print(json.dumps({"seconds": seconds, "loaded": loaded, "reply_ready": reply_ready}))


def _message(cfg, device, server_round, load_state, plan_round, train_round) -> float:
    """A train message's work between the message and the reply (the global model is the
    server's round-0 model, encoded as the server sends it; encoding it is not timed)."""
    from fedqdnn.costs import array_bytes
    from fedqdnn.fleet import initial_model
    from strategies.records import to_arrayrecord, to_torch_state

    state = {k: v.detach().cpu().numpy() for k, v in initial_model(cfg).state_dict().items()}
    arrays = to_arrayrecord(state)
    start = time.perf_counter()
    plan = plan_round(cfg, device, server_round, array_bytes(arrays))
    load_state(device.model, to_torch_state(arrays))
    update = train_round(cfg, device, plan, server_round)
    to_arrayrecord(update.state)
    return time.perf_counter() - start


def _env(tree: Path, cache: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    if cache is not None:
        env["FEDQDNN_CACHE"] = cache
    return env


def _run_case(tree: Path, case: str) -> dict:
    dataset, trains, cold = CASES[case]
    with tempfile.TemporaryDirectory() as empty_cache:
        args = [sys.executable, str(Path(__file__).resolve()), CHILD, dataset]
        args += ["--train"] if trains else []
        spawned = time.time()
        done = subprocess.run(
            args, env=_env(tree, empty_cache if cold else None), capture_output=True, text=True,
            check=True,
        )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if trains:
        result["seconds"]["message_total"] = result["reply_ready"] - spawned
    return result


def _interpreter_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def _import_profile(tree: Path, top: int = 15) -> dict:
    """``-X importtime`` of the ClientApp's imports: largest self times, self time per package."""
    code = "import flwr.supernode.cli, fedqdnn.federated.client_app"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=_env(tree, None),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line[len("import time:") :].split("|")
        rows.append((int(own) / 1e6, name.strip()))
    packages: dict[str, float] = {}
    for own, name in rows:
        packages[name.split(".")[0]] = packages.get(name.split(".")[0], 0.0) + own
    return {
        "total_self_seconds": round(sum(own for own, _ in rows), 3),
        "top_modules_self_seconds": {n: round(s, 3) for s, n in sorted(rows, reverse=True)[:top]},
        "top_packages_self_seconds": {
            p: round(s, 3) for p, s in sorted(packages.items(), key=lambda kv: -kv[1])[:top]
        },
    }


def _medians(runs: list[dict]) -> dict:
    names = [*PHASES, "train_again", "message_total"]
    seconds = {
        n: round(statistics.median(r["seconds"][n] for r in runs), 3)
        for n in names
        if n in runs[0]["seconds"]
    }
    return {"median_seconds": seconds, "heavy_modules_loaded": runs[-1]["loaded"]}


def run(out: Path | None, repeats: int = 5, before: Path | None = None) -> dict:
    """Every case on this tree (and ``before``), interleaved; medians and after/before ratios."""
    from fedqdnn.files import write_json
    from fedqdnn.provenance import load_average_1min, versions

    load_before = load_average_1min()
    trees = {"after": Path(__file__).resolve().parents[1]}
    if before is not None:
        trees = {"before": before.resolve(), **trees}
    for tree in trees.values():  # warm-up: bytecode and data caches (not timed)
        for case in ("digits", "mnist1d"):
            _run_case(tree, case)
    runs: dict[str, dict[str, list[dict]]] = {t: {c: [] for c in CASES} for t in trees}
    interpreter = []
    for repeat in range(repeats):
        interpreter.append(_interpreter_seconds())
        order = list(trees.items())
        for label, tree in order[repeat % 2 :] + order[: repeat % 2]:  # alternate who goes first
            for case in CASES:
                runs[label][case].append(_run_case(tree, case))
    result: dict = {
        "interpreter_seconds": round(statistics.median(interpreter), 3),
        "repeats": repeats,
        "trees": {label: str(tree) for label, tree in trees.items()},
    }
    for label, tree in trees.items():
        result[label] = {case: _medians(r) for case, r in runs[label].items()}
        result[label]["import_profile"] = _import_profile(tree)
    if before is not None:
        result["ratio_after_to_before"] = {
            case: {
                n: round(s / result["before"][case]["median_seconds"][n], 2)
                for n, s in result["after"][case]["median_seconds"].items()
                if result["before"][case]["median_seconds"].get(n)
            }
            for case in CASES
        }
    result["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor()}
    result["load_avg_1min_before_after"] = [load_before, load_average_1min()]
    result["versions"] = versions()
    if out is not None:
        write_json(out, result)
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:  # a device's process: fedqdnn from PYTHONPATH
        _child(sys.argv[2], "--train" in sys.argv)
        sys.exit(0)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/deployment_cost.json"))
    parser.add_argument("--repeats", type=int, default=5, help="processes per case (medians)")
    parser.add_argument("--before", type=Path, default=None, help="another checkout to compare")
    args = parser.parse_args()
    res = run(args.out, args.repeats, args.before)
    print(json.dumps({k: res[k] for k in res if k not in ("versions",)}, indent=1))
