"""End to end: real Flower + Ray simulation through the CLI (no mocks)."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.e2e_helpers import BIN, run
from tests.png_checks import assert_plot

pytestmark = pytest.mark.e2e


def test_simulate_three_tiers_learns_and_reports_every_tier(tmp_path):
    out = tmp_path / "sim"
    code, log = run(
        [
            str(BIN / "fedqdnn"),
            "simulate",
            "--num-clients",
            "6",
            "--rounds",
            "4",
            "--final-average",
            "2",
            "--out",
            str(out),
        ],
        timeout=420,
    )
    assert code == 0, log[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["final"]["window_rounds"] == [3, 4]
    # the window's two models averaged into one deployable model, entry by entry
    third = load_file(str(out / "final-models" / "model-round3.safetensors"))
    last = load_file(str(out / "model.safetensors"))
    averaged = load_file(str(out / "model-window-average.safetensors"))
    assert set(averaged) == set(last)
    for key, value in averaged.items():
        if value.dtype.kind == "f":
            assert np.allclose(value, (third[key] + last[key]) / 2, atol=1e-6), key
        else:
            assert np.array_equal(value, last[key]), key
    final, initial = results["final"], results["initial_accuracy_by_bits"]
    assert set(final["accuracy_by_bits"]) == {"2", "4", "32"}
    for bits, acc in final["accuracy_by_bits"].items():
        assert acc > initial[bits] + 0.3, (bits, acc, initial[bits])  # chance is 0.1
    assert set(final["accuracy_by_tier"]) == {"mcu-int2", "phone-npu-int4", "cpu-fp32"}
    assert len(results["per_device"]) == 6
    assert {d["bits"] for d in results["per_device"]} == {2, 4, 32}
    first = results["history"][0]
    assert len(first["clients"]) == 6 and first["rejected"] == []
    # the 32-bit tier trains every mode, the 2-bit tier only 2-bit, replies carry only those
    modes = {c["tier"]: c["trained-modes"] for c in first["clients"]}
    assert modes == {"mcu-int2": [2], "phone-npu-int4": [2, 4], "cpu-fp32": [2, 4, 32]}
    ups = {c["tier"]: c["bytes-up"] for c in first["clients"]}
    assert ups["mcu-int2"] < ups["phone-npu-int4"] < ups["cpu-fp32"]
    assert results["config"]["num-clients"] == 6 and results["versions"]["flwr"].startswith("1.42")
    # figure inches x 120 dpi; 3 tiers drawn (+ 2 more bit modes in the accuracy curves)
    pngs = {"device_accuracy_by_tier.png": ((1080, 504), 3),
            "accuracy_per_round.png": ((1320, 504), 5),
            "accuracy_vs_sim_time.png": ((1320, 504), 5),
            "sim_time_per_round.png": ((1320, 504), 3)}  # fmt: skip
    for png, (size, hues) in pngs.items():
        assert_plot(out / png, size, hues)


def test_simulate_bad_scenario_fails_before_any_work(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "digits"\nroundz = 3\n')
    out = tmp_path / "keep"
    out.mkdir()
    (out / "results.json").write_text("{}")
    code, log = run(
        [str(BIN / "fedqdnn"), "simulate", "--scenario", str(bad), "--out", str(out)], timeout=60
    )
    assert code == 2
    assert "unknown config key 'roundz'" in log and log.strip().count("\n") == 0
    assert (out / "results.json").read_text() == "{}"
