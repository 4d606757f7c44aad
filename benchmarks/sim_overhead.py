"""Cost of the simulation machinery itself: Flower + Ray against the same work in bare PyTorch.

Three figures, each measured side by side in one run:

``steady_round_ratio_vs_bare``
    Steady-state seconds per round of the real Flower + Ray simulation
    (:func:`fedqdnn.federated.simulation.simulate`) with ONE Ray actor (``cpus_per_client``
    = all CPUs, so clients run one after another), divided by the seconds per round of the
    same work done sequentially in one plain Python process: per client, load the global
    state into the model, :func:`~fedqdnn.federated.client_app.local_train`, take the
    uploaded entries, then :func:`strategies.aggregation.validate_update` +
    :func:`~strategies.aggregation.aggregate`, each client's local evaluation at its top mode
    and the server's evaluation of every mode (a Flower round does all of these). The median
    over rounds 2..R counts; round 1 also builds the data and models. Flower's per-round times
    come from timestamps taken after each round's central evaluation (the benchmark wraps
    ``server_app.central_evaluator`` in its own child process); the difference of an R-round
    and a 1-round run is reported as a cross-check. The server's per-round checkpoint is off
    in these runs (bare writes none); its cost is a separate figure (full mode). Bare client
    work uses as many torch threads as the one-actor ClientApp (its CPU share).
``two_actor_speedup``
    Steady seconds per round with one actor divided by that with two actors (``cpus_per_client``
    = 1 on a 2-CPU machine), same work. Its bare-PyTorch limit on the same machine at the same
    time, ``bare_two_process_speedup`` (two bare runs at once, half the CPU share each), is
    reported next to it: on a shared machine it shows how much parallelism was there to get.
``peak_rss_ratio_1000_vs_10_clients``
    Peak memory of the whole process tree (driver, Ray's GCS/raylet and every worker: RSS
    summed over all descendants, sampled from /proc) for 1,000 virtual clients divided by that
    for 10, with 10 clients sampled per round in both (``fraction-train`` =
    ``fraction-evaluate`` = 10 / clients), one round, two actors, MNIST-1D (8,000 training
    samples: 8 per client at 1,000 clients). PSS (shared pages split between processes) is
    reported too.

Every run, bare ones included, is a fresh child process with a timeout (its whole process
tree is killed on timeout). Children start their own local Ray instance (``RAY_ADDRESS=local``)
so they never join a cluster someone else started on this machine.

Usage: python benchmarks/sim_overhead.py [--quick] --out sim_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    "steady_round_ratio_vs_bare": {"max": 1.2},
    "two_actor_speedup": {"min": 1.6},
    "peak_rss_ratio_1000_vs_10_clients": {"max": 1.2},
}
CHILD_TIMEOUT_S = 420.0
SAMPLE_INTERVAL_S = 0.5
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- configurations


# Proportions that survive the flat (string) form exactly: FederatedConfig's default of 1/3
# each is written as 0.333333 (sum 0.999999), which assign_profiles (tolerance 1e-6) refuses
# in every client, so every reply would be an error.
THREE_TIERS = {"mcu-int2": 0.3333, "phone-npu-int4": 0.3333, "cpu-fp32": 0.3334}


def timing_config(rounds: int, checkpoints: bool = False):
    """The round-time workload: digits, 10 clients (three tiers), 2 local epochs.

    Without ``checkpoints`` the server's per-round checkpoint (arrays + history written and
    fsync'ed every round by default) is switched off: the bare side writes none, and its
    cost is measured by a separate run (full mode) rather than counted as simulation overhead.
    """
    from fedqdnn.federated.config import FederatedConfig

    cfg = FederatedConfig(
        dataset="digits", tiers=THREE_TIERS, num_clients=10, rounds=rounds, local_epochs=2
    )
    if hasattr(cfg, "checkpoint_every"):
        cfg = cfg.replace(checkpoint_every=1 if checkpoints else 0)
    return cfg


def memory_config(num_clients: int, per_round: int = 10):
    """The memory workload: MNIST-1D, ``per_round`` of ``num_clients`` sampled, one round."""
    from fedqdnn.federated.config import FederatedConfig

    fraction = per_round / num_clients
    return FederatedConfig(
        dataset="mnist1d",
        tiers=THREE_TIERS,
        num_clients=num_clients,
        rounds=1,
        local_epochs=1,
        fraction_train=fraction,
        fraction_evaluate=fraction,
    )


# ---------------------------------------------------------------- child process side


def _bare_child(cfg) -> dict:
    """The Flower round's work, sequentially in this process; timestamps after each round.

    Client work uses the torch threads a ClientApp would use here (``OMP_NUM_THREADS``, which
    the benchmark sets to 1); server work uses 1, as the ServerApp does."""
    import numpy as np
    import torch

    from fedqdnn.federated import client_app
    from fedqdnn.federated.client_app import (
        client_environment,
        client_seed,
        local_train,
        trained_state,
    )
    from fedqdnn.federated.server_app import federated_data, initial_model
    from fedqdnn.training import evaluate
    from strategies.aggregation import ClientUpdate, aggregate, validate_update

    client_threads = max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1"))))

    def modes_of(cfg, env) -> tuple[int, ...]:  # the ClientApp's policy (no deadline here)
        return client_app.modes_to_train(cfg, env)

    start = time.perf_counter()
    torch.set_num_threads(1)
    data = federated_data(cfg)
    server_model = initial_model(cfg)  # the ServerApp's own round-0 model
    state = {k: v.detach().cpu().numpy().copy() for k, v in server_model.state_dict().items()}

    def load(model, global_state) -> None:
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in global_state.items()})

    def central_eval(global_state) -> dict:
        torch.set_num_threads(1)
        load(server_model, global_state)
        return {b: evaluate(server_model, data.x_test, data.y_test, b)[0] for b in cfg.bits}

    stamps = {}
    accuracy = central_eval(state)  # the ServerApp evaluates round 0 first, too
    stamps[0] = time.perf_counter() - start
    clients = range(cfg.num_clients)  # fraction-train = fraction-evaluate = 1
    rejected = 0
    for rnd in range(1, cfg.rounds + 1):
        torch.set_num_threads(client_threads)
        updates = []
        for pid in clients:
            env = client_environment(cfg, pid)
            load(env.model, state)
            modes = modes_of(cfg, env)
            local_train(env, cfg, modes, client_seed(cfg.seed, rnd, pid))
            # copies: trained_state shares memory with the model, which the next client trains
            upload = {k: np.array(v, copy=True) for k, v in trained_state(env.model, modes).items()}
            update = ClientUpdate(upload, len(env.y_train), modes)
            if validate_update(state, update) is None:
                updates.append(update)
            else:
                rejected += 1
        # as FedQDNN's to_arrayrecord: 0-d results (num_batches_tracked) become arrays again
        state = {k: np.require(v, requirements="C") for k, v in aggregate(state, updates).items()}
        for pid in clients:  # federated evaluation: each device at its top mode
            env = client_environment(cfg, pid)
            load(env.model, state)
            evaluate(env.model, env.x_test, env.y_test, modes_of(cfg, env)[-1])
        accuracy = central_eval(state)
        stamps[rnd] = time.perf_counter() - start
    return {
        "seconds": time.perf_counter() - start,
        "round_stamps": stamps,
        "client_torch_threads": client_threads,
        "final_accuracy_by_bits": {str(b): a for b, a in accuracy.items()},
        "rejected": rejected,
    }


def _flower_child(cfg, out_dir: str, cpus_per_client: float) -> dict:
    """The real simulation; timestamps after each round's central evaluation."""
    from fedqdnn.federated import server_app
    from fedqdnn.federated.simulation import simulate

    stamps: dict[int, float] = {}
    start = time.perf_counter()
    original = getattr(server_app, "central_evaluator", None)
    if original is not None:  # wrap (in this child only) to timestamp the end of each round

        def central_evaluator(*args, **kwargs):
            evaluate_fn = original(*args, **kwargs)

            def timed(server_round, arrays):
                result = evaluate_fn(server_round, arrays)
                stamps[int(server_round)] = time.perf_counter() - start
                return result

            return timed

        server_app.central_evaluator = central_evaluator
    results = simulate(cfg, Path(out_dir), cpus_per_client=cpus_per_client)
    seconds = time.perf_counter() - start
    history = results.get("history", [])
    return {
        "seconds": seconds,
        "round_stamps": stamps,
        "round_seconds_in_results": [h.get("round_seconds") for h in history],
        "server_wall_seconds": results.get("wall_seconds"),
        "clients_per_round": [len(h.get("clients", [])) for h in history],
        "rejected": sum(len(h.get("rejected", [])) for h in history),
        "final_accuracy_by_bits": results.get("final", {}).get("accuracy_by_bits"),
    }


