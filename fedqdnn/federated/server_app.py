"""Flower ServerApp: FedQDNN rounds, central evaluation of every bit mode, results on disk.

Under ``flwr run`` the configuration comes from ``context.run_config``
(``[tool.flwr.app.config]`` + ``--run-config``); under the in-process simulation runner
(:mod:`fedqdnn.federated.simulation`), whose contexts carry no run config, it is handed
over through :data:`PENDING_RUN` in this same process.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedqdnn.data import load_dataset
from fedqdnn.federated.config import FederatedConfig, from_flat
from fedqdnn.federated.report import MODEL_FILE, build_results, save_model, write_results
from fedqdnn.models import QuantizableModel, build_model
from fedqdnn.training import evaluate
from strategies.fedqdnn import FedQDNN

app = ServerApp()
PENDING_RUN: dict[str, object] = {}
OUT_DIR_KEY = "out-dir"


def initial_model(cfg: FederatedConfig) -> QuantizableModel:
    """The global model at round 0, reproducible from the seed."""
    data = load_dataset(
        cfg.dataset,
        data_root=cfg.data_root or None,
        num_samples=cfg.num_samples or None,
        data_seed=cfg.data_seed,
    )
    torch.manual_seed(cfg.seed)
    return build_model(
        cfg.model_name,
        cfg.bits,
        data.num_classes,
        data.in_channels,
        bit_specific_bn=cfg.bit_specific_bn,
        learnable_clip=cfg.learnable_clip,
    )


def central_evaluator(cfg: FederatedConfig, model: QuantizableModel, log=print):
    """evaluate_fn for Strategy.start: every bit mode on the held-out test set."""
    data = load_dataset(
        cfg.dataset,
        data_root=cfg.data_root or None,
        num_samples=cfg.num_samples or None,
        data_seed=cfg.data_seed,
    )

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        accuracy = {b: evaluate(model, data.x_test, data.y_test, b)[0] for b in cfg.bits}
        shown = "  ".join(f"{b}-bit {a:.3f}" for b, a in accuracy.items())
        log(f"round {server_round}/{cfg.rounds}: central accuracy {shown}")
        return MetricRecord({f"accuracy-bits{b}": a for b, a in accuracy.items()})

    return evaluate_fn


def make_strategy(cfg: FederatedConfig) -> FedAvg:
    """FedQDNN, or Flower's plain FedAvg (identical reply keys only, e.g. uniform-fp32)."""
    if cfg.server_strategy == "fedavg":
        nodes = cfg.num_nodes
        return FedAvg(
            fraction_train=cfg.fraction_train,
            fraction_evaluate=cfg.fraction_evaluate,
            min_train_nodes=max(1, math.ceil(cfg.fraction_train * nodes)),
            min_evaluate_nodes=max(1, math.ceil(cfg.fraction_evaluate * nodes)),
            min_available_nodes=nodes,
        )
    return FedQDNN(cfg.num_nodes, cfg.fraction_train, cfg.fraction_evaluate)


def run_server(grid: Grid, cfg: FederatedConfig, out: Path, log=print) -> dict:
    """Run every round on ``grid``; write results.json and plots into ``out``."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    model = initial_model(cfg)
    strategy = make_strategy(cfg)
    flat = ConfigRecord(cfg.to_flat())
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.rounds,
        train_config=flat,
        evaluate_config=ConfigRecord(cfg.to_flat()),
        evaluate_fn=central_evaluator(cfg, model, log),
    )
    results = build_results(cfg, strategy, result, time.perf_counter() - started)
    write_results(out, results)
    save_model(out / MODEL_FILE, result.arrays, cfg)
    return results


def wait_for_nodes(grid: Grid, expected: int, timeout: float = 60.0) -> None:
    """Block until ``expected`` SuperNodes are connected; fail in one line if they never are
    (e.g. ``num-clients`` larger than the federation's ``num-supernodes``)."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = len(list(grid.get_node_ids()))
        if count >= expected:
            return
        time.sleep(0.5)
    raise ValueError(
        f"num-clients = {expected} but only {count} SuperNodes connected within {timeout:.0f}s; "
        f"start the federation with --federation-config 'num-supernodes={expected}'"
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for both ``flwr run`` and the in-process simulation runner."""
    if context.run_config:
        flat = dict(context.run_config)
        out = Path(str(flat.pop(OUT_DIR_KEY, "outputs/flwr-run")))
        cfg = from_flat(flat)
    else:
        cfg = PENDING_RUN["config"]  # type: ignore[assignment]
        out = Path(str(PENDING_RUN["out"]))
    wait_for_nodes(grid, cfg.num_nodes)
    run_server(grid, cfg, out, _log)
