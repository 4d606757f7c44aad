"""Federated config: one validator for every path (flat keys, typed fields); scenario presets."""

import tomllib

import pytest

from fedqdnn.centralized import TrainJob, make_job
from fedqdnn.config import FLAT_KEYS, FederatedConfig, from_flat, parse_tiers
from fedqdnn.data_source import DataSource
from fedqdnn.fleet import device_tier
from fedqdnn.losses import ConsistencyConfig, Teacher
from fedqdnn.policies import TrainModes
from fedqdnn.round_plan import Slowdown
from fedqdnn.sampling import sampling_strata
from fedqdnn.training import OptimConfig, Optimizer
from simulations.scenarios import load_scenario, preset_names
from tests.e2e_helpers import REPO


def test_one_set_of_defaults_the_default_scenario_the_config_and_the_flower_app():
    """The default scenario is the config's defaults (a field default that drifted from the
    preset fails here), and the Flower app config in pyproject.toml lists exactly those
    values, every key written out (so `flwr run --run-config` can override any of them)."""
    assert load_scenario("three-tier") == FederatedConfig()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    config.pop("out-dir")
    assert config == FederatedConfig().to_flat()


def test_flat_round_trip():
    cfg = load_scenario("deadline-throttle").replace(
        rounds=3, bits=(2, 8, 32), participants="1,4", kd_weight=0.5, optimizer="sgd"
    )
    assert from_flat(cfg.to_flat()) == cfg
    assert hash(from_flat(cfg.to_flat())) == hash(cfg)
    assert set(cfg.to_flat()) == set(FLAT_KEYS)


def test_strings_parse_once_into_typed_fields():
    cfg = from_flat(
        {
            "bits": "32,2,4",
            "tiers": "mcu-int2:0.5,cpu-fp32:0.5",
            "participants": "0,3,7",
            "slowdown": "cpu-fp32:4:8,mcu-int2:6:2.5",
            "train-modes": "top",
            "kd-weight": "0.25",
            "optimizer": "sgd",
            "batch-size": "16",
        }
    )
    assert cfg.bits == (2, 4, 32)
    assert cfg.tiers == {"mcu-int2": 0.5, "cpu-fp32": 0.5}
    assert cfg.participants == (0, 3, 7) and cfg.participant_ids == [0, 3, 7]
    assert cfg.slowdown == (Slowdown("cpu-fp32", 4, 8.0), Slowdown("mcu-int2", 6, 2.5))
    assert cfg.train_modes is TrainModes.TOP
    # the loss and optimizer settings are the objects centralized training uses
    assert cfg.loss == ConsistencyConfig(1.0, 0.25, 1.0, Teacher.TOP)
    assert cfg.optim == OptimConfig(Optimizer.SGD, 0.002, 0.9, 0.0, 16, False)  # lr: the default
    assert cfg.to_flat()["slowdown"] == "cpu-fp32:4:8,mcu-int2:6:2.5"
    assert cfg.to_flat()["participants"] == "0,3,7"
    research = from_flat(
        {"mode-weights": "32:2", "mode-start": "32:40", "rounds": 40, "bn": "shared-affine"}
    )
    assert research.loss.weight_of(32) == 2.0 and research.mode_start == ((32, 40),)
    assert from_flat(research.to_flat()) == research


def test_data_source_is_one_section_shared_with_centralized_jobs():
    cfg = from_flat({"dataset": "mnist1d", "num-samples": "500", "data-seed": 3, "download": True})
    assert cfg.data == DataSource("mnist1d", 500, "", True, "", "", 3)
    # flat keys keep their places (results record the order; run folders hash the values)
    flat = list(cfg.to_flat())
    assert flat[:2] == ["dataset", "model"]
    after_device = flat[flat.index("device") + 1 :]
    assert after_device == [
        "num-samples", "data-root", "download", "image-column", "label-column", "data-seed", "seed"
    ]  # fmt: skip
    # a centralized job holds the same section (same defaults), given by the same flat names
    job = make_job(dataset="mnist1d", num_samples=500, data_seed=3, download=True)
    assert job.data == cfg.data and TrainJob().data == FederatedConfig().data == DataSource()
    assert (TrainJob().model, TrainJob().device, TrainJob().bn) == ("", "auto", cfg.bn)
    assert TrainJob().bits == (2, 4, 8, 32) and cfg.bits == (2, 4, 32)  # differ on purpose
    with pytest.raises(ValueError, match="num-samples = 5 is not allowed"):
        make_job(num_samples=5)