def _child_main(spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from fedqdnn.federated.config import from_flat

    cfg = from_flat(spec["config"])
    if spec["kind"] == "bare":
        result = _bare_child(cfg)
    else:
        result = _flower_child(cfg, spec["out_dir"], spec["cpus_per_client"])
    Path(spec["result_file"]).write_text(json.dumps(result))


# ---------------------------------------------------------------- process-tree sampling


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(ppid, start time in ticks, cpu seconds) of ``pid`` from /proc, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): ppid = field 4, utime/stime = 14/15, starttime = 22
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / _TICKS


def _descendants(root: int) -> dict[int, tuple[int, float]]:
    """{pid: (start ticks, cpu seconds)} of ``root`` and everything below it."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is None:
            continue
        children.setdefault(st[0], []).append(int(entry.name))
        info[int(entry.name)] = (st[1], st[2])
    out, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in info:
            out[pid] = info[pid]
            stack.extend(children.get(pid, []))
    return out


def _label(pid: int, previous: str | None) -> str:
    """Short name of a process: Ray's title (``ray::ClientAppActor``), else the program or
    python script name. A worker that was once a ClientAppActor keeps that name."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return previous or "?"
    first = args[0].decode(errors="replace")
    if first.startswith("ray::"):
        label = first.split()[0].split(".")[0]
    elif "python" in Path(first).name and len(args) > 1:
        script = next((a.decode() for a in args[1:] if a.endswith(b".py")), "")
        label = Path(script).name or Path(first).name
    else:
        label = Path(first).name
    if previous and previous.startswith("ray::") and previous != "ray::IDLE":
        return previous  # an actor process keeps its class name
    return label


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


