"""The workloads the simulation benchmarks time: one Flower + Ray run, or the same rounds
done sequentially in bare PyTorch, each in a child process of its own.

Both sides call the same device code (:mod:`fedqdnn.device`) and the same aggregation
(:mod:`strategies.aggregation`), so their difference is the simulation machinery itself.
Run as ``python -m benchmarks.workloads SPEC.json``: the spec names the workload and the
config; the result (timestamps after every round, accuracy, counts) is written as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

# Proportions that survive the flat (string) form exactly.
THREE_TIERS = {"mcu-int2": 0.3333, "phone-npu-int4": 0.3333, "cpu-fp32": 0.3334}


def timing_config(rounds: int, checkpoints: bool = False):
    """The round-time workload: digits, 10 clients (three tiers), 2 local epochs.

    Without ``checkpoints`` the server's per-round checkpoint (arrays + history written and
    fsync'ed every round by default) is switched off: the bare side writes none, and its
    cost is measured by a separate run (full mode) rather than counted as simulation overhead.
    """
    from fedqdnn.config import FederatedConfig
    from fedqdnn.data_source import DataSource

    return FederatedConfig(
        data=DataSource(dataset="digits"),
        tiers=THREE_TIERS,
        num_clients=10,
        rounds=rounds,
        local_epochs=2,
        checkpoint_every=1 if checkpoints else 0,
    )


def memory_config(num_clients: int, per_round: int = 10):
    """The memory workload: MNIST-1D, ``per_round`` of ``num_clients`` sampled, one round."""
    from fedqdnn.config import FederatedConfig
    from fedqdnn.data_source import DataSource

    fraction = per_round / num_clients
    return FederatedConfig(
        data=DataSource(dataset="mnist1d"),
        tiers=THREE_TIERS,
        num_clients=num_clients,
        rounds=1,
        local_epochs=1,
        fraction_train=fraction,
        fraction_evaluate=fraction,
    )


def throughput_config(device: str, rounds: int = 4, num_clients: int = 40):
    """The throughput workload of benchmarks/gpu.py: MNIST-1D, every client trains every
    round (three tiers), 2 local epochs, no checkpoints; ``device`` as the config key."""
    from fedqdnn.config import FederatedConfig
    from fedqdnn.data_source import DataSource

    return FederatedConfig(
        data=DataSource(dataset="mnist1d"),
        tiers=THREE_TIERS,
        num_clients=num_clients,
        rounds=rounds,
        local_epochs=2,
        checkpoint_every=0,
        device=device,
    )


PHASES = ("local_training", "device_evaluation", "aggregation", "central_evaluation", "checkpoint")


def bare_rounds(cfg, client_threads: int = 1, checkpoints: bool = False) -> dict:
    """The Flower round's work, sequentially in this process: timestamps after each round and
    the seconds of each phase summed over the rounds.

    As the apps do it: the server evaluates the round-0 model first; every round, the devices
    of FedQDNN's seeded sample (fraction-train) load the global state, plan the round and, if
    the plan trains, train as the ClientApp does; the server validates and aggregates the
    uploads; in evaluated rounds (evaluate-every) the devices sampled for evaluation
    (fraction-evaluate) evaluate locally and the server evaluates every mode; with
    ``checkpoints``, the server's checkpoint (checkpoint-every) into a temporary folder.
    Client work uses ``client_threads`` torch threads, server work 1, as the apps do.
    """
    import tempfile

    import numpy as np
    import torch

    from fedqdnn.costs import array_bytes
    from fedqdnn.device import (
        device_for,
        evaluate_locally,
        evaluation_mode,
        load_state,
        plan_round,
        train_round,
    )
    from fedqdnn.federated.checkpoint import RunHistory, save_checkpoint
    from fedqdnn.fleet import initial_model, run_data
    from fedqdnn.round_plan import evaluation_rounds, select_partitions
    from fedqdnn.training import evaluate
    from strategies.aggregation import ClientUpdate, aggregate, validate_update

    start = time.perf_counter()
    torch.set_num_threads(1)
    data = run_data(cfg)
    server_model = initial_model(cfg)  # the ServerApp's own round-0 model
    state = {k: v.detach().cpu().numpy().copy() for k, v in server_model.state_dict().items()}
    bytes_down = array_bytes(state)
    devices = sorted(cfg.participant_ids)
    evaluated = set(evaluation_rounds(cfg.rounds, cfg.evaluate_every))
    phases = dict.fromkeys(PHASES, 0.0)

    def torch_state(global_state) -> dict:
        return {k: torch.from_numpy(np.asarray(v)) for k, v in global_state.items()}

    def central_eval(global_state) -> dict:
        torch.set_num_threads(1)
        load_state(server_model, torch_state(global_state))
        return {b: evaluate(server_model, data.x_test, data.y_test, b)[0] for b in cfg.bits}

    accuracy = central_eval(state)  # the ServerApp evaluates round 0 first, too
    stamps = {0: time.perf_counter() - start}
    rejected = 0
    with tempfile.TemporaryDirectory(prefix="fedqdnn-bare-") as tmp:
        for rnd in range(1, cfg.rounds + 1):
            started = time.perf_counter()
            torch.set_num_threads(client_threads)
            updates = []
            for pid in select_partitions(devices, cfg.fraction_train, cfg.seed, rnd, 0):
                device = device_for(cfg, pid)
                plan = plan_round(cfg, device, rnd, bytes_down)
                if plan.status != "trained":  # offline or a straggler: no upload
                    continue
                load_state(device.model, torch_state(state))
                upload = train_round(cfg, device, plan, rnd)
                # copies: the upload shares memory with the model, which the next client trains
                arrays = {k: np.array(v, copy=True) for k, v in upload.state.items()}
                updates.append(ClientUpdate(arrays, len(device.y_train), plan.modes))
            phases["local_training"] += time.perf_counter() - started
            started = time.perf_counter()
            valid = [u for u in updates if validate_update(state, u, cfg.bits) is None]
            rejected += len(updates) - len(valid)
            # as FedQDNN's to_arrayrecord: 0-d results (num_batches_tracked) become arrays again
            state = {k: np.require(v, requirements="C") for k, v in aggregate(state, valid).items()}
            phases["aggregation"] += time.perf_counter() - started
            if rnd in evaluated:
                started = time.perf_counter()
                torch.set_num_threads(client_threads)
                for pid in select_partitions(devices, cfg.fraction_evaluate, cfg.seed, rnd, 1):
                    device = device_for(cfg, pid)  # each device at its top mode
                    load_state(device.model, torch_state(state))
                    evaluate_locally(device, evaluation_mode(cfg, device))
                phases["device_evaluation"] += time.perf_counter() - started
                started = time.perf_counter()
                accuracy = central_eval(state)
                phases["central_evaluation"] += time.perf_counter() - started
            every = cfg.checkpoint_every
            if checkpoints and every and (rnd % every == 0 or rnd == cfg.rounds):
                started = time.perf_counter()
                save_checkpoint(Path(tmp), rnd, state, RunHistory(), {}, {}, cfg.to_flat())
                phases["checkpoint"] += time.perf_counter() - started
            stamps[rnd] = time.perf_counter() - start
    return {
        "seconds": time.perf_counter() - start,
        "round_stamps": stamps,
        "phase_seconds": phases,
        "client_torch_threads": client_threads,
        "final_accuracy_by_bits": {str(b): a for b, a in accuracy.items()},
        "rejected": rejected,
    }


def steady_round_seconds(record: dict) -> float | None:
    """Median seconds per round over rounds 2..R of a run's round timestamps (the median
    resists the load spikes of a shared machine; round 1 also builds data and models); None
    with under two rounds or a round's timestamp missing."""
    stamps = {int(k): v for k, v in (record.get("round_stamps") or {}).items()}
    last = record["rounds"]
    if last < 2 or any(r not in stamps for r in range(1, last + 1)):
        return None
    return statistics.median(stamps[r] - stamps[r - 1] for r in range(2, last + 1))


