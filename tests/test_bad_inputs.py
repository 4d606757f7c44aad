"""Every bad input exits non-zero with one line naming it, before any work, outputs untouched.

Each simulate case runs against a folder that holds a finished run, with ``--overwrite`` (so the
folder itself is acceptable): the bad value must be refused before anything of the old run is
removed. A case that got past every check would start a run; the guard fixture fails it instead.
"""

import json
import os
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from fedqdnn.cli import main
from fedqdnn.federated.run_folder import claim, run_identity
from fedqdnn.schema import LOCK_FILE
from tests.hf_helpers import save_writers

HAS_CUDA = torch.cuda.is_available()
OLD = '{"kept": true}'


@pytest.fixture(autouse=True)
def no_run_starts(monkeypatch):
    """A case that passes every check would start Flower + Ray: fail instead."""

    def refuse(*args, **kwargs):
        raise AssertionError("the bad input reached the run")

    monkeypatch.setattr("fedqdnn.federated.supervisor._supervise", refuse)


def _scenario(tmp_path, text: str | bytes):
    path = tmp_path / "scenario.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["--scenario", str(path)]


def _run_folder(tmp_path, edit_state=None, edit_run=None, pickle_model=False, bad_shape=False):
    """A run folder as an interrupted run leaves it: run.json and a round-1 checkpoint of the
    three-tier scenario (real initial model); ``edit_*`` change the state / run record."""
    from fedqdnn.fleet import initial_model, run_data
    from simulations.scenarios import load_scenario

    cfg = load_scenario("three-tier")
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoint"
    ckpt.mkdir(parents=True)
    model_file = ckpt / "model-round1.safetensors"
    if pickle_model:
        model_file.write_bytes(b"\x80\x04K\x01.")
    elif bad_shape:
        save_file({"stem.weight": np.zeros((1, 1), np.float32)}, str(model_file))
    else:
        state = {k: v.numpy() for k, v in initial_model(cfg).state_dict().items()}
        save_file(state, str(model_file))
    state = {
        "format": 2,
        "round": 1,
        "model_file": model_file.name,
        "config": cfg.to_flat(),
        "history": {"round_seconds": {"1": 2.5}},
        "strategy": {"rounds": {}},
    }
    run = run_identity(cfg, run_data(cfg).fingerprint)
    if edit_state:
        edit_state(state)
    if edit_run:
        edit_run(run)
    (ckpt / "state.json").write_text(json.dumps(state))
    (run_dir / "run.json").write_text(json.dumps(run))
    return ["--resume", str(run_dir)]


def _drop(key):
    return lambda d: d.pop(key)


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _set_config(key, value):
    return lambda d: d["config"].__setitem__(key, value)


def _finished_comparison(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "comparison.json").write_text(OLD)
    return ["--out", str(out)]


def _unfinished_run(tmp_path):
    out = tmp_path / "half"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.json").write_text('{"round": 3}')
    return ["--out", str(out)]


def _a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return ["--out", str(tmp_path / "file")]


def _under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return ["--out", str(tmp_path / "file" / "sub")]


FAR_TOO_MANY_GPUS = "1000"  # no machine has a thousand GPUs


def _writers(tmp_path, *extra):
    """Flags running a saved hf: data set of 6 writers (tests/hf_helpers.py), plus ``extra``.

    (Cases must fail before the data are decoded: the first decoding prints a note.)"""
    root = save_writers(tmp_path / "writers")
    return ["--dataset", "hf:test/writers", "--data-root", f"{root}", *extra]


def _odd_hf(tmp_path, labels: list, images: list | None = None, label_type: str = "int64"):
    """Flags running a saved hf: data set of 8x8 gray images with ``labels`` (train split only);
    ``images`` replaces the images (None = missing)."""
    import datasets
    from PIL import Image

    images = images if images is not None else [Image.new("L", (8, 8))] * len(labels)
    features = datasets.Features(image=datasets.Image(), label=datasets.Value(label_type))
    part = datasets.Dataset.from_dict({"image": images, "label": labels}, features)
    datasets.disable_progress_bars()  # the command's stderr must be its one line
    try:
        part.save_to_disk(str(tmp_path / "odd"))
    finally:
        datasets.enable_progress_bars()
    return ["--dataset", "hf:test/odd", "--data-root", str(tmp_path / "odd")]