class _TreeSampler(threading.Thread):
    """Samples the memory of a process tree until stopped; remembers every pid it saw."""

    def __init__(self, root: int, pss: bool) -> None:
        super().__init__(daemon=True)
        self.root, self.pss = root, pss
        self.seen: dict[int, tuple[int, float]] = {}  # pid -> (start ticks, last cpu seconds)
        self.labels: dict[int, str] = {}  # pid -> what it is (driver, ray::ClientAppActor, ...)
        self.peak_rss = self.peak_pss = self.peak_procs = self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(SAMPLE_INTERVAL_S)

    def sample(self) -> None:
        tree = _descendants(self.root)
        if not tree:
            return
        self.seen.update(tree)
        for pid in tree:
            self.labels[pid] = "driver" if pid == self.root else _label(pid, self.labels.get(pid))
        self.samples += 1
        self.peak_procs = max(self.peak_procs, len(tree))
        self.peak_rss = max(self.peak_rss, sum(_rss(p) for p in tree))
        if self.pss:
            self.peak_pss = max(self.peak_pss, sum(_pss(p) for p in tree))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def cpu_seconds(self) -> float:
        """CPU seconds of the tree (each process as last sampled)."""
        return sum(cpu for _, cpu in self.seen.values())

    def cpu_by_label(self) -> dict[str, float]:
        """CPU seconds per kind of process, largest first."""
        out: dict[str, float] = {}
        for pid, (_, cpu) in self.seen.items():
            label = self.labels.get(pid, "?")
            out[label] = out.get(label, 0.0) + cpu
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}

    def kill_leftovers(self, grace: float) -> int:
        """SIGKILL processes of this tree still alive after ``grace`` s (same pid AND start)."""
        deadline = time.monotonic() + grace
        while True:
            alive = [p for p, (t, _) in self.seen.items() if (st := _stat(p)) and st[1] == t]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return len(alive)


