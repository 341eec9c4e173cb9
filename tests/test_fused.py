"""nbmlp.fused: the compiled full-batch loop against MLP.fit's Python loop over the literal kernels.

Checked on loss trajectories and final parameters, for every activation and
loss, several depths, layers narrower and wider than the register tile, n = 1
and width-1 layers; and what a network's first run compiles (only its variant's
branches).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import rel_err

import nbmlp
from nbmlp import MLP, fused
from nbmlp.training import Trainer

ROOT = Path(__file__).resolve().parents[1]

#: Largest accepted normwise relative difference of the loss trajectory and the
#: final parameters after EPOCHS epochs, per dtype.  float64: the two paths add
#: the same terms, some in another order and with fused multiply-adds, so they
#: start ~1e-16 apart and gradient descent on these smooth losses does not
#: amplify that beyond 1e-10.  float32: the tuned loops accumulate in float32,
#: the literal ones in float64.
TRAJECTORY_TOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 1e-4}
EPOCHS = 50

#: name -> MLP keyword arguments
NETWORKS = {
    "note 4-5-3": dict(sizes=(4, 5, 3)),
    "tanh 3 layers": dict(sizes=(4, 7, 6, 3), activation=["tanh", "tanh", "sigmoid"]),
    "softmax + cross-entropy": dict(sizes=(4, 9, 3), loss="cross_entropy"),
    "mse, identity, no input sigmoid": dict(sizes=(4, 8, 2), loss="mse", activation="identity",
                                            input_sigmoid=False),
    "wide layers (register tile)": dict(sizes=(20, 17, 9, 12), activation=["sigmoid", "tanh", "sigmoid"]),
    "wide, narrow output (dL/dW transposed)": dict(sizes=(18, 33, 3), loss="cross_entropy"),
    "width-1 layers": dict(sizes=(1, 1, 3, 1)),
    "relu hidden, tanh output": dict(sizes=(3, 6, 2), activation=["relu", "tanh"], loss="mse"),
    "identity hidden, relu output": dict(sizes=(3, 5, 4, 2), activation=["tanh", "identity", "relu"]),
}


def _data(rng, sizes, n, dtype, loss="half_sse"):
    X = rng.normal(size=(n, sizes[0])).astype(dtype)
    if loss == "cross_entropy":
        T = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n)]
    else:
        T = rng.random((n, sizes[-1])).astype(dtype)
    return X, T


def _pair(config, dtype, seed=5):
    kwargs = {k: v for k, v in config.items() if k != "sizes"}
    return (MLP(config["sizes"], seed=seed, dtype=dtype, engine="loops", **kwargs),
            MLP(config["sizes"], seed=seed, dtype=dtype, engine="loops", **kwargs))


def _assert_same_training(expected_net, net, losses, dtype, what):
    tol = TRAJECTORY_TOL[np.dtype(dtype)]
    err = rel_err(losses, expected_net.loss_history)
    assert err <= tol, f"{what}: loss trajectory differs by {err:.2e}"
    for p, q in zip(net.W + net.b, expected_net.W + expected_net.b, strict=True):
        assert p.dtype == np.dtype(dtype)
        err = rel_err(p, q)
        assert err <= tol, f"{what}: parameters differ by {err:.2e}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("n", [1, 13, 32, 150])
def test_fit_full_batch_follows_mlp_fit(name, n, dtype, rng):
    config = NETWORKS[name]
    expected_net, net = _pair(config, dtype)
    X, T = _data(rng, config["sizes"], n, dtype, config.get("loss", "half_sse"))
    lr = 0.5 / n if config.get("loss", "half_sse") == "half_sse" else 0.5
    expected_net.fit(X, T, epochs=EPOCHS, lr=lr, compiled=False)
    losses = fused.fit_full_batch(net, X, T, EPOCHS, lr)
    assert losses.shape == (EPOCHS,) and losses.dtype == np.float64
    _assert_same_training(expected_net, net, losses, dtype, f"{name}, n={n}")


def test_relu_network_follows_mlp_fit(rng):
    config = dict(sizes=(5, 12, 10, 2), activation=["relu", "relu", "identity"], loss="mse")
    expected_net, net = _pair(config, "float64")
    X, T = _data(rng, config["sizes"], 40, "float64")
    expected_net.fit(X, T, epochs=10, lr=0.05, compiled=False)
    _assert_same_training(expected_net, net, fused.fit_full_batch(net, X, T, 10, 0.05), "float64", "relu")


def test_iris_main_job_network_matches_literal_loops():
    X, y = nbmlp.load_iris()
    T = nbmlp.one_hot(y, 3)
    expected_net, net = _pair(dict(sizes=(4, 5, 3)), "float64", seed=0)
    expected_net.fit(X, T, epochs=300, lr=0.01, compiled=False)
    losses = fused.fit_full_batch(net, X, T, 300, 0.01)
    _assert_same_training(expected_net, net, losses, "float64", "Iris 4-5-3, 300 epochs")


def test_callback_sees_every_epoch_and_the_same_run(rng):
    config = NETWORKS["note 4-5-3"]
    a, b = _pair(config, "float64")
    X, T = _data(rng, config["sizes"], 30, "float64")
    seen = []

    def callback(epoch, loss):
        seen.append((epoch, loss, b.W[0].copy()))

    plain = fused.fit_full_batch(a, X, T, 6, 0.05)
    called = fused.fit_full_batch(b, X, T, 6, 0.05, callback=callback)
    np.testing.assert_array_equal(plain, called)
    assert [e for e, _, _ in seen] == list(range(1, 7))
    assert [loss for _, loss, _ in seen] == called.tolist()
    np.testing.assert_array_equal(seen[-1][2], a.W[0])  # the callback sees the updated parameters
    for p, q in zip(a.W + a.b, b.W + b.b, strict=True):
        np.testing.assert_array_equal(p, q)


def test_non_finite_restores_last_finite_parameters(rng):
    X = rng.normal(scale=30.0, size=(6, 3))
    T = rng.normal(size=(6, 2))
    net = MLP((3, 4, 2), seed=1, activation="identity", input_sigmoid=False)
    with pytest.raises(FloatingPointError, match="non-finite") as info:
        fused.fit_full_batch(net, X, T, 5000, 5.0)
    losses = info.value.losses
    assert losses.size >= 1 and np.isfinite(losses).all()
    assert net.loss_history == losses.tolist()
    for p in net.W + net.b:
        assert np.isfinite(p).all()
    assert net.loss(X, T) == pytest.approx(losses[-1], rel=1e-12)


def test_non_finite_in_the_first_epoch_leaves_parameters_alone(rng):
    X = np.full((4, 3), np.nan)
    T = rng.normal(size=(4, 2))
    net = MLP((3, 4, 2), seed=1, input_sigmoid=False)
    before = [p.copy() for p in net.W + net.b]
    with pytest.raises(FloatingPointError):
        fused.fit_full_batch(net, X, T, 3, 0.1)
    for p, q in zip(net.W + net.b, before, strict=True):
        np.testing.assert_array_equal(p, q)
    assert net.loss_history == []


def test_supports_every_network_of_nbmlp():
    assert fused.supports(MLP((4, 5, 3)))
    assert fused.supports(MLP((4, 5, 3), loss="cross_entropy", activation="relu", dtype="float32"))
    assert fused.supports(MLP((2, 3, 3, 1), activation=["tanh", "relu", "identity"], loss="mse"))


def test_mlp_fit_runs_the_compiled_loop(rng):
    X, T = _data(rng, (4, 5, 3), 20, "float64")
    trainer = Trainer(MLP((4, 5, 3), seed=0), lr=0.1)
    trainer.run(X, T, 5)
    assert trainer.used_compiled_loop
    assert len(trainer.net.loss_history) == 5


def test_variant_says_what_a_network_compiles():
    note = fused.variant(MLP((4, 5, 3)))
    assert note == fused.Variant(("sigmoid",), "sigmoid", wide=False, narrow=True)
    assert str(note) == "sigmoid (sigmoid output), narrow layers"
    mixed = fused.variant(MLP((18, 33, 3), loss="cross_entropy"))
    assert mixed == fused.Variant(("sigmoid", "softmax"), "softmax", wide=True, narrow=True)
    assert str(mixed) == "sigmoid, softmax (softmax output), narrow and wide layers"
    assert fused.variant(MLP((20, 17, 9), activation=["tanh", "sigmoid"])).narrow is False
    # one compiled loop per variant, whatever the sizes and the loss of the squared family
    assert fused.compiled_loop(note) is fused.compiled_loop(fused.variant(MLP((2, 7, 6, 1), loss="mse")))


#: A fresh process with an empty Numba cache trains the note's network and prints what compiled.
COLD_FIT = r"""
from numba.core import event

