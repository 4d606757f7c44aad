"""End to end: a Hugging Face data set saved to disk, federated by the CLI (real Flower + Ray)
for 2 rounds with IID, Dirichlet and natural (one device per writer) partitions."""

import json

import pytest
from safetensors.numpy import load_file

from tests.e2e_helpers import BIN, run
from tests.hf_helpers import WRITER_SAMPLES, save_writers

pytestmark = pytest.mark.e2e

SCENARIO = """
dataset = "hf:test/writers"
data-root = "{root}"
bits = "2,32"
rounds = 2
local-epochs = 1
batch-size = 16
lr = 0.002

[tiers]
mcu-int2 = 0.5
cpu-fp32 = 0.5
"""


def _local_split(n: int, fraction: float = 0.2) -> tuple[int, int]:
    """(train, test) sizes of a partition of n samples (split_local's rule, by hand)."""
    n_test = min(max(1, round(n * fraction)), n - 1)
    return n - n_test, n_test


# flags per scheme, and the (train, test) sizes of every device's data, computed by hand:
# 90 training samples; IID: 30 per device; natural: one device per writer, in id order.
WRITER_SIZES = [_local_split(WRITER_SAMPLES[w]) for w in sorted(WRITER_SAMPLES)]
SCHEMES = {
    "iid": (["--num-clients", "3"], [_local_split(30)] * 3),
    "dirichlet": (["--num-clients", "3", "--partition", "dirichlet", "--alpha", "0.5"], None),
    "natural": (
        ["--num-clients", "0", "--partition", "natural", "--partition-by", "writer_id"],
        WRITER_SIZES,
    ),
}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    folder = tmp_path_factory.mktemp("writers")
    root = save_writers(folder / "saved")
    path = folder / "writers.toml"
    path.write_text(SCENARIO.format(root=root))
    caches = {"FEDQDNN_CACHE": str(folder / "decoded"), "HF_HOME": str(folder / "hf-home")}
    return path, caches


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_saved_hf_dataset_federates_for_two_rounds(scenario, scheme, tmp_path):
    path, caches = scenario
    flags, expected_sizes = SCHEMES[scheme]
    out = tmp_path / scheme
    command = [str(BIN / "fedqdnn"), "simulate", "--scenario", str(path), *flags]
    code, log = run([*command, "--out", str(out)], timeout=420, env=caches)
    assert code == 0, log[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["dataset"] == "hf:test/writers" and len(results["history"]) == 2
    train = {c["partition-id"]: c["num-examples"] for c in results["history"][0]["clients"]}
    test = {d["client"]: d["num_examples"] for d in results["per_device"]}
    num_devices = results["config"]["num-clients"]
    assert sorted(train) == sorted(test) == list(range(num_devices))
    assert sum(train.values()) + sum(test.values()) == sum(WRITER_SAMPLES.values())
    if expected_sizes is not None:
        assert [(train[p], test[p]) for p in range(num_devices)] == expected_sizes
    else:  # Dirichlet label skew gives unequal shares
        assert num_devices == 3 and len(set(train.values())) > 1
    # the 1x28x28 images chose the LEAF FEMNIST CNN: its 3136 -> 2048 dense layer
    shapes = {v.shape for v in load_file(str(out / "model.safetensors")).values()}
    assert (2048, 7 * 7 * 64) in shapes
    final = results["final"]["accuracy_by_bits"]
    assert set(final) == {"2", "32"}
    assert min(final.values()) >= 0.75, final  # 4 classes: chance is 0.25
