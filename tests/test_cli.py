"""``python -m nbmlp train|predict``: runs, saves, predicts, explains its options, refuses bad input clearly."""

from __future__ import annotations

import importlib.util
import io
import signal
import subprocess
import sys
import threading
import time
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
    assert 2 <= len(progress) <= cli.PROGRESS_LINES and "epoch 300/300" in progress[-1]
    assert all("loss" in line and "accuracy" in line for line in progress)
    assert "epochs/s" in progress[-1] and "ETA" in progress[-1]
    assert "test accuracy" in out and f"saved the model to {model}" in out

    net = nbmlp.load(model)
    assert net.sizes == (4, 5, 3) and net.activations == ("sigmoid", "sigmoid") and net.loss_name == "half_sse"
    assert list(net.classes) == ["setosa", "versicolor", "virginica"]
    assert len(net.loss_history) == 300

    # the loaded model predicts on raw inputs: its feature scaling travelled with it
    X, y = nbmlp.load_iris()
    scaled = (X - net.preprocessing["mean"]) / net.preprocessing["scale"]
    np.testing.assert_array_equal(net.predict(X), net.classes[net.forward(scaled).argmax(axis=1)])
    expected = np.mean(net.predict(X) == net.classes[y])
    status, out = run("predict", str(model), "--data", "iris", "--limit", "2")
    assert status == 0 and f"accuracy {expected:.2%} on 150 rows" in out
    assert "148 more rows" in out

    status, out = run("predict", str(model), "--values", "5.1,3.5,1.4,0.2", "--values", "7.7,3.0,6.1,2.3",
                      "--proba")
    lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert lines[0].split()[1] == "setosa" and lines[1].split()[1] == "virginica"
    assert "setosa=" in lines[0]


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
    assert status == 0 and accuracy >= 0.9 and "0=" in out


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
        (["train", "--lr", "nan"], "finite number"),
        (["train", "--loss", "hinge"], "invalid choice"),
        (["train", "--optimizer", "momentum", "--momentum", "2"], "momentum must be in"),
        (["train", "--activation", "relu", "--loss", "cross_entropy", "--output-activation", "relu"],
         "cross_entropy"),
        (["train", "--test-fraction", "0.99"], "--test-fraction 0.99"),
        (["train", "--seed", "-1"], "--seed: expected an integer >= 0"),
        (["train", "--sizes", "4,1000000000,3"], "would need about"),
        (["train", "--save", "/no/such/dir/m.npz"], "does not exist"),
        (["train", "--epochz", "3"], "did you mean '--epochs'?"),
        (["trian"], "did you mean 'train'?"),
        (["predict", "missing.npz", "--data", "iris"], "no model file"),
        (["predict"], "required"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert "trained in" not in captured.out  # refused before training


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


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"], ["bench", "--help"],
                                  ["explain", "--help"], ["note", "--help"]])
def test_help_reads_well(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m nbmlp")
    assert "(default: None)" not in text and "(default: True)" not in text and "(default: False)" not in text
    if argv[0] == "--help":
        assert "{note,train,predict,explain,bench}" in text
    if argv[0] == "train":
        for option in ("--data", "--sizes", "--activation", "--loss", "--optimizer", "--epochs", "--batch-size",
                       "--lr", "--seed", "--save", "--plot", "--label", "examples:"):
            assert option in text
        flat = " ".join(text.split())
        assert "(default: FEATURES,16,CLASSES)" in flat and flat.count("(default:") == flat.count("default:")
        assert "feed h0 = X (default: the note's h0 = sigma(X))" in flat
        for name in nbmlp.ACTIVATIONS:
            assert name in text
    if argv[0] == "predict":
        assert "--values" in text and "--input" in text and "examples:" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run("--version")
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"nbmlp {nbmlp.__version__}"


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return str(path)


def _iris_rows(delimiter, header=True, label_first=False):
    X, y = nbmlp.load_iris()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    lines = []
    if header:
        cols = ["sepal length", "sepal width", "petal length", "petal width"]
        lines.append(delimiter.join(["species", *cols] if label_first else [*cols, "species"]))
    for row, name in zip(X, names):
        cells = [f"{v:g}" for v in row]
        lines.append(delimiter.join([name, *cells] if label_first else [*cells, name]))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_with_header_delimiters_and_string_labels(tmp_path, delimiter):
    data = _write(tmp_path / "iris.csv", _iris_rows(delimiter, label_first=True))
    model = tmp_path / "m.npz"
    status, out = run("train", "--data", data, "--label", "species", "--epochs", "200", "--quiet",
                      "--loss", "cross_entropy", "--optimizer", "adam", "--save", str(model))
    assert status == 0 and "4 features, 3 classes" in out
    net = nbmlp.load(model)
    assert list(net.classes) == ["setosa", "versicolor", "virginica"]
    status, out = run("predict", str(model), "--input", data, "--label", "1")
    assert status == 0 and float(out.split("accuracy ")[1].split("%")[0]) > 80


@pytest.mark.parametrize("content, message", [
    ("a,b,label\n1,2,x\n3,nan,y\n", "line 3, column 2 ('b'): 'nan' is not a finite number"),
    ("a,b,label\n1,2,x\n3,four,y\n", "line 3, column 2 ('b'): 'four' is not a number"),
    ("1,2,x\n3,4,y\n5,6\n", "line 3: 2 fields where line 1 has 3"),
    ("1,2,x\n3,,y\n", "line 2, column 2: '' is not a number"),
    ("a,b,label\n", "only a header row"),
])
def test_bad_csv_cells_are_named_by_line_and_column(tmp_path, capsys, content, message):
    data = _write(tmp_path / "bad.csv", content)
    with pytest.raises(SystemExit) as exit_info:
        run("train", "--data", data, "--epochs", "2")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_csv_that_is_not_utf8(tmp_path, capsys):
    data = _write(tmp_path / "latin.csv", "a,b,label\n1,2,caf\u00e9\n3,4,x\n", encoding="latin-1")
    with pytest.raises(SystemExit):
        run("train", "--data", data, "--epochs", "2")
    assert "not UTF-8 text (byte 0xe9 on line 2)" in capsys.readouterr().err


def test_label_column_by_name_must_exist(tmp_path, capsys):
    data = _write(tmp_path / "iris.csv", _iris_rows(","))
    with pytest.raises(SystemExit):
        run("train", "--data", data, "--label", "kind")
    assert "has no column 'kind'" in capsys.readouterr().err


def test_predict_refuses_nan_values_and_unknown_labels(tmp_path, capsys):
    model = tmp_path / "m.npz"
    run("train", "--epochs", "2", "--quiet", "--save", str(model))
    with pytest.raises(SystemExit):
        run("predict", str(model), "--values", "nan,1,2,3")
    assert "value 1 ('nan') is not a finite number" in capsys.readouterr().err
    rows = _write(tmp_path / "rows.csv", "5.1,3.5,1.4,0.2,setosa\n6.7,3.0,5.2,2.3,1e30\n")
    with pytest.raises(SystemExit):
        run("predict", str(model), "--input", rows)
    assert "sample 2: the label '1e30' is not one of the model's classes" in capsys.readouterr().err


@pytest.mark.parametrize("entries", [
    {},
    {"nbmlp_format": "nbmlp.MLP", "format_version": 1, "sizes": np.array([4, -3])},
    {"nbmlp_format": "nbmlp.MLP", "format_version": 99},
    {"nbmlp_format": "something else"},
])
def test_model_files_with_bad_metadata_are_one_line_errors(tmp_path, capsys, entries):
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in entries.items()})
    with pytest.raises(SystemExit) as exit_info:
        run("predict", str(bad), "--values", "1,2,3,4")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "bad.npz" in err