@pytest.mark.parametrize(
    "flat, needle",
    [
        ({"roundz": 3}, "unknown config key 'roundz'"),
        ({"bits": "2,33"}, "bit mode 33"),
        ({"bits": "0"}, "bit mode 0"),
        ({"tiers": "cpu-fp32:0.5,mcu-int2:0.2"}, "sum to 0.7"),
        ({"tiers": "toaster:1.0"}, "'toaster'"),
        ({"tiers": "cpu-fp32"}, "NAME:PROPORTION"),
        ({"tiers": {"cpu-fp32": [1.0]}}, "tiers.cpu-fp32 = [1.0]"),
        ({"alpha": 0}, "alpha = 0 is not allowed"),
        ({"alpha": "nan"}, "alpha = 'nan' is not allowed"),
        ({"fraction-train": 1.5}, "fraction-train = 1.5"),
        ({"num-clients": 0}, "num-clients = 0"),
        ({"dataset": "imagenet"}, "'imagenet'"),
        ({"model": "vgg"}, "'vgg'"),
        ({"rounds": "many"}, "rounds = 'many'"),
        ({"rounds": True}, "rounds = True"),
        ({"partition": "shards"}, "'shards'"),
        ({"train-modes": "all"}, "train-modes = 'all'"),
        ({"lr": "inf"}, "lr = 'inf'"),
        ({"temperature": 0}, "temperature = 0"),
        ({"kd-weight": -1}, "kd-weight = -1"),
        ({"fault-nan": 1.5}, "fault-nan = 1.5"),
        ({"deadline-seconds": "nan"}, "deadline-seconds = 'nan'"),
        ({"participants": "0,10"}, "participants = '0,10'"),
        ({"participants": "a"}, "participants = 'a'"),
        ({"slowdown": "cpu-fp32:4"}, "TIER:ROUND:FACTOR"),
        ({"slowdown": "gpu:4:2"}, "slowdown entry 'gpu:4:2'"),
        ({"seed": 2**64}, "seed = 18446744073709551616"),
        ({"upload-bits": 16}, "upload-bits = 16"),
        ({"aggregation": "fedavg", "availability": True}, "identical replies"),
        ({"dataset": "hf:"}, "dataset = 'hf:' is not allowed"),
        ({"dataset": "hf:a b"}, "or hf:<Hugging Face dataset>"),
        ({"partition": "natural"}, "partition = 'natural' needs partition-by"),
        ({"num-clients": 0, "dataset": "hf:x"}, "needs partition = 'natural'"),
        ({"partition": "natural", "partition-by": "w"}, "partition-by = 'w' needs an hf: data"),
        ({"label-column": "y"}, "label-column = 'y' needs an hf: data set"),
        ({"download": "maybe"}, "download = 'maybe'"),
        ({"mode-start": "2:5"}, "mode-start entry 2:5"),
        ({"mode-start": "8:5"}, "mode-start entry 8:5"),
        ({"mode-start": "32"}, "BITS:VALUE"),
        (
            {"mode-start": "32:999", "rounds": 1},
            "mode-start entry 32:999 is not allowed: ROUND must be <= rounds = 1",
        ),
        ({"tiers": "mcu-int2:0.5,cpu-fp32:0.5,mcu-int2:0.5"}, "tier 'mcu-int2' is given twice"),
        ({"tiers": "mcu-int2:0.5,mcu-int2:0.5"}, "tier 'mcu-int2' is given twice"),
        ({"mode-weights": "32:-1"}, "mode-weights"),
        ({"server-optimizer": "sgd"}, "server-optimizer = 'sgd'"),
        ({"sampling": "by-tier"}, "sampling = 'by-tier' is not allowed: input should be"),
        ({"sampling": "stratified", "aggregation": "fedavg"}, "allowed: uniform"),
        ({"server-momentum": 1.0}, "server-momentum = 1.0"),
        ({"mode-state-decay": 1}, "mode-state-decay = 1"),
        ({"serve-ema": 1}, "serve-ema = 1 is not allowed"),
        ({"serve-ema": -0.5}, "serve-ema = -0.5 is not allowed"),
        ({"bn": "per-mode"}, "bn = 'per-mode'"),
        ({"evaluate-every": 0}, "evaluate-every = 0"),
    ],
)
def test_bad_values_give_one_line_naming_them(flat, needle):
    with pytest.raises(ValueError) as err:
        from_flat(flat)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_hf_dataset_keys_and_a_fleet_of_one_device_per_id():
    cfg = from_flat(
        {
            "dataset": "hf:flwrlabs/femnist",
            "partition": "natural",
            "partition-by": "writer_id",
            "num-clients": 0,
            "label-column": "character",
            "download": True,
        }
    )
    assert (cfg.partition_by, cfg.data.label_column, cfg.data.image_column) == (
        "writer_id",
        "character",
        "",
    )
    assert from_flat(cfg.to_flat()) == cfg and cfg.to_flat()["num-clients"] == 0
    with pytest.raises(ValueError, match="num-clients = 0 .* is resolved from the data first"):
        _ = cfg.num_nodes
    # another scheme ignores partition-by (so a scenario's partition can be switched alone)
    assert from_flat({"partition": "iid", "partition-by": "w", "dataset": "hf:x"}).partition_by