class _Child:
    """One measurement in a fresh process tree: started on creation, collected by wait()."""

    def __init__(self, name: str, spec: dict, work: Path, pss: bool = False) -> None:
        self.spec = {**spec, "result_file": str(work / f"{name}.result.json")}
        spec_file = work / f"{name}.spec.json"
        spec_file.write_text(json.dumps(self.spec))
        self.log_file = work / f"{name}.log"
        # OMP_NUM_THREADS=1: Ray then leaves it alone in its workers, so every client computes
        # with one torch thread whatever its CPU share (the ClientApp follows OMP_NUM_THREADS);
        # 1 actor vs 2 actors then differ in parallel clients only, and bare matches both.
        env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO)}
        env["OMP_NUM_THREADS"] = "1"
        if len(str(work)) <= 40:  # Ray's session logs go with the work dir (socket paths
            env["RAY_TMPDIR"] = str(work)  # below it must stay under 107 characters)
        self.pss = pss
        self.load_before = os.getloadavg()[0]
        self.started = time.perf_counter()
        with self.log_file.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_file)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.sampler = _TreeSampler(self.proc.pid, pss)
        self.sampler.start()

    def kill(self) -> None:
        """SIGKILL every process of the tree (the child started it in its own session)."""
        self.sampler.stop()
        self.sampler.sample()  # the latest descendants, so none is missed
        self.sampler.kill_leftovers(0.0)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()

    def wait(self) -> dict:
        """Wait (killing the tree on timeout); wall time, peak memory and the child's result."""
        proc, sampler, spec = self.proc, self.sampler, self.spec
        timed_out = False
        try:
            proc.wait(timeout=max(1.0, CHILD_TIMEOUT_S - (time.perf_counter() - self.started)))
        except BaseException as err:  # timeout, or Ctrl-C / an error here: end the tree
            timed_out = isinstance(err, subprocess.TimeoutExpired)
            self.kill()
            if not timed_out:
                raise
        wall = time.perf_counter() - self.started
        if sampler.is_alive():
            sampler.stop()
        leftovers = sampler.kill_leftovers(10.0)
        record = {
            "kind": spec["kind"],
            "cpus_per_client": spec.get("cpus_per_client"),
            "num_clients": spec["config"]["num-clients"],
            "rounds": spec["config"]["rounds"],
            "process_wall_seconds": round(wall, 3),
            "returncode": proc.returncode,
            "timed_out": timed_out,
            "load_avg_1min_before_after": [
                round(self.load_before, 2),
                round(os.getloadavg()[0], 2),
            ],
            "processes_seen": len(sampler.seen),
            "peak_processes": sampler.peak_procs,
            "peak_tree_rss_mb": round(sampler.peak_rss / 2**20, 1),
            "tree_cpu_seconds": round(sampler.cpu_seconds(), 2),
            "driver_cpu_seconds": round(sampler.seen.get(proc.pid, (0, 0.0))[1], 2),
            "cpu_seconds_by_process": sampler.cpu_by_label(),
            "leftover_processes_killed": leftovers,
        }
        if self.pss:
            record["peak_tree_pss_mb"] = round(sampler.peak_pss / 2**20, 1)
        result_file = Path(spec["result_file"])
        if proc.returncode == 0 and result_file.exists():
            result = json.loads(result_file.read_text())
            result["round_stamps"] = {int(k): v for k, v in result["round_stamps"].items()}
            record.update(result)
            record["problems"] = _problems(spec, record)
        else:
            record["problems"] = ["the run failed or timed out"]
            record["error"] = self.log_file.read_text()[-2000:]
        return record