def test_full_disk_at_save_keeps_the_model_in_a_temporary_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "m.npz"
    real_save = nbmlp.MLP.save

    def save(net, path, **kw):
        if str(path) == str(target):
            raise OSError(28, "No space left on device")
        return real_save(net, path, **kw)

    monkeypatch.setattr(nbmlp.MLP, "save", save)
    status, _ = run("train", "--epochs", "3", "--quiet", "--save", str(target))
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    fallback = err.split("the model was saved to ")[1].split(" instead")[0]
    try:
        assert len(nbmlp.load(fallback).loss_history) == 3
    finally:
        Path(fallback).unlink()


@pytest.mark.parametrize("quiet", [[], ["--quiet"]], ids=["progress", "quiet"])
def test_ctrl_c_during_training_saves_the_finished_epochs_and_exits_130(tmp_path, quiet):
    """SIGINT to a long run: one line on stderr, the model saved with the epochs done, status 130.

    With --quiet there is no progress callback, and full-batch SGD runs in the compiled loop: this
    relies on training returning to Python often enough for the signal (nbmlp.training).
    """
    model = tmp_path / "m.npz"
    proc = subprocess.Popen([sys.executable, "-m", "nbmlp", "train", "--epochs", "100000000", *quiet,
                             "--save", str(model)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    err_lines = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    try:
        assert proc.stdout.readline().startswith("nbmlp train:")  # printed just before training starts
        reader.start()
        deadline = time.monotonic() + 300  # a cold cache compiles first: wait for its "compiled ..." notice
        time.sleep(3.0)
        while (any("nbmlp: compiling" in line for line in err_lines)
               and not any("nbmlp: compiled" in line for line in err_lines) and time.monotonic() < deadline):
            time.sleep(0.2)
        time.sleep(1.5)  # some epochs
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err_lines
    # Compile notices ("nbmlp: compiling ...", "nbmlp: compiled ...") may come first; then exactly one line.
    err = [line for line in err_lines if not line.startswith(("nbmlp: compil", "nbmlp: still compiling"))]
    assert not any("Traceback" in line for line in err_lines) and len(err) == 1, err_lines
    assert "interrupted at epoch" in err[0] and "saved the model" in err[0], err
    done = int(err[0].split("interrupted at epoch ")[1].split()[0])
    assert done >= 1 and len(nbmlp.load(model).loss_history) == done


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


def test_progress_rate_and_eta_leave_compiling_out(monkeypatch):
    """A fake clock: 5 s pass before the first epoch ends (compiling), then 0.01 s per epoch."""
    clock = {"now": 0.0}
    monkeypatch.setattr(cli.time, "perf_counter", lambda: clock["now"])
    out = io.StringIO()
    progress = cli.Progress(1000, out, lambda: 0.5)
    clock["now"] = 5.0
    for epoch in range(1, 1001):
        progress(epoch, 1.0)
        clock["now"] += 0.01
    lines = out.getvalue().splitlines()
    assert len(lines) == cli.PROGRESS_LINES and "epoch 1000/1000" in lines[-1]
    assert "100 epochs/s" in lines[0] and "ETA      9 s" in lines[0]  # at epoch 100: 900 left at 100/s
    assert all("100 epochs/s" in line for line in lines)