def _py_file(tmp_path):
    (tmp_path / "copy.py").write_text("print('hi')\n")
    return ["--dataset", "hf:test/odd", "--data-root", str(tmp_path / "copy.py")]


def _gray(count: int) -> list:
    from PIL import Image

    return [Image.new("L", (8, 8))] * count


@pytest.fixture(autouse=True)
def _private_decoded_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDQDNN_CACHE", str(tmp_path / "fedqdnn-cache"))


CASES = {
    # config values: finite, in range, named in the error
    "unknown key": (lambda p: _scenario(p, "roundz = 3\n"), "unknown config key 'roundz'"),
    "bit mode 0": (lambda p: ["--bits", "0,32"], "bit mode 0"),
    "bit mode 33": (lambda p: ["--bits", "2,33"], "bit mode 33"),
    "tier with no bit modes of the model": (
        lambda p: ["--bits", "32", "--tiers", "mcu-int2:1.0"],
        "runs at most 2-bit",
    ),
    "proportions not summing to 1": (
        lambda p: ["--tiers", "mcu-int2:0.5,cpu-fp32:0.2"],
        "sum to 0.7",
    ),
    "a tier given twice": (
        lambda p: ["--tiers", "mcu-int2:0.5,cpu-fp32:0.5,mcu-int2:0.5"],
        "tier 'mcu-int2' is given twice",
    ),
    "a mode starting after the last round": (
        lambda p: ["--mode-start", "32:999", "--rounds", "1"],
        "mode-start entry 32:999 is not allowed: ROUND must be <= rounds = 1",
    ),
    "alpha <= 0": (lambda p: ["--alpha", "0"], "alpha = '0'"),
    "alpha nan": (lambda p: ["--alpha", "nan"], "alpha = 'nan'"),
    "alpha inf": (lambda p: ["--alpha", "inf"], "alpha = 'inf'"),
    "more clients per round than clients": (
        lambda p: ["--fraction-train", "1.5"],
        "fraction-train = '1.5'",
    ),
    "zero clients": (lambda p: ["--num-clients", "0"], "num-clients = 0"),
    "a billion clients (every device needs examples)": (
        lambda p: ["--num-clients", "1000000000"],
        "num-clients = 1000000000 is not allowed: digits has 1437 training examples",
    ),
    "lr inf": (lambda p: ["--lr", "inf"], "lr = 'inf' is not allowed"),
    "lr beyond any meaningful rate": (lambda p: ["--lr", "1e308"], "lr = '1e308'"),
    "deadline nan": (lambda p: ["--deadline-seconds", "nan"], "deadline-seconds = 'nan'"),
    "temperature nan": (lambda p: ["--temperature", "nan"], "temperature = 'nan'"),
    "temperature inf": (lambda p: ["--temperature", "inf"], "temperature = 'inf'"),
    "temperature that overflows the logits": (
        lambda p: ["--temperature", "1e-300"],
        "temperature = '1e-300'",
    ),
    "kd weight nan": (lambda p: ["--kd-weight", "nan"], "kd-weight = 'nan'"),
    "ce weight inf": (lambda p: ["--ce-weight", "inf"], "ce-weight = 'inf'"),
    "momentum >= 1": (lambda p: ["--momentum", "5"], "momentum = '5'"),
    "slowdown factor nan": (
        lambda p: ["--slowdown", "cpu-fp32:2:nan"],
        "slowdown entry 'cpu-fp32:2:nan'",
    ),
    "slowdown factor inf": (
        lambda p: ["--slowdown", "cpu-fp32:2:inf"],
        "slowdown entry 'cpu-fp32:2:inf'",
    ),
    "seed too large for 64 bits": (
        lambda p: ["--seed", str(2**64)],
        "seed = '18446744073709551616' is not allowed: input should be less than or equal to "
        "9223372036854775807",
    ),
    "rounds beyond any run": (lambda p: ["--rounds", "10000000"], "rounds = '10000000'"),
    "mnist1d sample count too small": (
        lambda p: ["--dataset", "mnist1d", "--num-samples", "99"],
        "num-samples = '99'",
    ),
    "tier share as a string": (
        lambda p: _scenario(p, '[tiers]\n"cpu-fp32" = "half"\n'),
        "tiers.cpu-fp32 = 'half'",
    ),
    "tier share as a list": (
        lambda p: _scenario(p, '[tiers]\n"cpu-fp32" = [1.0]\n'),
        "tiers.cpu-fp32 = [1.0]",
    ),
    "missing dataset files": (
        lambda p: ["--dataset", "cifar10", "--data-root", f"{p}"],
        "cifar10 files not found",
    ),
    "unknown model": (lambda p: ["--model", "vgg"], "'vgg'"),
    "hf: without a name": (lambda p: ["--dataset", "hf:"], "dataset = 'hf:' is not allowed"),
    "hf: data set not here, download off": (
        lambda p: ["--dataset", "hf:nobody/nothing"],
        "hf:nobody/nothing is not in the Hugging Face cache and download is off",
    ),
    "hf: data root missing": (
        lambda p: ["--dataset", "hf:x/y", "--data-root", f"{p / 'none'}"],
        "does not exist",
    ),
    "unknown label column": (
        lambda p: _writers(p, "--label-column", "digit"),
        "label-column = 'digit' is not a column of hf:test/writers",
    ),
    "hf: a missing image": (
        lambda p: _odd_hf(p, [0, 1] * 5, images=[*_gray(7), None, *_gray(2)]),
        "hf:test/odd train row 7 has no image ('image' is null)",
    ),
    "hf: a missing string label": (
        lambda p: [
            *_odd_hf(p, ["a", "b"] * 2 + [None] + ["a"] * 5, None, "string"),
            "--label-column",
            "label",
        ],
        "hf:test/odd train row 4 has no label ('label' is null)",
    ),
    "hf: one class": (
        lambda p: _odd_hf(p, [5] * 10),
        "hf:test/odd train has one class (label 5): nothing to learn; accuracy would read 100 %",
    ),
    "hf: sparse integer labels": (
        lambda p: _odd_hf(p, [0, 999999] * 5),
        "holds 2 distinct integers up to 999999: a 1,000,000-way output layer",
    ),
    "hf: a data-root file we do not load": (
        _py_file,
        "is a .py file, not one fedqdnn loads; allowed: a .parquet or .arrow file, or a folder",
    ),
    "natural without partition-by": (
        lambda p: ["--partition", "natural"],
        "partition = 'natural' needs partition-by",
    ),
    "natural on a built-in data set": (
        lambda p: ["--partition", "natural", "--partition-by", "writer_id"],
        "partition-by = 'writer_id' needs an hf: data set",
    ),
    "image column of a built-in data set": (
        lambda p: ["--image-column", "img"],
        "image-column = 'img' needs an hf: data set",
    ),
    # scenario files
    "unknown scenario": (lambda p: ["--scenario", "four-tier"], "unknown scenario 'four-tier'"),
    "bad TOML": (lambda p: _scenario(p, "rounds = = 3\n"), "not valid TOML"),
    "scenario of garbage bytes": (
        lambda p: _scenario(p, bytes(range(128, 256))),
        "scenario.toml: not UTF-8 text",
    ),
    "scenario with a byte-order mark and a bad key": (  # the BOM is read, the key named
        lambda p: _scenario(p, b"\xef\xbb\xbfroundz = 3\n"),
        "unknown config key 'roundz'",
    ),
    "scenario naming a folder": (
        lambda p: ["--scenario", str(p)],
        "is a folder; give a .toml file",
    ),
    "a key with no value": (lambda p: ["--rounds"], "argument --rounds: expected one argument"),
    "a key that does not exist": (lambda p: ["--magic", "1"], "unrecognized arguments: --magic"),
    "resume with a download": (
        lambda p: ["--resume", str(p), "--download"],
        "--resume continues the run in its folder with its own config; drop --download",
    ),
    # resources the machine or cluster cannot give
    "bad cpus per client": (lambda p: ["--cpus-per-client", "0"], "--cpus-per-client = 0.0"),
    "cpus per client nan": (lambda p: ["--cpus-per-client", "nan"], "--cpus-per-client = nan"),
    "gpus per client nan": (lambda p: ["--gpus-per-client", "nan"], "--gpus-per-client = nan"),
    "more CPUs per client than the machine has": (
        lambda p: ["--cpus-per-client", "100000"],
        "--cpus-per-client 100000 --gpus-per-client 0: no client fits, this machine has",
    ),
    "more GPUs per client than the machine has": (
        lambda p: ["--gpus-per-client", FAR_TOO_MANY_GPUS],
        "--gpus-per-client 1000: no client fits, this machine has",
    ),
    "unreachable --ray-address": (
        lambda p: ["--ray-address", "127.0.0.1:1"],
        "--ray-address 127.0.0.1:1: cannot reach a Ray cluster there",
    ),
    # checkpoints: schema, consistency with their own config and with their run
    "corrupt checkpoint (pickle)": (
        lambda p: _run_folder(p, pickle_model=True),
        "not a readable safetensors",
    ),
    "mismatched checkpoint": (
        lambda p: _run_folder(p, bad_shape=True),
        "checkpoint does not match the model",
    ),
    "checkpoint of another format": (
        lambda p: _run_folder(p, edit_state=_set("format", 1)),
        "/checkpoint/state.json has format 1; this version reads format 2 only",
    ),
    "checkpoint state without its config": (
        lambda p: _run_folder(p, edit_state=_drop("config")),
        "state.json: config is missing",
    ),
    "checkpoint state with a malformed history": (
        lambda p: _run_folder(p, edit_state=_set("history", {"round_seconds": {"one": 2.5}})),
        "state.json: history.round_seconds.one = 'one' is not allowed",
    ),
    "checkpoint history as a list": (
        lambda p: _run_folder(p, edit_state=_set("history", [])),
        "state.json: history = [] is not allowed",
    ),
    "checkpoint round past the run's total": (
        lambda p: _run_folder(p, edit_state=_set("round", 99)),
        "round = 99 is not allowed: the run has 12 rounds",
    ),
    "last-round checkpoint with a short history": (
        lambda p: _run_folder(p, edit_state=_set("round", 12)),
        "history.round_seconds lacks round 2 of the 12 rounds done; start the run again",
    ),
    "last-round checkpoint without its final evaluation": (
        lambda p: _run_folder(
            p,
            edit_state=lambda d: d.update(
                round=12, history={"round_seconds": {str(r): 1.0 for r in range(1, 13)}}
            ),
        ),
        "history.evaluate_metrics_serverapp lacks round 12 of the final window [12]",
    ),
    "checkpoint with an edited seed": (
        lambda p: _run_folder(p, edit_state=_set_config("seed", 7)),
        "checkpoint seed = 7, the run's seed = 0",
    ),
    "checkpoint of another data set": (
        lambda p: _run_folder(p, edit_run=_set("data", "0" * 32)),
        "digits data differs from the data the run",
    ),
    "checkpoint config with a bad value": (
        lambda p: _run_folder(p, edit_state=_set_config("lr", "inf")),
        "config: lr = 'inf' is not allowed",
    ),
    "resume with other settings": (
        lambda p: [*_run_folder(p), "--rounds", "3"],
        "--resume continues the run in its folder with its own config; drop --rounds",
    ),
    # output folders
    "--out is a file": (_a_file, "is a file; give a folder"),
    "--out under a file": (_under_a_file, "is not writable"),
    "unknown device": (lambda p: ["--device", "gpu"], "device = 'gpu' is not allowed"),
    "device index not a number": (lambda p: ["--device", "cuda:x"], "cuda or cuda:N"),
    "cuda without a GPU share": (
        lambda p: ["--device", "cuda", "--gpus-per-client", "0"],
        # without CUDA the server's device fails first; with CUDA the clients' share does
        "CUDA is not available here" if not HAS_CUDA else "needs --gpus-per-client > 0",
    ),
}