def _run_child(name: str, spec: dict, work: Path, pss: bool = False) -> dict:
    """Run one measurement in a fresh process tree and wait for it."""
    return _Child(name, spec, work, pss).wait()


def _problems(spec: dict, record: dict) -> list[str]:
    """Why a finished run did not do the intended work (empty if it did)."""
    flat = spec["config"]
    problems = []
    if record.get("rejected"):
        problems.append(f"{record['rejected']} client replies were rejected or failed")
    if spec["kind"] == "flower":
        expected = max(1, int(flat["num-clients"] * flat["fraction-train"]))
        got = record.get("clients_per_round", [])
        if got != [expected] * flat["rounds"]:
            problems.append(f"clients trained per round {got}, expected {expected}")
        if len(record.get("round_stamps", {})) != flat["rounds"] + 1:
            problems.append("no per-round timestamps (server_app.central_evaluator changed?)")
    return problems


# ---------------------------------------------------------------- analysis


def _steady(record: dict) -> float | None:
    """Median seconds per round over rounds 2..R from the round timestamps (the median
    resists the load spikes of a shared machine; round 1 also builds data and models)."""
    stamps = record.get("round_stamps") or {}
    last = record["rounds"]
    if last < 2 or any(r not in stamps for r in range(1, last + 1)):
        return None
    return statistics.median(stamps[r] - stamps[r - 1] for r in range(2, last + 1))


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _check(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    target = TARGETS[name]
    return value <= target["max"] if "max" in target else value >= target["min"]


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through _Child.wait, which kills its tree


def run(out: Path | None = None, quick: bool = False) -> dict:
    """Measure the three figures side by side; write JSON to ``out`` (if given); return it."""
    rounds = 3 if quick else 8
    cpus = len(os.sched_getaffinity(0))  # CPUs this process may use (Ray sees the same)
    t0 = time.perf_counter()
    previous = None
    if threading.current_thread() is threading.main_thread():  # kill -TERM ends the children too
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        runs = _measure(quick, rounds, cpus)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return _report(runs, out, quick, rounds, cpus, t0)


def _measure(quick: bool, rounds: int, cpus: int) -> dict[str, dict]:
    """Run every measurement (fresh child process trees, one after another)."""
    timing = timing_config(rounds).to_flat()
    one_round = timing_config(1).to_flat()
    checkpointed = timing_config(rounds, checkpoints=True).to_flat()
    with tempfile.TemporaryDirectory(prefix="fedqdnn-simbench-") as tmp:
        work = Path(tmp)

        def flower(flat: dict, cpus_per_client: float, name: str) -> dict:
            spec = {"kind": "flower", "config": flat, "cpus_per_client": cpus_per_client}
            return {**spec, "out_dir": str(work / name)}

        plan = [  # interleaved so that load changes hit both sides
            ("bare_a", {"kind": "bare", "config": timing}, False),
            ("flower_1actor", flower(timing, cpus, "f1"), False),
            ("flower_2actors", flower(timing, cpus / 2, "f2"), False),
            ("flower_1actor_1round", flower(one_round, cpus, "f11"), False),
            ("bare_b", {"kind": "bare", "config": timing}, False),
            ("bare_pair", {"kind": "bare", "config": timing}, False),
        ]
        if not quick and "checkpoint-every" in checkpointed:
            plan.append(("flower_1actor_checkpoints", flower(checkpointed, cpus, "fc"), False))
        plan += [
            ("memory_10_clients", flower(memory_config(10).to_flat(), cpus / 2, "m10"), True),
            ("memory_1000_clients", flower(memory_config(1000).to_flat(), cpus / 2, "m1k"), True),
        ]
        runs = {}
        for name, spec, pss in plan:
            if name == "bare_pair":  # two bare runs at once
                children = {f"bare_pair_{i}": _Child(f"bare_pair_{i}", spec, work) for i in (1, 2)}
                try:
                    runs.update({n: child.wait() for n, child in children.items()})
                except BaseException:
                    for child in children.values():
                        child.kill()
                    raise
                name = "bare_pair_2"
            else:
                runs[name] = _run_child(name, spec, work, pss)
            r = runs[name]
            status = "ok" if r["returncode"] == 0 else f"FAILED rc={r['returncode']}"
            print(
                f"[sim_overhead] {name}: {status}, {r['process_wall_seconds']:.1f}s wall, "
                f"peak tree RSS {r['peak_tree_rss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )

    return runs


def _report(runs: dict, out: Path | None, quick: bool, rounds: int, cpus: int, t0: float) -> dict:
    """The figures, their definitions and every run's record; written to ``out`` if given."""
    from fedqdnn.provenance import versions

    bare_steady = [s for s in (_steady(runs["bare_a"]), _steady(runs["bare_b"])) if s]
    bare = statistics.mean(bare_steady) if bare_steady else None
    f1, f2, f11 = runs["flower_1actor"], runs["flower_2actors"], runs["flower_1actor_1round"]
    flower1 = _steady(f1)
    flower2 = _steady(f2)
    method = "round timestamps (rounds 2..R)"
    diff = None
    if "seconds" in f1 and "seconds" in f11:
        diff = (f1["seconds"] - f11["seconds"]) / (rounds - 1)
    if flower1 is None and diff is not None:
        flower1, method = diff, "difference of an R-round and a 1-round run"
    if flower2 is None and "seconds" in f2 and "seconds" in f1 and flower1 is not None:
        flower2 = flower1 * f2["seconds"] / f1["seconds"]  # fallback: whole-run ratio
    startup = None
    if "seconds" in f11 and bare is not None:
        startup = f11["seconds"] - bare
    bare_proc_1round = None
    ba = runs["bare_a"]
    if bare is not None and "process_wall_seconds" in ba:
        bare_proc_1round = ba["process_wall_seconds"] - (rounds - 1) * bare
    m10, m1000 = runs["memory_10_clients"], runs["memory_1000_clients"]
    ok10 = m10["returncode"] == 0 and m1000["returncode"] == 0
    rss_ratio = _ratio(m1000["peak_tree_rss_mb"], m10["peak_tree_rss_mb"]) if ok10 else None
    pss_ratio = _ratio(m1000.get("peak_tree_pss_mb"), m10.get("peak_tree_pss_mb")) if ok10 else None

    figures = {
        "steady_round_ratio_vs_bare": _round(_ratio(flower1, bare)),
        "startup_seconds": _round(startup, 2),
        "two_actor_speedup": _round(_ratio(flower1, flower2)),
        "peak_rss_ratio_1000_vs_10_clients": _round(rss_ratio),
    }
    inputs = {  # a figure is void when a run it rests on did not do the intended work
        "steady_round_ratio_vs_bare": ("bare_a", "bare_b", "flower_1actor"),
        "startup_seconds": ("bare_a", "bare_b", "flower_1actor_1round"),
        "two_actor_speedup": ("flower_1actor", "flower_2actors"),
        "peak_rss_ratio_1000_vs_10_clients": ("memory_10_clients", "memory_1000_clients"),
    }
    problems = {name: r["problems"] for name, r in runs.items() if r.get("problems")}
    for figure, names in inputs.items():
        if any(n in problems for n in names):
            figures[figure] = None
    loads = [x for r in runs.values() for x in r["load_avg_1min_before_after"]]
    pair = [_steady(runs[f"bare_pair_{i}"]) for i in (1, 2)]
    bare_pair_speedup = 2 * bare / statistics.mean(pair) if bare and all(pair) else None
    stamps11 = f11.get("round_stamps") or {}
    checkpoint_cost = None
    if "flower_1actor_checkpoints" in runs:
        with_checkpoints = _steady(runs["flower_1actor_checkpoints"])
        if with_checkpoints is not None and flower1 is not None:
            checkpoint_cost = with_checkpoints - flower1
    result = {
        **figures,
        "targets": TARGETS,
        "meets_target": {k: _check(k, figures[k]) for k in TARGETS},
        "problems": problems,
        "definitions": {
            "steady_round_ratio_vs_bare": "flower_round_seconds_1actor / bare_round_seconds",
            "bare_round_seconds": "median s/round over rounds 2..R of the same work in one "
            "process (train, validate+aggregate, local and central evaluation), mean of two "
            "runs (before and after the Flower runs)",
            "flower_round_seconds": f"median s/round over rounds 2..R, {method}",
            "flower_round_seconds_1actor_from_two_runs": "(simulate() wall of the R-round run "
            "- that of the 1-round run) / (R-1): a cross-check, only meaningful on a quiet "
            "machine (start-up varies by seconds between runs)",
            "startup_seconds": "wall of simulate() for a 1-round run (Ray start, actors, "
            "data/model build in workers, round 0+1, Ray shutdown, results and plots) minus "
            "bare_round_seconds",
            "startup_process_seconds_vs_bare": "whole-process wall of the 1-round Flower run "
            "minus the whole-process wall of a 1-round bare run (interpreter start, imports "
            "and data load on both sides)",
            "two_actor_speedup": "flower_round_seconds with 1 actor / with 2 actors",
            "bare_two_process_speedup": "2 x bare_round_seconds / the mean s/round of two "
            "bare runs started together: the bare-PyTorch limit of two_actor_speedup on this "
            "machine at that moment (about 2 with two idle CPUs, about 1 when other work "
            "holds them)",
            "checkpoint_seconds_per_round": "flower_round_seconds with the default per-round "
            "checkpoint minus without (the timing runs above write none)",
            "peak_rss_ratio_1000_vs_10_clients": "peak summed RSS of the whole process tree, "
            "1,000 vs 10 virtual clients, 10 sampled per round, 1 round, MNIST-1D",
        },
        "details": {
            "quick": quick,
            "rounds": rounds,
            "cpus": cpus,
            "load_avg_1min_min_max": [min(loads), max(loads)],
            "bare_round_seconds": _round(bare),
            "bare_round_seconds_each_run": [_round(s) for s in bare_steady],
            "flower_round_seconds_1actor": _round(flower1),
            "flower_round_seconds_1actor_from_two_runs": _round(diff),
            "flower_round_seconds_2actors": _round(flower2),
            "checkpoint_seconds_per_round": _round(checkpoint_cost),
            "bare_two_process_speedup": _round(bare_pair_speedup),
            "torch_threads_per_client": 1,
            "flower_1round_simulate_seconds": _round(f11.get("seconds"), 2),
            "flower_1round_until_round0_seconds": _round(stamps11.get(0), 2),
            "flower_1round_teardown_seconds": _round(
                f11["seconds"] - stamps11[1] if 1 in stamps11 and "seconds" in f11 else None, 2
            ),
            "startup_process_seconds_vs_bare": _round(
                f11["process_wall_seconds"] - bare_proc_1round if bare_proc_1round else None, 2
            ),
            "peak_tree_pss_ratio_1000_vs_10_clients": _round(pss_ratio),
            "runs": runs,
            "benchmark_seconds": round(time.perf_counter() - t0, 1),
        },
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sim_overhead.json"))
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child_main(args.child)
        sys.exit(0)
    res = run(args.out, args.quick)
    print(json.dumps({k: res[k] for k in ("meets_target", *TARGETS, "startup_seconds")}, indent=2))