def test_tiers_parse():
    assert parse_tiers("a:0.5, b:0.5") == {"a": 0.5, "b": 0.5}
    assert parse_tiers({"a": 1.0}) == {"a": 1.0}


def test_every_preset_validates():
    names = preset_names()
    assert "three-tier" in names
    for name in names:
        assert isinstance(load_scenario(name), FederatedConfig)


def test_untrained_modes_follow_tiers_policy_and_participants():
    """Hand cases on the three-tier fleet (mcu-int2 runs 2; phone-npu-int4 up to 8; cpu-fp32
    every mode): which modes no participating device ever trains."""
    cfg = FederatedConfig()
    assert cfg.untrained_modes() == ()
    assert cfg.replace(train_modes="top").untrained_modes() == ()  # each tier its top
    assert cfg.replace(train_modes="lowest-common").untrained_modes() == (4, 32)
    assert cfg.replace(train_modes="fp32").untrained_modes() == (2, 4)
    no_cpu = cfg.replace(tiers="mcu-int2:0.5,phone-npu-int4:0.5")
    assert no_cpu.untrained_modes() == (32,)
    tiers = [device_tier(cfg, p) for p in range(cfg.num_clients)]
    mcu = [p for p, t in enumerate(tiers) if t == "mcu-int2"]
    assert cfg.replace(participants=tuple(mcu)).untrained_modes() == (4, 32)


def test_device_train_modes_and_the_sampling_strata_they_make():
    """Each device's trained modes follow its tier and train-modes; stratified sampling groups
    the devices by them, uniform sampling keeps one group of every participant."""
    cfg = FederatedConfig()
    tiers = [device_tier(cfg, p) for p in range(cfg.num_clients)]
    own = {"mcu-int2": (2,), "phone-npu-int4": (2, 4), "cpu-fp32": (2, 4, 32)}
    assert cfg.device_train_modes() == {p: own[t] for p, t in enumerate(tiers)}
    lowest = cfg.replace(train_modes="lowest-common").device_train_modes()
    assert set(lowest.values()) == {(2,)}
    assert sampling_strata(cfg) == (tuple(range(9)),)
    stratified = cfg.replace(sampling="stratified")
    by_tier = {t: tuple(p for p in range(9) if tiers[p] == t) for t in own}
    assert sampling_strata(stratified) == tuple(by_tier[t] for t in own)  # (2,) < (2,4) < ...
    one_group = stratified.replace(train_modes="lowest-common")  # every device trains 2 bits
    assert sampling_strata(one_group) == (tuple(range(9)),)


@pytest.mark.parametrize("train_modes", ["lowest-common", "fp32"])
def test_one_mode_kd_is_refused_where_no_device_trains_the_teacher(train_modes):
    refusal = f"one-mode-kd-weight > 0 is not allowed with train-modes = '{train_modes}'"
    with pytest.raises(ValueError, match=refusal):
        from_flat({"one-mode-kd-weight": 1.0, "train-modes": train_modes})
    top = from_flat({"one-mode-kd-weight": 1.0, "train-modes": "top"})
    assert top.loss.one_mode_kd_weight == 1.0


def test_one_mode_kd_is_refused_with_a_delayed_mode():
    with pytest.raises(
        ValueError, match="one-mode-kd-weight > 0 is not allowed with mode-start = '32:5'"
    ):
        from_flat({"one-mode-kd-weight": 1.0, "mode-start": "32:5"})