FOLDER_CASES = {
    "a finished run": (
        lambda p: ["--out", str(p / "out")],
        "already holds a finished run (results.json); choose another folder or replace it "
        "with --overwrite",
    ),
    "an unfinished run": (
        _unfinished_run,
        "already holds an unfinished run (checkpoint of round 3); continue it with --resume",
    ),
    "a comparison": (_finished_comparison, "already holds a comparison (comparison.json)"),
}


def _main(argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_simulate_input(name, tmp_path, capsys):
    make_args, needle = CASES[name]
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(OLD)
    args = make_args(tmp_path)
    if "--resume" not in args and "--out" not in args:
        args += ["--out", str(out), "--overwrite"]
    code = _main(["simulate", *args])
    err = _one_line(capsys)
    assert code == 2, err
    assert needle in err, err
    assert (out / "results.json").read_text() == OLD


@pytest.mark.parametrize("name", list(FOLDER_CASES))
def test_simulate_refuses_a_folder_holding_results(name, tmp_path, capsys):
    make_args, needle = FOLDER_CASES[name]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text(OLD)
    args = make_args(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = _main(["simulate", "--num-clients", "3", *args])
    err = _one_line(capsys)
    assert code == 2 and needle in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_folder_in_use_is_refused(tmp_path, capsys):
    """The lock is held (here by this process, through another open file): a second run on
    the folder is refused at once, naming the holder."""
    out = tmp_path / "busy"
    with claim(out):
        code = _main(["simulate", "--num-clients", "3", "--out", str(out)])
    err = _one_line(capsys)
    assert code == 2 and f"is in use by another fedqdnn run (pid {os.getpid()})" in err, err


def test_resume_of_a_finished_run_is_refused(tmp_path, capsys):
    args = _run_folder(tmp_path)
    (tmp_path / "run" / "results.json").write_text(OLD)
    code = _main(["simulate", *args])
    err = _one_line(capsys)
    assert code == 2 and "the run there is finished (results.json)" in err, err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--lr", "inf"], "lr = 'inf' is not allowed"),
        (["--width", "0"], "width = '0' is not allowed"),
        (["--momentum", "5"], "momentum = '5' is not allowed"),
        (["--temperature", "1e-300"], "temperature = '1e-300' is not allowed"),
        (["--epochs", "100000"], "epochs = '100000' is not allowed"),
        (["--dataset", "hf:nobody/nothing"], "is not in the Hugging Face cache"),
        (["--dataset", "imagenet"], "dataset = 'imagenet' is not allowed"),
    ],
)
def test_bad_train_input(argv, needle, tmp_path, capsys):
    out = tmp_path / "o"
    code = _main(["train", *argv, "--out", str(out)])
    err = _one_line(capsys)
    assert code == 2 and needle in err, err
    assert not out.exists()


