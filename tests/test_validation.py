"""Bad input gets a clear exception before any kernel runs; odd-but-valid input gives the same answers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import nbmlp
from nbmlp import MLP
from nbmlp.engines import KERNEL_NAMES


def spy_engine(net):
    """Replace the net's engine by one that records every kernel call (and does nothing)."""
    calls = []

    def recorder(name):
        def kernel(*args):
            calls.append(name)
            return 0.0
        return kernel

    net._ops = SimpleNamespace(name="spy", **{k: recorder(k) for k in KERNEL_NAMES})
    return calls


@pytest.fixture
def net():
    return MLP((4, 5, 3), seed=0)


@pytest.fixture
def batch(rng):
    return rng.normal(size=(6, 4)), rng.random((6, 3))


BAD_X = [
    (np.zeros(4), ValueError, r"X must be 2-D with shape \(n, 4\)"),
    (np.zeros((2, 3, 4)), ValueError, r"X must be 2-D"),
    (np.zeros((6, 5)), ValueError, r"X must have 4 columns"),
    (np.zeros((0, 4)), ValueError, r"X is an empty batch"),
    (np.full((6, 4), np.nan), ValueError, r"X contains NaN or infinite"),
    (np.full((6, 4), np.inf), ValueError, r"X contains NaN or infinite"),
    (np.zeros((6, 4), dtype=complex), TypeError, r"X must have a real numeric dtype.*complex"),
    (np.array([["a"] * 4] * 6), TypeError, r"X must have a real numeric dtype"),
    (np.zeros((6, 4), dtype=object), TypeError, r"X must have a real numeric dtype"),
    (np.zeros((6, 4), dtype=bool), TypeError, r"X must have a real numeric dtype"),
    ([[1, 2], [3]], TypeError, r"X must be array-like"),
]


@pytest.mark.parametrize("X, error, message", BAD_X)
def test_bad_X_is_refused_before_any_kernel(net, batch, X, error, message):
    _, T = batch
    T = T[: len(X)] if hasattr(X, "__len__") and 0 < len(X) <= len(T) else T
    calls = spy_engine(net)
    for call in (lambda: net.forward(X), lambda: net.loss(X, T), lambda: net.gradients(X, T),
                 lambda: net.fit(X, T, epochs=1)):
        with pytest.raises(error, match=message):
            call()
    assert calls == []


BAD_T = [
    (np.zeros((6, 2)), ValueError, r"T must have 3 columns"),
    (np.zeros((5, 3)), ValueError, r"T must have n = 6 rows to match X"),
    (np.zeros(18), ValueError, r"T must be 2-D with shape \(n, 3\)"),
    (np.full((6, 3), np.nan), ValueError, r"T contains NaN"),
    (np.zeros((6, 3), dtype=complex), TypeError, r"T must have a real numeric dtype"),
]


@pytest.mark.parametrize("T, error, message", BAD_T)
def test_bad_T_is_refused_before_any_kernel(net, batch, T, error, message):
    X, _ = batch
    calls = spy_engine(net)
    for call in (lambda: net.loss(X, T), lambda: net.gradients(X, T), lambda: net.fit(X, T, epochs=1)):
        with pytest.raises(error, match=message):
            call()
    assert calls == []