compiled = []


class Listener(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)


event.register("numba:compile", Listener())
import nbmlp

X, y = nbmlp.load_iris()
nbmlp.MLP((4, 5, 3), seed=0).fit(X, nbmlp.one_hot(y, 3), epochs=3, lr=0.01)
print("\n".join(compiled))
"""


@pytest.mark.slow
def test_a_first_fit_compiles_only_its_variants_branches(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("NBMLP_QUIET", None)
    result = subprocess.run([sys.executable, "-c", COLD_FIT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900, check=True)
    compiled = result.stdout.split()
    assert "compiled_loop.<locals>.train" in compiled and "_sigmoid_layer" in compiled
    for piece in ("_product", "_transpose_into", "_combine_layer", "_bias_sigmoid", "_bias_tanh", "_bias_relu",
                  "_bias_softmax", "_bias_identity", "_cross_entropy", "_activation_backward",
                  "_weight_gradient_wide"):
        assert piece not in compiled, f"{piece} compiled for the note's sigmoid network"
    assert compiled.count("_combine_rows") == 1  # forward and backward share one specialization
    # the notice names what compiles (it appears when compiling takes over a second, as it does here)
    assert ("nbmlp: compiling the training loop for float64, sigmoid (sigmoid output), narrow layers, full batch"
            in result.stderr)