def flower_rounds(cfg, out_dir: str, cpus_per_client: float, gpus_per_client: float = 0.0) -> dict:
    """The real simulation; timestamps from the server's per-round hook."""
    from fedqdnn.federated.resources import Resources
    from fedqdnn.federated.simulation import simulate

    stamps: dict[int, float] = {}
    start = time.perf_counter()

    def on_round_end(end) -> None:
        stamps[end.server_round] = time.perf_counter() - start

    results = simulate(
        cfg,
        Path(out_dir),
        Resources(cpus_per_client, gpus_per_client),
        on_round_end=on_round_end,
    )
    history = results.history
    return {
        "seconds": time.perf_counter() - start,
        "round_stamps": stamps,
        "round_seconds_in_results": [h.round_seconds for h in history],
        "server_wall_seconds": results.wall_seconds,
        "clients_per_round": [len(h.clients) for h in history],
        "rejected": sum(len(h.rejected) for h in history),
        "final_accuracy_by_bits": results.final.accuracy_by_bits,
        "client_torch_devices": sorted({str(c.torch_device) for h in history for c in h.clients}),
    }


def run_spec(spec_file: Path) -> None:
    """Run the workload a spec file names; write its result file."""
    spec = json.loads(Path(spec_file).read_text())
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from fedqdnn.config import from_flat

    cfg = from_flat(spec["config"])
    if spec["kind"] == "bare":
        threads = max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1"))))
        result = bare_rounds(cfg, client_threads=threads)
    else:
        result = flower_rounds(
            cfg, spec["out_dir"], spec["cpus_per_client"], spec.get("gpus_per_client", 0.0)
        )
    Path(spec["result_file"]).write_text(json.dumps(result))


if __name__ == "__main__":
    run_spec(Path(sys.argv[1]))
