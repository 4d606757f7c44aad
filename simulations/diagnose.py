"""Why does the mode that the fewest devices train lose? Diagnostics of one finished run.

Three measurements on a run folder (``fedqdnn simulate`` output, or a run in a comparison's
``runs/`` cache), none of which changes the run:

1. **Statistics or weights?** The run's final-window models deployed as trained (each mode's
   BN statistics as the federation aggregated them) against the same weights with each
   mode's statistics re-estimated on pooled training data: of the devices that run the mode
   (:attr:`~fedqdnn.policies.Deploy.RECALIBRATE`), and of every device (an oracle: not
   deployable). If the oracle closes a tier's gap, the statistics, not the weights, were the
   problem.
2. **Swings against trainers.** Per evaluated round: each tier's device accuracy and how
   many devices trained each mode in that round (from results.json).
3. **Interference.** From the final model, replay rounds with the run's own seeded samples:
   every sampled device trains as in the run, then the server aggregates (a) all updates, as
   FedQDNN does, and (b) only the updates of the devices that trained the mode under study
   (the shared weights then move with that mode's trainers alone). The mode's loss and
   accuracy on the central test set before and after each say what the other devices' shared
   updates do to it.

    python -m simulations.diagnose RUN_DIR [--mode 32] [--replays 10] --out diagnosis.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from fedqdnn.bitmodes import mode_of_state_key
from fedqdnn.calibration import recalibrate_bn
from fedqdnn.config import FederatedConfig, from_flat
from fedqdnn.deployment import accuracy_by_tier, average_states, evaluate_devices
from fedqdnn.device import device_for, load_state, modes_to_train, plan_round, train_round
from fedqdnn.federated.report import load_model_state, read_results
from fedqdnn.files import write_json
from fedqdnn.fleet import build_model_for, run_data
from fedqdnn.losses import consistency_terms
from fedqdnn.policies import Deploy
from fedqdnn.round_plan import select_stratified
from fedqdnn.sampling import sampling_strata
from fedqdnn.schema import FINAL_MODELS_DIR, MODEL_FILE, RESULTS_FILE, RunResults, model_file
from fedqdnn.training import evaluate, forward_modes
from strategies.aggregation import ClientUpdate, aggregate

State = dict[str, np.ndarray]


def window_states(run_dir: Path, results: RunResults) -> list[State]:
    """The models of the run's final window, oldest first."""
    last = len(results.history)
    return [
        load_model_state(
            run_dir / (MODEL_FILE if r == last else f"{FINAL_MODELS_DIR}/{model_file(r)}")
        )
        for r in results.final.window_rounds
    ]


def with_pooled_statistics(cfg: FederatedConfig, state: State) -> State:
    """``state`` with every mode's BN statistics re-estimated on the training data of every
    device (the federation's whole training set): statistics that no few devices skew."""
    model = build_model_for(cfg)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    x = torch.cat([device_for(cfg, p).x_train.cpu() for p in range(cfg.num_clients)])
    for bits in cfg.bits:
        recalibrate_bn(model, x, bits)
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def statistics_or_weights(
    cfg: FederatedConfig, states: list[State], deploy: Deploy = Deploy.TOP
) -> dict:
    """Per-tier accuracy of the window's models (mean over the window): as trained; with
    each mode's statistics pooled over the devices that run it (``Deploy.RECALIBRATE``); with
    every mode's statistics from all devices' data (the oracle); and the one model whose
    weights are the window's mean (a temporal average: does the drift between rounds, not
    the model, cost the accuracy?)."""
    everyone = range(cfg.num_clients)
    variants = {
        "as_trained": [(s, deploy) for s in states],
        "oracle_pooled_over_all_devices": [
            (with_pooled_statistics(cfg, s), deploy) for s in states
        ],
        "window_average": [(average_states(states), deploy)],
    }
    if deploy is Deploy.TOP:
        variants["pooled_over_the_mode's_devices"] = [(s, Deploy.RECALIBRATE) for s in states]
    out = {}
    for name, models in variants.items():
        per_model = [
            accuracy_by_tier(evaluate_devices(cfg, dict.fromkeys(everyone, s), policy))
            for s, policy in models
        ]
        out[name] = {t: statistics.fmean(m[t] for m in per_model) for t in per_model[0]}
    return out