def test_train_refuses_a_file_and_a_finished_result_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _main(["train", "--epochs", "1", "--out", str(tmp_path / "file")]) == 2
    assert "is a file; give a folder" in _one_line(capsys)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.json").write_text(OLD)
    assert _main(["train", "--epochs", "1", "--out", str(tmp_path / "done")]) == 2
    assert "already holds a finished run" in _one_line(capsys)
    assert (tmp_path / "done" / "results.json").read_text() == OLD


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["compare", "--arms", "fedqdnn,magic"], "unknown arm 'magic'"),
        (["compare", "--arms", ","], "--arms ',' names no arm"),
        (["compare", "--seeds", "0,x"], "--seeds"),
        (["compare", "--seeds", ","], "--seeds is empty"),
        (["compare", "--seeds", "0,-1"], "seed = -1 is not allowed"),
        (["compare", "--lr", "nan"], "lr = 'nan'"),
        (["compare", "--device", "tpu"], "device = 'tpu' is not allowed"),
        (["compare", "--gpus-per-client", "-1"], "--gpus-per-client"),
        (["compare", "--arms", "fedqdnn,fedqdnn"], "arm 'fedqdnn' is given twice"),
        (["compare", "--seeds", "1,1"], "seed 1 is given twice (seeds 1,1)"),
        (["compare", "--arms", "fedqdnn,ascending"], "arm 'ascending': mode-start entry 32:30"),
    ],
)
def test_bad_compare_input_leaves_a_comparison_untouched(argv, needle, capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    for name in ("comparison.json", "comparison.csv"):
        (out / name).write_text(OLD)
    code = _main([*argv, "--out", str(out), "--overwrite"])
    err = _one_line(capsys)
    assert code == 2 and needle in err, err
    assert all((out / n).read_text() == OLD for n in ("comparison.json", "comparison.csv"))


def test_run_comparison_refuses_a_repeated_arm_or_seed(tmp_path):
    """Not only the CLI: a repeated seed would make one run count as several in every mean."""
    from simulations.compare import run_comparison
    from simulations.scenarios import load_scenario

    cfg = load_scenario("three-tier")
    with pytest.raises(ValueError, match="seed 0 is given twice"):
        run_comparison(cfg, ["fedqdnn"], [0, 1, 0], tmp_path / "o")
    with pytest.raises(ValueError, match="arm 'per-tier' is given twice"):
        run_comparison(cfg, ["per-tier", "fedqdnn", "per-tier"], [0], tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--values", "0.1,x"], "--values: 'x' is not a number"),
        (["--values", "0.1,-1"], "alpha = -1.0 is not allowed"),
        (["--arms", "fedqdnn,magic"], "sweep point alpha-0.1: arm 'magic': unknown arm"),
        (["--seeds", "0,x"], "--seeds '0,x' is not a comma list of integers"),
        (["--seeds", "2,2"], "seed 2 is given twice"),
        (["--arms", "fedqdnn,ascending", "--rounds", "20"], "point alpha-0.1: arm 'ascending'"),
    ],
)
def test_bad_sweep_input_is_one_line_before_any_point_runs(
    argv, needle, tmp_path, capsys, monkeypatch
):
    from simulations import sweeps

    out = tmp_path / "sweep"
    argv = ["sweeps", "alpha", "--values", "0.1,0.5", *argv, "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        sweeps.main()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()  # nothing started: no point's folder claimed


def test_compare_refuses_a_finished_comparison(tmp_path, capsys):
    args = _finished_comparison(tmp_path)
    code = _main(["compare", "--arms", "fedqdnn", "--seeds", "0", *args])
    err = _one_line(capsys)
    assert code == 2 and "already holds a comparison (comparison.json)" in err, err
    assert (tmp_path / "cmp" / "comparison.json").read_text() == OLD


def test_plot_of_a_folder_without_results(capsys):
    code = _main(["plot", "/nonexistent"])
    assert code == 2 and "neither comparison.json nor results.json" in _one_line(capsys)


def _edited(kind: str, edit: Callable[[dict], object]) -> Callable[[], str]:
    """The text of a valid hand-built results.json / comparison.json after ``edit``."""

    def text() -> str:
        from tests.plot_data import comparison_at, results_at

        data = results_at(9, rounds=2) if kind == "results" else comparison_at(2, 9, 1, rounds=2)
        data = data.to_json()
        edit(data)
        return json.dumps(data)

    return text


def _as_older_version(results: dict) -> None:
    """What an older fedqdnn wrote: no simulated time, no convergence."""
    for h in results["history"]:
        del h["sim_elapsed_seconds"]
    del results["convergence"]


def _without_curve_times(result: dict) -> None:
    for runs in result["curves"].values():
        del runs[0]["sim_elapsed_seconds"]


PLOT_CASES = {
    "empty results": (
        "results.json",
        lambda: "{}",
        "lacks final, last_round, convergence, initial_accuracy_by_bits and 6 more keys",
    ),
    "truncated results": (
        "results.json",
        lambda: '{"history": [{"round": 1, "central_acc',
        "is not valid JSON (truncated?)",
    ),
    "results of an older version": (
        "results.json",
        _edited("results", _as_older_version),
        "lacks convergence, history[0].sim_elapsed_seconds",
    ),
    "results with no rounds": (
        "results.json",
        _edited("results", lambda d: d.update(history=[])),
        "is invalid: history = [] is not allowed: list should have at least 1 item",
    ),
    "empty comparison": (
        "comparison.json",
        lambda: "{}",
        "lacks rows, curves, per_device, arms and 4 more keys",
    ),
    "truncated comparison": ("comparison.json", lambda: '{"rows": [', "is not valid JSON"),
    "comparison without curve times": (
        "comparison.json",
        _edited("comparison", _without_curve_times),
        "lacks curves.s0/seed0[0].sim_elapsed_seconds",
    ),
    "comparison with a curve one round short": (
        "comparison.json",
        _edited("comparison", lambda d: d["curves"]["s0/seed0"][0]["rounds"].pop()),
        "is not allowed: rounds, sim_elapsed_seconds, central_accuracy_by_bits and "
        "accuracy_by_tier differ",
    ),
    "comparison with no rows": (
        "comparison.json",
        _edited("comparison", lambda d: d.update(rows=[])),
        "is invalid: rows = [] is not allowed: list should have at least 1 item",
    ),
}


@pytest.mark.parametrize("name", list(PLOT_CASES))
def test_bad_plot_input_names_file_and_key_and_keeps_old_plots(name, tmp_path, capsys):
    filename, text, needle = PLOT_CASES[name]
    (tmp_path / filename).write_text(text())
    old_png = tmp_path / "accuracy_per_round.png"
    old_png.write_bytes(b"an earlier plot")
    code = main(["plot", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert f"{tmp_path / filename} " in err and needle in err, err
    assert "\n" not in err
    assert old_png.read_bytes() == b"an earlier plot"


def test_an_unforeseen_exception_is_one_line_with_its_traceback_kept(tmp_path, capsys, monkeypatch):
    """Any exception type no handler expects (here a KeyError from a bug in a command) ends
    in one line, exit status 1, its traceback in a log file the line names."""

    def buggy(args):
        raise KeyError("no such\nentry")

    monkeypatch.setattr("fedqdnn.cli._run_plot", buggy)
    code = _main(["plot", str(tmp_path)])
    err = _one_line(capsys)
    assert code == 1, err
    prefix = "fedqdnn: internal error: KeyError: 'no such\\nentry' (traceback in "
    assert err.startswith(prefix) and err.endswith(".log)"), err
    log = tmp_path / "fedqdnn-cache" / "errors" / err[len(prefix) : -1].rsplit("/", 1)[-1]
    assert err[len(prefix) : -1] == str(log)
    text = log.read_text()
    assert text.startswith(f"fedqdnn plot {tmp_path}\nTraceback (most recent call last):")
    assert 'raise KeyError("no such\\nentry")' in text and text.endswith(
        "KeyError: 'no such\\nentry'\n"
    )


def test_a_run_ending_on_a_full_disk_names_the_file_and_the_resume_command(
    tmp_path, capsys, monkeypatch
):
    """The child's one line (what ``write_bytes_atomic`` raised in the ServerApp) reaches the
    user with what survives: the round-1 checkpoint and the command that continues from it."""
    from fedqdnn.federated.supervisor import _Progress

    out = tmp_path / "run"
    failed = f"[Errno 28] cannot write {out}/checkpoint/state.json: No space left on device"

    def full_disk(prepared, lock_fd, progress):
        (out / "checkpoint").mkdir()
        (out / "checkpoint" / "state.json").write_text('{"round": 1}')  # round 2's failed
        return _Progress(rounds_done=1, error=failed, exit_code=1)

    monkeypatch.setattr("fedqdnn.federated.supervisor._supervise", full_disk)
    code = _main(["simulate", "--num-clients", "3", "--rounds", "3", "--out", str(out)])
    err = _one_line(capsys)
    assert code == 1, err
    assert f"cannot write {out}/checkpoint/state.json: No space left on device" in err, err
    assert f"the checkpoint of round 1 is kept, continue with: fedqdnn simulate --resume {out}" in (
        err
    ), err
    assert (out / "checkpoint" / "state.json").read_text() == '{"round": 1}'


def test_a_scenario_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors start UTF-8 files with a BOM; it is not TOML's "Invalid statement"."""
    from simulations.scenarios import load_scenario

    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbfrounds = 3\n")
    assert load_scenario(str(path)).rounds == 3


def test_a_bad_ray_address_from_the_environment_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(OLD)
    code = _main(["simulate", "--out", str(out), "--overwrite"])
    err = _one_line(capsys)
    assert code == 2, err
    assert "RAY_ADDRESS=127.0.0.1:1 (from the environment): cannot reach a Ray cluster" in err
    assert "unset RAY_ADDRESS" in err and "--ray-address" not in err, err
    assert (out / "results.json").read_text() == OLD


def test_plot_of_a_centralized_training_result_says_so(tmp_path, capsys):
    trained = json.dumps({"accuracy_by_bits": {"2": 0.5}, "config": {}, "device": "cpu"})
    (tmp_path / "results.json").write_text(trained)
    code = _main(["plot", str(tmp_path)])
    err = _one_line(capsys)
    assert code == 2 and "is a centralized training result (fedqdnn train)" in err, err
    assert "which has no plots" in err and "another fedqdnn version" not in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    assert (tmp_path / "results.json").read_text() == trained


def test_resume_of_a_folder_in_use_names_resume(tmp_path, capsys):
    args = _run_folder(tmp_path)
    run_dir = tmp_path / "run"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with claim(run_dir, resume=True):
        code = _main(["simulate", *args])
    err = _one_line(capsys)
    assert code == 2, err
    assert f"--resume {run_dir} is in use by another fedqdnn run (pid {os.getpid()})" in err
    assert "--out" not in err and "choose another folder" not in err, err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    assert after == {p: b for p, b in before.items() if p.name != LOCK_FILE}
