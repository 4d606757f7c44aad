"""results.json assembled from round records and history, checked on a hand-built run."""

from fedqdnn.config import FederatedConfig
from fedqdnn.federated.checkpoint import RunHistory
from fedqdnn.federated.report import build_results
from fedqdnn.schema import ClientRow, EvaluationRow, Rejection, RoundRecord, RunResults
from strategies.protocol import records_from_json, records_to_json

CFG = FederatedConfig(num_clients=2, rounds=2, bits=(2, 32), tiers={"cpu-fp32": 1.0})


def _history() -> RunHistory:
    history = RunHistory()
    history.evaluate_metrics_serverapp = {
        0: {"accuracy-bits2": 0.1, "accuracy-bits32": 0.1},
        1: {"accuracy-bits2": 0.5, "accuracy-bits32": 0.6},
        2: {"accuracy-bits2": 0.7, "accuracy-bits32": 0.8},
    }
    history.evaluate_metrics_clientapp = {2: {"accuracy": 0.75, "accuracy-cpu-fp32": 0.75}}
    history.train_metrics_clientapp = {1: {"train-loss": 1.5}, 2: {"train-loss": 0.9}}
    history.round_seconds = {1: 2.0, 2: 1.0}
    return history


def _rounds() -> dict[int, RoundRecord]:
    client = ClientRow(
        partition_id=0,
        tier="cpu-fp32",
        status="trained",
        sim_seconds=1.0,
        num_examples=8,
        bytes_down=100,
        loss=0.5,
        trained_modes=[2, 32],
    )
    last = RoundRecord(
        train=[client],
        rejected=[Rejection(partition_id=1, reason="wrong keys")],
        evaluation=[
            EvaluationRow(partition_id=1, tier="cpu-fp32", bits=32, accuracy=0.5,
                          num_examples=4, loss=1.0),
            EvaluationRow(partition_id=0, tier="cpu-fp32", bits=32, accuracy=1.0,
                          num_examples=4, loss=0.1),
        ],
    )  # fmt: skip
    return {1: RoundRecord(train=[client, client]), 2: last}


def _json(results: RunResults) -> dict:
    """results.json as written (and read back through the same model)."""
    data = results.to_json()
    assert RunResults.model_validate(data) == results
    return data


def test_results_from_a_hand_built_run():
    results = _json(build_results(CFG, _rounds(), _history(), wall_seconds=3.14159))
    assert results["final"] == {
        "accuracy_by_bits": {"2": 0.7, "32": 0.8},
        "accuracy_by_tier": {"cpu-fp32": 0.75},
        "federated_accuracy": 0.75,
        "window_rounds": [2],
    }
    assert results["initial_accuracy_by_bits"] == {"2": 0.1, "32": 0.1}
    assert [d["client"] for d in results["per_device"]] == [0, 1]  # sorted by partition
    assert results["per_device"][0] == {
        "client": 0, "tier": "cpu-fp32", "bits": 32, "accuracy": 1.0, "num_examples": 4,
    }  # fmt: skip
    first, second = results["history"]
    assert first["num_trained"] == 2 and first["federated_accuracy"] is None
    assert first["train_loss"] == 1.5 and second["num_rejected"] == 1
    assert second["central_accuracy_by_bits"] == {"2": 0.7, "32": 0.8}
    assert results["wall_seconds"] == 3.14 and results["config"] == CFG.to_flat()
    assert second["clients"] == [  # a device's reply under its wire names
        {"partition-id": 0, "tier": "cpu-fp32", "status": "trained", "num-examples": 8,
         "bytes-down": 100, "loss": 0.5, "trained-modes": [2, 32], "sim-seconds": 1.0}
    ]  # fmt: skip
    assert second["rejected"] == [{"partition-id": 1, "reason": "wrong keys"}]


def test_results_record_the_modes_no_device_trains():
    assert _json(build_results(CFG, {}, _history(), 1.0))["untrained_modes"] == []
    # lowest-common on a one-tier cpu fleet: every device trains its top, 32; 2 never trains
    lowest = CFG.replace(train_modes="lowest-common")
    assert _json(build_results(lowest, {}, _history(), 1.0))["untrained_modes"] == [2]


def test_results_without_round_records_flower_fedavg():
    results = _json(build_results(CFG, {}, _history(), 1.0))
    assert results["per_device"] == [] and results["history"][0]["num_trained"] is None


def test_round_records_survive_json():
    rounds = _rounds()
    assert records_from_json(records_to_json(rounds)) == rounds


def test_cadence_window_means_and_convergence_hand_computed():
    cfg = CFG.replace(rounds=4, evaluate_every=2, final_average=2, target_accuracy=0.7)
    history = RunHistory()
    history.evaluate_metrics_serverapp = {
        0: {"accuracy-bits2": 0.1},
        2: {"accuracy-bits2": 0.6, "accuracy-bits32": 0.7},
        4: {"accuracy-bits2": 0.8, "accuracy-bits32": 0.9},
    }
    history.evaluate_metrics_clientapp = {
        2: {"accuracy": 0.5, "accuracy-cpu-fp32": 0.5},
        4: {"accuracy": 0.9, "accuracy-cpu-fp32": 0.9},
    }

    def evaluation(acc):
        row = {"partition_id": 0, "tier": "cpu-fp32", "bits": 32, "num_examples": 4, "loss": 0}
        return [EvaluationRow(**row, accuracy=acc)]

    def trained(seconds):
        row = {"partition_id": 0, "tier": "cpu-fp32", "num_examples": 4, "bytes_down": 0}
        return [ClientRow(**row, status="trained", sim_seconds=seconds)]

    rounds = {
        1: RoundRecord(train=trained(3.0)),
        2: RoundRecord(train=trained(1.0), evaluation=evaluation(0.5)),
        3: RoundRecord(train=trained(2.0)),
        4: RoundRecord(train=trained(4.0), evaluation=evaluation(1.0)),
    }
    results = _json(build_results(cfg, rounds, history, 1.0))
    final = results["final"]
    assert final["window_rounds"] == [2, 4]
    assert final["accuracy_by_bits"] == {"2": 0.7, "32": 0.8}  # (0.6+0.8)/2, (0.7+0.9)/2
    assert final["accuracy_by_tier"] == {"cpu-fp32": 0.7}
    assert results["last_round"]["accuracy_by_tier"] == {"cpu-fp32": 0.9}
    assert results["per_device"][0]["accuracy"] == 0.75  # mean of 0.5 and 1.0
    assert [h["central_accuracy_by_bits"] for h in results["history"]][0] == {}  # not evaluated
    assert [h["sim_elapsed_seconds"] for h in results["history"]] == [3.0, 4.0, 6.0, 10.0]
    conv = results["convergence"]
    assert conv["by_tier"]["cpu-fp32"] == {"round": 4, "sim_seconds": 10.0}  # 0.5 < 0.7 <= 0.9
    assert conv["by_bits"]["32"] == {"round": 2, "sim_seconds": 4.0}
    assert conv["by_bits"]["2"] == {"round": 4, "sim_seconds": 10.0}


def test_a_run_with_untrained_modes_warns_before_it_starts(tmp_path, capsys):
    from fedqdnn.console import setup_console
    from fedqdnn.federated.resources import Resources
    from fedqdnn.federated.simulation import prepare

    setup_console()
    cfg = FederatedConfig(num_clients=3, rounds=1, train_modes="lowest-common")
    prepare(cfg, tmp_path / "o", Resources())
    err = capsys.readouterr().err
    assert (
        "no participating device trains the 4,32-bit mode(s) (train-modes = lowest-common)" in err
    )
