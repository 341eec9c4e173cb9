"""``python -m nbmlp train|predict``: runs, saves, predicts, explains its options, refuses bad input clearly."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbmlp
from nbmlp import cli

ROOT = Path(__file__).resolve().parents[1]
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def run(*argv):
    out = io.StringIO()
    status = cli.main(list(argv), stream=out)
    return status, out.getvalue()


def test_train_saves_a_model_that_predict_uses(tmp_path):
    model = tmp_path / "iris.npz"
    status, out = run("train", "--data", "iris", "--sizes", "4,5,3", "--epochs", "300", "--lr", "0.05",
                      "--seed", "1", "--save", str(model))
    assert status == 0
    progress = [line for line in out.splitlines() if "epoch" in line and "/300" in line]
    assert len(progress) == cli.PROGRESS_LINES
    assert all("loss" in line and "accuracy" in line and "epochs/s" in line for line in progress)
    assert "test accuracy" in out and f"saved the model to {model}" in out

    net, meta = nbmlp.load(model, return_metadata=True)
    assert net.sizes == (4, 5, 3) and net.activations == ("sigmoid", "sigmoid") and net.loss_name == "half_sse"
    assert list(meta["classes"]) == ["setosa", "versicolor", "virginica"]
    assert len(net.loss_history) == 300

    # predict --data: the printed accuracy is the model's, computed here independently
    X, y = nbmlp.load_iris()
    expected = np.mean(net.forward((X - meta["x_mean"]) / meta["x_scale"]).argmax(axis=1) == y)
    status, out = run("predict", str(model), "--data", "iris", "--limit", "2")
    assert status == 0 and f"accuracy {expected:.2%} on 150 rows" in out
    assert "148 more rows" in out

    status, out = run("predict", str(model), "--values", "5.1,3.5,1.4,0.2", "--values", "7.7,3.0,6.1,2.3",
                      "--proba")
    lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert lines[0].split()[1] == "setosa" and lines[1].split()[1] == "virginica"
    assert "not probabilities" in out  # sigmoid outputs under the note's loss


def test_train_with_mini_batches_adam_cross_entropy_and_a_csv(tmp_path):
    X, y = nbmlp.make_xor(80, noise=0.1, seed=0)
    data = tmp_path / "xor.csv"
    np.savetxt(data, np.column_stack([X, y]), delimiter=",", header="x0,x1,label", comments="")
    model = tmp_path / "xor.npz"
    status, out = run("train", "--data", str(data), "--sizes", "2,8,2", "--activation", "tanh",
                      "--loss", "cross_entropy", "--optimizer", "adam", "--lr", "0.05", "--batch-size", "16",
                      "--epochs", "150", "--no-input-sigmoid", "--test-fraction", "0", "--quiet",
                      "--save", str(model))
    assert status == 0 and "epoch" not in out.replace("epochs,", "")
    assert "train accuracy" in out and "test accuracy" not in out
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, np.column_stack([X, y]), delimiter=",")
    status, out = run("predict", str(model), "--input", str(rows), "--proba", "--limit", "1")
    accuracy = float(out.split("accuracy ")[1].split("%")[0]) / 100
    assert status == 0 and accuracy >= 0.9 and "not probabilities" not in out


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib not installed")
def test_plot_writes_a_png(tmp_path):
    image = tmp_path / "loss.png"
    status, out = run("train", "--epochs", "20", "--quiet", "--plot", str(image))
    assert status == 0 and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real(name))
    with pytest.raises(SystemExit) as exit_info:
        run("train", "--epochs", "5", "--plot", str(tmp_path / "loss.png"))
    assert exit_info.value.code == 2
    assert "pip install 'nbmlp[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "loss.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--sizes", "4,5,2"], "must start with the data's 4 features and end with its 3 classes"),
        (["train", "--sizes", "4,x,3"], "comma-separated layer widths"),
        (["train", "--data", "cifar"], "--data must be one of"),
        (["train", "--epochs", "0"], "positive integer"),
        (["train", "--lr", "-1"], "positive number"),
        (["train", "--loss", "hinge"], "invalid choice"),
        (["train", "--optimizer", "momentum", "--momentum", "2"], "momentum must be in"),
        (["train", "--activation", "relu", "--loss", "cross_entropy", "--output-activation", "relu"],
         "cross_entropy"),
        (["predict", "missing.npz", "--data", "iris"], "no model file"),
        (["predict"], "required"),
    ],
)
def test_usage_errors_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_predict_refuses_a_foreign_file_and_wrong_widths(tmp_path, capsys):
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a model")
    with pytest.raises(SystemExit):
        run("predict", str(bogus), "--data", "iris")
    assert "not a valid nbmlp model file" in capsys.readouterr().err
    model = tmp_path / "m.npz"
    run("train", "--epochs", "2", "--quiet", "--save", str(model))
    with pytest.raises(SystemExit):
        run("predict", str(model), "--values", "1,2,3")
    assert "takes 4 features" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("predict", str(model), "--data", "wine")
    assert "the wine data have 13" in capsys.readouterr().err


def test_diverging_training_exits_1_with_the_reason(capsys):
    status, _ = run("train", "--activation", "identity", "--loss", "half_sse", "--lr", "50", "--epochs", "2000",
                    "--no-input-sigmoid", "--quiet")
    assert status == 1
    assert "non-finite" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"]])
def test_help_reads_well(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m nbmlp")
    if argv[0] == "train":
        for option in ("--data", "--sizes", "--activation", "--loss", "--optimizer", "--epochs", "--batch-size",
                       "--lr", "--seed", "--save", "--plot", "example:"):
            assert option in text
    if argv[0] == "predict":
        assert "--values" in text and "--input" in text and "examples:" in text


def test_python_dash_m_entry_point(tmp_path):
    model = tmp_path / "m.npz"
    result = subprocess.run([sys.executable, "-m", "nbmlp", "train", "--epochs", "50", "--save", str(model)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "saved the model" in result.stdout and model.exists()
    result = subprocess.run([sys.executable, "-m", "nbmlp", "predict", str(model), "--values", "5.1,3.5,1.4,0.2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] in ("setosa", "versicolor", "virginica")
