"""Save/load (.npz, no pickle) and pickling: exact round trips, clear errors for bad files."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

import nbmlp
from nbmlp import load
from nbmlp.serialization import FORMAT_VERSION

ARCHITECTURES = [
    dict(sizes=(4, 5, 3)),  # the note's network
    dict(sizes=(2, 7, 6, 1), activation=["relu", "tanh", "identity"], loss="mse", input_sigmoid=False),
    dict(sizes=(3, 4, 2), activation="tanh", loss="cross_entropy", dtype="float32"),
    dict(sizes=(1, 1), activation="identity", loss="half_sse", engine="numpy"),
]


def _trained(rng, **arch):
    net = nbmlp.MLP(seed=3, **arch)
    d0, dL = net.sizes[0], net.sizes[-1]
    X = rng.normal(size=(9, d0))
    T = nbmlp.one_hot(rng.integers(0, dL, 9), dL) if net.loss_name == "cross_entropy" else rng.random((9, dL))
    net.fit(X, T, epochs=3, lr=0.1)
    return net, X


def _same_net(a, b, X):
    assert (a.sizes, a.activations, a.loss_name, a.input_sigmoid, a.dtype, a.engine) == \
           (b.sizes, b.activations, b.loss_name, b.input_sigmoid, b.dtype, b.engine)
    for p, q in zip(a.W + a.b, b.W + b.b, strict=True):
        assert p.dtype == q.dtype and p.flags.c_contiguous and q.flags.c_contiguous
        np.testing.assert_array_equal(p, q)
    assert a.loss_history == b.loss_history
    np.testing.assert_array_equal(a.forward(X), b.forward(X))


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: str(a["sizes"]))
def test_save_load_round_trip_is_exact(arch, tmp_path, rng):
    net, X = _trained(rng, **arch)
    path = tmp_path / "model.npz"
    net.save(path)
    _same_net(net, nbmlp.load(path), X)
    # no pickle inside: numpy can read every entry with allow_pickle=False
    with np.load(path, allow_pickle=False) as f:
        assert int(f["format_version"]) == FORMAT_VERSION
        assert tuple(f["sizes"]) == net.sizes
        assert list(f["activations"]) == list(net.activations)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: str(a["sizes"]))
def test_pickle_round_trip_is_exact(arch, rng):
    net, X = _trained(rng, **arch)
    clone = pickle.loads(pickle.dumps(net))
    _same_net(net, clone, X)
    clone.fit(X, clone.forward(X), epochs=1, lr=0.1)  # the unpickled net trains (its engine is back)


def test_the_file_name_is_used_as_given_and_metadata_round_trips(tmp_path, rng):
    net, X = _trained(rng, sizes=(4, 5, 3))
    path = tmp_path / "model.weights"
    net.save(str(path), metadata={"classes": np.array(["a", "b", "c"]), "x_mean": np.arange(4.0), "note": "hi",
                                   "epochs": 3})
    assert path.exists() and not (tmp_path / "model.weights.npz").exists()
    loaded, meta = load(path, return_metadata=True)
    _same_net(net, loaded, X)
    assert list(meta["classes"]) == ["a", "b", "c"] and meta["note"] == "hi" and meta["epochs"] == 3
    np.testing.assert_array_equal(meta["x_mean"], np.arange(4.0))


def test_engine_can_be_overridden_on_load(tmp_path, rng):
    net, X = _trained(rng, sizes=(4, 5, 3))
    net.save(tmp_path / "m.npz")
    assert load(tmp_path / "m.npz", engine="numpy").engine == "numpy"


def _corrupt_variants(good: bytes, tmp_path, rng):
    """(description, path) of files that must be refused."""
    cases = []

    def write(name, content):
        p = tmp_path / name
        p.write_bytes(content)
        cases.append((name, p))

    write("empty.npz", b"")
    write("text.npz", b"hello, I am not a model\n")
    write("half.npz", good[: len(good) // 2])
    write("tail_cut.npz", good[:-20])
    np.save(tmp_path / "single.npy", np.arange(5.0))
    cases.append(("single.npy", tmp_path / "single.npy"))
    np.savez(tmp_path / "foreign.npz", a=np.arange(3), b=np.ones(2))
    cases.append(("foreign.npz", tmp_path / "foreign.npz"))
    return cases


def test_empty_truncated_or_foreign_files_raise_value_error(tmp_path, rng):
    net, _ = _trained(rng, sizes=(4, 5, 3))
    net.save(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    for name, path in _corrupt_variants(good, tmp_path, rng):
        with pytest.raises(ValueError, match="not a valid nbmlp model file"):
            load(path)
        assert name  # each case was exercised


def _rewrite(src, dst, change):
    """Copy the .npz at src to dst with ``change(dict)`` applied to its arrays."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    with open(dst, "wb") as out:
        np.savez(out, **arrays)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("W2"), "W2 is missing"),
        (lambda a: a.update(W1=np.zeros((4, 6))), "W1 has shape"),
        (lambda a: a.update(b1=a["b1"].astype(np.float32)), "b1 has shape .* dtype float32"),
        (lambda a: a.update(sizes=np.array([4, 5])), "activations"),
        (lambda a: a.update(format_version=np.array(FORMAT_VERSION + 1)), "format version"),
        (lambda a: a.update(nbmlp_format=np.array("something.else")), "format marker"),
        (lambda a: a.update(activations=np.array(["sigmoid", "swish"])), "architecture is not valid"),
        (lambda a: a.update(loss=np.array("hinge")), "architecture is not valid"),
        (lambda a: a.update(W1=np.full((4, 5), np.nan)), "NaN"),
        (lambda a: a.update(W3=np.zeros((3, 3))), "unexpected entries"),
        (lambda a: a.pop("loss"), "'loss' is missing"),
    ],
)
def test_inconsistent_contents_raise_value_error(change, match, tmp_path, rng):
    net, _ = _trained(rng, sizes=(4, 5, 3))
    net.save(tmp_path / "good.npz")
    _rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match=match):
        load(tmp_path / "bad.npz")


