"""Every bad input exits non-zero with one line naming it, before any work, outputs untouched."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from fedqdnn.cli import main
from tests.hf_helpers import save_writers

OLD = '{"kept": true}'


def _scenario(tmp_path, text):
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return ["--scenario", str(path)]


def _checkpoint(tmp_path, bad_shape: bool):
    """A run directory whose checkpoint is either of wrong shape or not safetensors."""
    from simulations.scenarios import load_scenario

    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoint"
    ckpt.mkdir(parents=True)
    if bad_shape:
        save_file(
            {"stem.weight": np.zeros((1, 1), np.float32)}, str(ckpt / "model-round1.safetensors")
        )
    else:
        (ckpt / "model-round1.safetensors").write_bytes(b"\x80\x04K\x01.")  # a pickle
    state = {
        "format": 1,
        "round": 1,
        "model_file": "model-round1.safetensors",
        "config": load_scenario("three-tier").to_flat(),
        "history": {},
        "strategy_rounds": {},
    }
    (ckpt / "state.json").write_text(json.dumps(state))
    return ["--resume", str(run_dir)]


def _writers(tmp_path, *extra):
    """Flags running a saved hf: data set of 6 writers (tests/hf_helpers.py), plus ``extra``.

    (Cases must fail before the data are decoded: the first decoding prints a note.)"""
    root = save_writers(tmp_path / "writers")
    return ["--dataset", "hf:test/writers", "--set", f"data-root={root}", *extra]


@pytest.fixture(autouse=True)
def _private_decoded_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDQDNN_CACHE", str(tmp_path / "fedqdnn-cache"))


CASES = {
    "unknown key": (lambda p: _scenario(p, "roundz = 3\n"), "unknown config key 'roundz'"),
    "bit mode 0": (lambda p: ["--set", "bits=0,32"], "bit mode 0"),
    "bit mode 33": (lambda p: ["--set", "bits=2,33"], "bit mode 33"),
    "tier with no bit modes of the model": (
        lambda p: ["--set", "bits=32", "--set", "tiers=mcu-int2:1.0"],
        "runs at most 2-bit",
    ),
    "proportions not summing to 1": (
        lambda p: ["--set", "tiers=mcu-int2:0.5,cpu-fp32:0.2"],
        "sum to 0.7",
    ),
    "alpha <= 0": (lambda p: ["--set", "alpha=0"], "alpha = '0'"),
    "more clients per round than clients": (
        lambda p: ["--set", "fraction-train=1.5"],
        "fraction-train = '1.5'",
    ),
    "zero clients": (lambda p: ["--clients", "0"], "num-clients = 0"),
    "missing dataset files": (
        lambda p: ["--dataset", "cifar10", "--set", f"data-root={p}"],
        "cifar10 files not found",
    ),
    "unknown model": (lambda p: ["--set", "model=vgg"], "'vgg'"),
    "hf: without a name": (lambda p: ["--dataset", "hf:"], "dataset = 'hf:' is not allowed"),
    "hf: data set not here, download off": (
        lambda p: ["--dataset", "hf:nobody/nothing"],
        "hf:nobody/nothing is not in the Hugging Face cache and download is off",
    ),
    "hf: data root missing": (
        lambda p: ["--dataset", "hf:x/y", "--set", f"data-root={p / 'none'}"],
        "does not exist",
    ),
    "unknown label column": (
        lambda p: _writers(p, "--set", "label-column=digit"),
        "label-column = 'digit' is not a column of hf:test/writers",
    ),
    "natural without partition-by": (
        lambda p: ["--set", "partition=natural"],
        "partition = 'natural' needs partition-by",
    ),
    "natural on a built-in data set": (
        lambda p: ["--set", "partition=natural", "--set", "partition-by=writer_id"],
        "partition-by = 'writer_id' needs an hf: data set",
    ),
    "image column of a built-in data set": (
        lambda p: ["--set", "image-column=img"],
        "image-column = 'img' needs an hf: data set",
    ),
    "unknown scenario": (lambda p: ["--scenario", "four-tier"], "unknown scenario 'four-tier'"),
    "bad TOML": (lambda p: _scenario(p, "rounds = = 3\n"), "not valid TOML"),
    "corrupt checkpoint (pickle)": (
        lambda p: _checkpoint(p, bad_shape=False),
        "not a readable safetensors",
    ),
    "mismatched checkpoint": (
        lambda p: _checkpoint(p, bad_shape=True),
        "checkpoint does not match the model",
    ),
    "bad --set": (lambda p: ["--set", "rounds"], "not KEY=VALUE"),
    "bad cpus per client": (lambda p: ["--cpus-per-client", "0"], "--cpus-per-client"),
    "unknown device": (lambda p: ["--device", "gpu"], "device = 'gpu' is not allowed"),
    "device index not a number": (
        lambda p: ["--set", "device=cuda:x"],
        "auto, cpu, cuda or cuda:N",
    ),
    "cuda without a GPU share": (
        lambda p: ["--device", "cuda", "--gpus-per-client", "0"],
        # without CUDA the server's device fails first; with CUDA the clients' share does
        "CUDA is not available here"
        if not torch.cuda.is_available()
        else "needs --gpus-per-client > 0",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_simulate_input(name, tmp_path, capsys):
    make_args, needle = CASES[name]
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(OLD)
    args = make_args(tmp_path)
    if "--resume" not in args:
        args += ["--out", str(out)]
    try:
        code = main(["simulate", *args])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert needle in err, err
    assert "\n" not in err
    assert (out / "results.json").read_text() == OLD


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["compare", "--strategies", "fedqdnn,magic"], "unknown strategy 'magic'"),
        (["compare", "--seeds", "0,x"], "--seeds"),
        (["compare", "--device", "tpu"], "device = 'tpu' is not allowed"),
        (["compare", "--gpus-per-client", "-1"], "--gpus-per-client >= 0"),
        (["plot", "/nonexistent"], "neither comparison.json nor results.json"),
        (["train", "--dataset", "hf:nobody/nothing"], "is not in the Hugging Face cache"),
        (["train", "--dataset", "imagenet"], "dataset = 'imagenet' is not allowed"),
    ],
)
def test_bad_compare_and_plot_input(argv, needle, capsys, tmp_path):
    code = main([*argv, *(["--out", str(tmp_path / "o")] if argv[0] != "plot" else [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "\n" not in err
    assert not (tmp_path / "o").exists()