def swings_and_trainers(results: RunResults) -> list[dict]:
    """Per evaluated round: tier accuracy and the number of devices that trained each mode."""
    rows = []
    for h in results.history:
        if not h.accuracy_by_tier:
            continue
        trainers: dict[str, int] = {}
        for c in h.clients:
            for bits in c.trained_modes or ():
                trainers[str(bits)] = trainers.get(str(bits), 0) + 1
        rows.append(
            {"round": h.round, "accuracy_by_tier": h.accuracy_by_tier, "trainers": trainers}
        )
    return rows


def _loss_and_accuracy(model, state: State, bits: int, x: torch.Tensor, y: torch.Tensor):
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    accuracy, loss = evaluate(model, x, y, bits)
    return {"loss": loss, "accuracy": accuracy}


def interference(cfg: FederatedConfig, state: State, mode: int, replays: int) -> dict:
    """Replay ``replays`` rounds (the run's last ones, same seeded samples) from ``state``:
    the studied mode on the central test set before, after FedQDNN's aggregation of every
    update, and after aggregating the updates of that mode's trainers only."""
    data = run_data(cfg)
    model = build_model_for(cfg)
    rows = []
    strata = sampling_strata(cfg)  # once: the label groups read every device's data
    for rnd in range(cfg.rounds - replays + 1, cfg.rounds + 1):
        chosen = select_stratified(strata, cfg.fraction_train, cfg.seed, rnd, 0)
        updates: list[ClientUpdate] = []
        for pid in chosen:
            device = device_for(cfg, pid)
            plan = plan_round(cfg, device, rnd, bytes_down=0)
            if plan.status != "trained":
                continue
            load_state(device.model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
            update = train_round(cfg, device, plan, rnd)
            # the arrays are views of the process's one model: copy before the next device
            arrays = {k: v.copy() for k, v in update.state.items()}
            updates.append(ClientUpdate(arrays, len(device.y_train), plan.modes))
        trainers = [u for u in updates if mode in u.trained_modes]
        row = {"round": rnd, "devices": len(updates), "trainers": len(trainers)}
        row["before"] = _loss_and_accuracy(model, state, mode, data.x_test, data.y_test)
        for name, group in (("all", updates), ("trainers_only", trainers)):
            if group:
                new = aggregate(state, group, [u.num_examples for u in group], None)
                row[name] = _loss_and_accuracy(model, new, mode, data.x_test, data.y_test)
        rows.append(row)
    return {"mode": mode, "rounds": rows, "summary": _summary(rows)}


def _summary(rows: list[dict]) -> dict:
    """Mean change of the studied mode's loss and accuracy per aggregation, over the replays
    where its trainers were sampled."""
    both = [r for r in rows if "trainers_only" in r]
    out = {"replays_with_trainers": len(both)}
    for name in ("all", "trainers_only"):
        for metric in ("loss", "accuracy"):
            deltas = [r[name][metric] - r["before"][metric] for r in both]
            out[f"{name}_{metric}_change"] = statistics.fmean(deltas) if deltas else None
    return out


def mode_gradients(cfg: FederatedConfig, state: State) -> dict[int, dict[int, np.ndarray]]:
    """Per device, per mode it trains: the gradient of that mode's loss term (the consistency
    loss's, as in local training) on the shared weights at ``state``, over the device's whole
    training set in one batch (BN in training mode, as on the device); flat, float64."""
    out: dict[int, dict[int, np.ndarray]] = {}
    for pid in range(cfg.num_clients):
        device = device_for(cfg, pid)
        model = device.model
        load_state(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        model.train()
        shared = [p for n, p in model.named_parameters() if mode_of_state_key(n) is None]
        logits = forward_modes(model, device.x_train, modes_to_train(cfg, device))
        terms = consistency_terms(logits, device.y_train, cfg.loss)
        out[pid] = {}
        for bits, term in terms.items():
            grads = torch.autograd.grad(term, shared, retain_graph=True, allow_unused=True)
            out[pid][bits] = np.concatenate(
                [
                    (g if g is not None else torch.zeros_like(p)).detach().double().numpy().ravel()
                    for g, p in zip(grads, shared, strict=True)
                ]
            )
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two flat gradients (0 where either is zero)."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm > 0 else 0.0


def _spread(values: list[float]) -> dict:
    return {
        "pairs": len(values),
        "mean_cosine": statistics.fmean(values) if values else None,
        "share_negative": sum(v < 0 for v in values) / len(values) if values else None,
    }


def gradient_agreement(grads: dict[int, dict[int, np.ndarray]]) -> dict:
    """Cosines between the gradients of :func:`mode_gradients`: two modes on one device
    (``same_device``, per mode pair), one mode on two devices (``same_mode``, per mode), two
    modes on two devices (``across``, per mode pair), and each device's mode gradient against
    that mode's mean over the devices that train it (``to_mode_mean``)."""
    modes = sorted({b for g in grads.values() for b in g})
    pids = sorted(grads)
    pairs = [(a, b) for i, a in enumerate(modes) for b in modes[i + 1 :]]
    same_device = {
        f"{a}-{b}": _spread([cosine(g[a], g[b]) for g in grads.values() if a in g and b in g])
        for a, b in pairs
    }
    same_mode, to_mean = {}, {}
    for bits in modes:
        having = [p for p in pids if bits in grads[p]]
        same_mode[str(bits)] = _spread(
            [
                cosine(grads[p][bits], grads[q][bits])
                for i, p in enumerate(having)
                for q in having[i + 1 :]
            ]
        )
        mean = np.mean([grads[p][bits] for p in having], axis=0)
        to_mean[str(bits)] = _spread([cosine(grads[p][bits], mean) for p in having])
    across = {
        f"{a}-{b}": _spread(
            [
                cosine(grads[p][a], grads[q][b])
                for p in pids
                for q in pids
                if p != q and a in grads[p] and b in grads[q]
            ]
        )
        for a, b in pairs
    }
    return {"same_device": same_device, "same_mode": same_mode, "across": across,
            "to_mode_mean": to_mean}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--mode", type=int, default=32, help="the mode under study (default: 32)")
    parser.add_argument("--replays", type=int, default=10, help="rounds replayed (default: 10)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument(
        "--deploy", default="top", help="how the run's model reaches devices (default: top)"
    )
    parser.add_argument(
        "--skip-replays", action="store_true", help="deployment variants only (default: off)"
    )
    parser.add_argument(
        "--gradients",
        action="store_true",
        help="also the cosines between modes' and devices' gradients (default: off)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = read_results(args.run_dir / RESULTS_FILE)
    cfg = from_flat(results.config)
    states = window_states(args.run_dir, results)
    report = {
        "run": str(args.run_dir),
        "config": results.config,
        "deployed_by_tier": statistics_or_weights(cfg, states, Deploy(args.deploy)),
        "per_round": swings_and_trainers(results),
    }
    if not args.skip_replays:
        report["interference"] = interference(cfg, states[-1], args.mode, args.replays)
    if args.gradients:
        report["gradient_agreement"] = gradient_agreement(mode_gradients(cfg, states[-1]))
    write_json(args.out, report)
    print(report["deployed_by_tier"], report.get("interference", {}).get("summary"), sep="\n")


if __name__ == "__main__":
    main()