def test_values_too_large_for_float32_are_refused(batch):
    X, T = batch
    net = MLP((4, 5, 3), dtype="float32")
    with pytest.raises(ValueError, match="too large to represent in float32"):
        net.forward(np.full((2, 4), 1e300))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"sizes": (4,)}, ValueError, "at least an input and an output"),
    ({"sizes": (4, 0, 3)}, ValueError, ">= 1"),
    ({"sizes": (4, -5, 3)}, ValueError, ">= 1"),
    ({"sizes": (4, 5.0, 3)}, TypeError, "integers"),
    ({"sizes": "453"}, TypeError, "sequence of positive integers"),
    ({"sizes": 4}, TypeError, "sequence of positive integers"),
    ({"engine": "fortran"}, ValueError, "engine must be one of"),
    ({"dtype": "float16"}, TypeError, "dtype must be one of"),
    ({"dtype": "int64"}, TypeError, "dtype must be one of"),
    ({"dtype": "not-a-dtype"}, TypeError, "dtype must be one of"),
    ({"activation": "swish"}, ValueError, "activation of layer 1 must be one of"),
    ({"activation": ["sigmoid"]}, ValueError, "one name per layer"),
    ({"loss": "hinge"}, ValueError, "loss must be one of"),
    ({"loss": "cross_entropy", "output_activation": "sigmoid"}, ValueError, "needs output_activation='softmax'"),
    ({"output_activation": "softmax"}, ValueError, "softmax is only available"),
    ({"input_sigmoid": "yes"}, TypeError, "input_sigmoid must be True or False"),
    ({"seed": 1.5}, TypeError, "seed must be an integer"),
])
def test_invalid_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        MLP(**kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"epochs": 0}, ValueError, "epochs must be >= 1"),
    ({"epochs": 2.5}, TypeError, "epochs must be a positive integer"),
    ({"epochs": True}, TypeError, "epochs must be a positive integer"),
    ({"lr": 0.0}, ValueError, "lr must be finite and > 0"),
    ({"lr": -0.1}, ValueError, "lr must be finite and > 0"),
    ({"lr": float("nan")}, ValueError, "lr must be finite and > 0"),
    ({"lr": "fast"}, TypeError, "lr must be a positive real number"),
])
def test_invalid_fit_arguments_refused_before_any_kernel(net, batch, kwargs, error, message):
    X, T = batch
    calls = spy_engine(net)
    with pytest.raises(error, match=message):
        net.fit(X, T, **{"epochs": 1, "lr": 0.1, **kwargs})
    assert calls == []


@pytest.mark.parametrize("engine", nbmlp.ENGINES)
def test_odd_layouts_and_dtypes_give_the_same_answers(engine, rng):
    net = MLP((4, 5, 3), seed=0, engine=engine)
    X = rng.integers(-3, 4, size=(8, 4))
    T = rng.random((8, 3))
    g = net.gradients(X.astype(np.float64), T)
    big = np.zeros((16, 12))
    big[::2, ::3] = X
    variants = {
        "int64": X,
        "int8": X.astype(np.int8),
        "float32 (exact small integers)": X.astype(np.float32),
        "fortran order": np.asfortranarray(X.astype(np.float64)),
        "strided view": big[::2, ::3],
        "nested list": X.tolist(),
    }
    for name, Xv in variants.items():
        gv = net.gradients(Xv, np.asfortranarray(T))
        for a, b in zip(gv.W + gv.b + gv.dL_dz, g.W + g.b + g.dL_dz, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    unsigned = net.gradients((X + 3).astype(np.uint16), T)
    shifted = net.gradients((X + 3).astype(np.float64), T)
    np.testing.assert_array_equal(unsigned.W[0], shifted.W[0])


@pytest.mark.parametrize("engine", nbmlp.ENGINES)
def test_caller_arrays_are_never_modified(engine, rng):
    net = MLP((4, 5, 3), seed=0, engine=engine)
    X = rng.normal(size=(10, 4))
    T = rng.random((10, 3))
    X_f32 = X.astype(np.float32)
    copies = [a.copy() for a in (X, T, X_f32)]
    net.forward(X)
    net.loss(X, T)
    g = net.gradients(X, T)
    g.dL_dz[0][...] = 123.0  # writing into results must not reach the caller's X either
    g.z[0][...] = 123.0
    net.fit(X, T, epochs=3, lr=0.1)
    net.forward(X_f32)
    for before, after in zip(copies, (X, T, X_f32), strict=True):
        np.testing.assert_array_equal(before, after)


def test_float32_net_accepts_float64_input_and_computes_in_float32(rng):
    net = MLP((4, 5, 3), seed=0, dtype="float32")
    X = rng.normal(size=(5, 4))
    out = net.forward(X)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, net.forward(X.astype(np.float32)))