def test_a_damaged_member_raises_value_error(tmp_path, rng):
    net, _ = _trained(rng, sizes=(4, 5, 3))
    path = tmp_path / "m.npz"
    net.save(path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("W1.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.file_size - 8: start + info.file_size] = b"\xff" * 8  # flip the last 8 data bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="not a valid nbmlp model file"):
        load(path)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")
    with pytest.raises(TypeError, match="path"):
        load(3)
    net = nbmlp.MLP((2, 2), seed=0)
    with pytest.raises(TypeError, match="metadata"):
        net.save(tmp_path / "x.npz", metadata={"obj": [object()]})
    with pytest.raises(TypeError, match="metadata"):
        net.save(tmp_path / "x.npz", metadata=["not", "a", "dict"])


def test_format_2_state_round_trips_in_process(tmp_path):
    net = nbmlp.MLP((3, 4, 2), seed=0)
    net.loss_history = np.array([3.0, 2.0])  # a history kept as an array is stored as floats too
    net.validation_loss_history, net.validation_score_history = [2.5], [0.5]
    net.optimizer_state = {"adam.m.W1": np.zeros(12), "adam.v.W1": np.ones((3, 4)), "adam.t": 4, "name": "adam"}
    net.preprocessing = {"mean": np.zeros(3), "scale": np.full(3, 2.0)}
    net.classes = np.array([10, 20])
    net.save(tmp_path / "m.npz")
    back = nbmlp.load(tmp_path / "m.npz", engine="numpy")
    assert back.engine == "numpy" and back.loss_history == [3.0, 2.0]
    assert (back.validation_loss_history, back.validation_score_history) == ([2.5], [0.5])
    assert back.optimizer_state["adam.t"] == 4 and back.optimizer_state["name"] == "adam"
    np.testing.assert_array_equal(back.optimizer_state["adam.m.W1"], np.zeros(12))  # flat state is accepted
    np.testing.assert_array_equal(back.preprocessing["scale"], np.full(3, 2.0))
    assert back.classes.tolist() == [10, 20]


@pytest.mark.parametrize("state, error, match", [
    ({"adam.m.W1": np.zeros((4, 3))}, TypeError, r"optimizer_state\['adam.m.W1'\] has shape \(4, 3\)"),
    ({"buffers": [np.zeros(2), np.zeros(3)]}, TypeError, r"net.optimizer_state\['buffers'\] must be a number"),
    ({"callback": print}, TypeError, r"net.optimizer_state\['callback'\] .* got dtype object"),
    ({"bad/key": 1}, TypeError, r"net.optimizer_state keys must be strings of letters"),
    ({"big": np.zeros(1000)}, TypeError, r"holds 1000 values, more than the net's 26 parameters"),
])
def test_optimizer_state_that_cannot_be_stored_is_refused_before_writing(state, error, match, tmp_path):
    net = nbmlp.MLP((3, 4, 2), seed=0)
    net.optimizer_state = state
    with pytest.raises(error, match=match):
        net.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_save_keeps_the_file_mode_and_writes_through_a_symlink(tmp_path):
    import os

    net = nbmlp.MLP((3, 4, 2), seed=0)
    target = tmp_path / "real.npz"
    net.save(target)
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    target.chmod(0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    nbmlp.MLP((3, 4, 2), seed=5).save(link)
    assert link.is_symlink() and target.stat().st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(nbmlp.load(target).W[0], nbmlp.MLP((3, 4, 2), seed=5).W[0])


def test_the_file_module_does_not_import_the_network_module():
    import ast
    from pathlib import Path

    import nbmlp.serialization as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any("network" in (name or "") for name in imported), imported


def test_the_longest_keys_round_trip(tmp_path):
    net = nbmlp.MLP((2, 2), seed=0)
    net.optimizer_state = {"k" * 128: 1}
    net.save(tmp_path / "m.npz", metadata={"m" * 128: "x"})
    back, meta = nbmlp.load(tmp_path / "m.npz", return_metadata=True)
    assert back.optimizer_state == {"k" * 128: 1} and meta == {"m" * 128: "x"}


@pytest.mark.parametrize("optimizer", ["adam", "nesterov"])
def test_a_saved_and_loaded_model_resumes_training_exactly(optimizer, tmp_path):
    """fit 6 epochs, save, load, fit 6 more == fit 12 in one go (optimizer state, shuffling, histories)."""
    X, y = nbmlp.load_iris()
    T = nbmlp.one_hot(y)
    options = dict(lr=0.01, optimizer=optimizer, batch_size=32, seed=3)
    whole = nbmlp.MLP((4, 6, 3), seed=0, activation="tanh", loss="cross_entropy")
    whole.fit(X, T, epochs=12, **options)
    first = nbmlp.MLP((4, 6, 3), seed=0, activation="tanh", loss="cross_entropy")
    first.fit(X, T, epochs=6, **options)
    first.save(tmp_path / "half.npz")
    resumed = nbmlp.load(tmp_path / "half.npz")
    resumed.fit(X, T, epochs=6, **options)
    for got, want in zip(resumed.W + resumed.b, whole.W + whole.b, strict=True):
        np.testing.assert_array_equal(got, want)
    assert resumed.loss_history == whole.loss_history
