"""Training learns at every mode; the CLI writes results.json and rejects bad input."""

import json

import pytest
import torch

from fedqdnn.cli import main
from fedqdnn.data import load_dataset
from fedqdnn.losses import ConsistencyConfig
from fedqdnn.models import build_model
from fedqdnn.training import OptimConfig, evaluate, fit


def test_short_joint_training_learns_every_mode():
    data = load_dataset("synthetic")
    torch.manual_seed(0)
    model = build_model("digits_cnn", (2, 4, 32), data.num_classes, 1)
    before = {b: evaluate(model, data.x_test, data.y_test, b)[0] for b in (2, 4, 32)}
    fit(model, data.x_train, data.y_train, (2, 4, 32), ConsistencyConfig(), OptimConfig(), 8, 0)
    for bits in (2, 4, 32):
        acc = evaluate(model, data.x_test, data.y_test, bits)[0]
        assert acc > 0.85, (bits, acc)  # chance is 0.1
        assert acc > before[bits] + 0.3


def test_training_is_reproducible_from_seed():
    data = load_dataset("synthetic")

    def run():
        torch.manual_seed(1)
        model = build_model("digits_cnn", (2, 32), 10, 1)
        fit(model, data.x_train, data.y_train, (2, 32), ConsistencyConfig(), OptimConfig(), 1, 5)
        return model.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--bits",
            "2,32",
            "--epochs",
            "2",
            "--method",
            "dedicated",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["accuracy_by_bits"]) == {"2", "32"}
    assert results["config"]["method"] == "dedicated"
    assert results["versions"]["torch"] == torch.__version__.split("+")[0]
    assert "32" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--bits", "2,33"], "bit mode 33"),
        (["--bits", "0"], "bit mode 0"),
        (["--dataset", "imagenet"], "'imagenet'"),
        (["--model", "vgg"], "'vgg'"),
        (["--method", "both"], "'both'"),
        (["--teacher", "prev"], "'prev'"),
        (["--lr", "inf"], "lr = 'inf'"),
        (["--lr", "0"], "lr = '0'"),
        (["--bits", "2,x"], "bit mode 'x'"),
        (["--temperature", "nan"], "temperature = 'nan'"),
        (["--epochs", "0"], "epochs = '0'"),
        (["--optimizer", "rmsprop"], "'rmsprop'"),
        (["--device", "cuda:"], "device = 'cuda:' is not allowed"),
    ],
)
def test_cli_bad_flags_give_one_line(argv, needle, capsys, tmp_path):
    try:  # argparse refuses choices itself (SystemExit); values fail validating the job
        code = main(["train", "--out", str(tmp_path / "x"), *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_cli_missing_cifar_files(tmp_path, capsys):
    code = main(
        [
            "train",
            "--dataset",
            "cifar10",
            "--data-root",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path) in err and "\n" not in err
