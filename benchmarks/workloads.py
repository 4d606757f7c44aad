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


def bare_rounds(cfg) -> dict:
    """The Flower round's work, sequentially in this process; timestamps after each round.

    Per client: load the global state, plan and train the round as the ClientApp does, take
    the upload, validate and aggregate; then each client's local evaluation and the server's
    evaluation of every mode. Client work uses the torch threads a ClientApp would use here
    (``OMP_NUM_THREADS``); server work uses 1, as the ServerApp does.
    """
    import numpy as np
    import torch

    from fedqdnn.device import (
        device_for,
        evaluate_locally,
        evaluation_mode,
        load_state,
        plan_round,
        train_round,
    )
    from fedqdnn.fleet import initial_model, run_data
    from fedqdnn.training import evaluate
    from strategies.aggregation import ClientUpdate, aggregate, validate_update

    client_threads = max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1"))))
    start = time.perf_counter()
    torch.set_num_threads(1)
    data = run_data(cfg)
    server_model = initial_model(cfg)  # the ServerApp's own round-0 model
    state = {k: v.detach().cpu().numpy().copy() for k, v in server_model.state_dict().items()}
    bytes_down = int(sum(v.nbytes for v in state.values()))

    def torch_state(global_state) -> dict:
        return {k: torch.from_numpy(np.asarray(v)) for k, v in global_state.items()}

    def central_eval(global_state) -> dict:
        torch.set_num_threads(1)
        load_state(server_model, torch_state(global_state))
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
            device = device_for(cfg, pid)
            plan = plan_round(cfg, device, rnd, bytes_down)
            load_state(device.model, torch_state(state))
            upload = train_round(cfg, device, plan, rnd)
            # copies: the upload shares memory with the model, which the next client trains
            arrays = {k: np.array(v, copy=True) for k, v in upload.state.items()}
            update = ClientUpdate(arrays, len(device.y_train), plan.modes)
            if validate_update(state, update, cfg.bits) is None:
                updates.append(update)
            else:
                rejected += 1
        # as FedQDNN's to_arrayrecord: 0-d results (num_batches_tracked) become arrays again
        state = {k: np.require(v, requirements="C") for k, v in aggregate(state, updates).items()}
        for pid in clients:  # federated evaluation: each device at its top mode
            device = device_for(cfg, pid)
            load_state(device.model, torch_state(state))
            evaluate_locally(device, evaluation_mode(cfg, device))
        accuracy = central_eval(state)
        stamps[rnd] = time.perf_counter() - start
    return {
        "seconds": time.perf_counter() - start,
        "round_stamps": stamps,
        "client_torch_threads": client_threads,
        "final_accuracy_by_bits": {str(b): a for b, a in accuracy.items()},
        "rejected": rejected,
    }


def flower_rounds(cfg, out_dir: str, cpus_per_client: float, gpus_per_client: float = 0.0) -> dict:
    """The real simulation; timestamps from the server's per-round hook."""
    from fedqdnn.federated.simulation import simulate

    stamps: dict[int, float] = {}
    start = time.perf_counter()

    def on_round_end(end) -> None:
        stamps[end.server_round] = time.perf_counter() - start

    results = simulate(
        cfg,
        Path(out_dir),
        cpus_per_client=cpus_per_client,
        gpus_per_client=gpus_per_client,
        on_round_end=on_round_end,
    )
    history = results.get("history", [])
    return {
        "seconds": time.perf_counter() - start,
        "round_stamps": stamps,
        "round_seconds_in_results": [h.get("round_seconds") for h in history],
        "server_wall_seconds": results.get("wall_seconds"),
        "clients_per_round": [len(h.get("clients", [])) for h in history],
        "rejected": sum(len(h.get("rejected", [])) for h in history),
        "final_accuracy_by_bits": results.get("final", {}).get("accuracy_by_bits"),
        "client_torch_devices": sorted(
            {str(c.get("torch-device")) for h in history for c in h.get("clients", [])}
        ),
    }


def run_spec(spec_file: Path) -> None:
    """Run the workload a spec file names; write its result file."""
    spec = json.loads(Path(spec_file).read_text())
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from fedqdnn.config import from_flat

    cfg = from_flat(spec["config"])
    if spec["kind"] == "bare":
        result = bare_rounds(cfg)
    else:
        result = flower_rounds(
            cfg, spec["out_dir"], spec["cpus_per_client"], spec.get("gpus_per_client", 0.0)
        )
    Path(spec["result_file"]).write_text(json.dumps(result))


if __name__ == "__main__":
    run_spec(Path(sys.argv[1]))
