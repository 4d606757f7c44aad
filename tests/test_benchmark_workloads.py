"""The benchmarks' bare round loop and steady round time (no Flower, no child processes)."""

import fedqdnn.device
from benchmarks.workloads import bare_rounds, steady_round_seconds, timing_config
from fedqdnn.round_plan import select_partitions


def test_steady_round_time_is_the_median_of_rounds_two_on():
    stamps = {"0": 1.0, "1": 3.0, "2": 4.0, "3": 7.0, "4": 8.5}  # rounds take 2, 1, 3, 1.5
    assert steady_round_seconds({"rounds": 4, "round_stamps": stamps}) == 1.5  # of 1, 3, 1.5
    assert steady_round_seconds({"rounds": 5, "round_stamps": stamps}) is None  # one missing
    assert steady_round_seconds({"rounds": 1, "round_stamps": {0: 0.0, 1: 2.0}}) is None


def test_bare_rounds_train_the_sampled_devices_only(monkeypatch):
    cfg = timing_config(2).replace(num_clients=6, fraction_train=0.5, local_epochs=1)
    trained: list[tuple[int, int]] = []
    train_round = fedqdnn.device.train_round

    def counting(cfg, device, plan, server_round):
        trained.append((server_round, device.partition_id))
        return train_round(cfg, device, plan, server_round)

    monkeypatch.setattr(fedqdnn.device, "train_round", counting)
    result = bare_rounds(cfg)
    expected = [
        (r, pid) for r in (1, 2) for pid in select_partitions(range(6), 0.5, cfg.seed, r, 0)
    ]
    assert trained == expected and len(expected) == 6  # 3 of 6 devices in each of 2 rounds
    assert sorted(result["round_stamps"]) == [0, 1, 2]
    assert result["phase_seconds"]["checkpoint"] == 0.0  # none asked for
    assert result["phase_seconds"]["local_training"] > 0
