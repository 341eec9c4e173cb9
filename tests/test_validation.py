"""Bad input gets a clear exception before any kernel runs; odd-but-valid input gives the same answers."""

from __future__ import annotations

import warnings
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
    ({"seed": 1.5}, TypeError, "seed must be a non-negative integer"),
    ({"seed": -1}, ValueError, "seed must be a non-negative integer"),
    ({"dtype": None}, TypeError, "dtype must be one of .* got None"),
    ({"sizes": (10**6, 10**6)}, ValueError,
     r"sizes=\(1000000, 1000000\) needs 1,000,001,000,000 parameters = 7.28 TiB in float64; the cap is"),
    ({"sizes": (4, 10**30, 3)}, ValueError, r"sizes=.* needs .* parameters"),
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


def test_check_matrix_without_copy_returns_only_an_array_the_kernels_take_as_it_is(rng):
    """copy=False (training reads X and T without keeping them) hands back the caller's array only when it
    is a plain, C-contiguous, aligned, writable ndarray of the dtype; anything else is still converted."""
    from nbmlp.validation import check_matrix

    f64 = np.dtype(np.float64)
    X = rng.normal(size=(6, 4))
    assert check_matrix(X, "X", 4, f64, copy=False) is X
    assert not np.shares_memory(check_matrix(X, "X", 4, f64), X)
    readonly = X.copy()
    readonly.flags.writeable = False
    for other in (X.astype(np.float32), np.asfortranarray(X), X[:, ::-1], readonly):
        out = check_matrix(other, "X", 4, f64, copy=False)
        assert not np.shares_memory(out, X) and not np.shares_memory(out, other)
        assert out.flags.c_contiguous and out.flags.writeable and out.dtype == f64
        np.testing.assert_array_equal(out, np.asarray(other, dtype=f64))
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        check_matrix(bad, "X", 4, f64, copy=False)
    with pytest.raises(ValueError, match="must have 3 columns"):
        check_matrix(X, "X", 3, f64, copy=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_is_exact_and_quiet(dtype):
    """One sum decides when it is finite; a non-finite sum (inf, NaN, or an overflow of finite values) gets
    the exact test, and no RuntimeWarning escapes."""
    from nbmlp.validation import all_finite

    big = np.finfo(dtype).max
    cases = {(): True, (1.0, -2.0): True, (big, big, -big): True, (big, big): True,
             (1.0, np.nan): False, (np.inf, 1.0): False, (-np.inf, 1.0): False, (np.inf, -np.inf): False,
             (big, big, np.nan): False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for values, expected in cases.items():
            a = np.array(values, dtype=dtype)
            for shaped in (a, a.reshape(1, -1), np.tile(a, (3, 1)).T):
                assert all_finite(shaped) is expected, (values, shaped.shape)


def test_float32_net_accepts_float64_input_and_computes_in_float32(rng):
    net = MLP((4, 5, 3), seed=0, dtype="float32")
    X = rng.normal(size=(5, 4))
    out = net.forward(X)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, net.forward(X.astype(np.float32)))


# -- parameters: checked at every entry point, before any kernel ----------------------------------------

#: (what the user did, the error, the message): each one once crashed, hung or gave numbers silently.
CORRUPTIONS = {
    "transposed (PyTorch's (out, in))": (lambda n: n.W.__setitem__(0, n.W[0].T.copy()), ValueError,
                                         r"net.W\[0\] \(W1\) has shape \(5, 4\); expected \(4, 5\) = "
                                         r"\(sizes\[0\], sizes\[1\]\) — \(in, out\), not PyTorch's"),
    "wrong shape": (lambda n: n.W.__setitem__(0, np.zeros((2, 128))), ValueError,
                    r"net.W\[0\] \(W1\) has shape \(2, 128\); expected \(4, 5\)"),
    "bias of the wrong length": (lambda n: n.b.__setitem__(1, np.zeros(7)), ValueError,
                                 r"net.b\[1\] \(b2\) has shape \(7,\); expected \(3,\)"),
    "wrong dtype": (lambda n: n.W.__setitem__(1, n.W[1].astype(np.float32)), TypeError,
                    r"net.W\[1\] \(W2\) has dtype float32; the net computes in float64"),
    "big-endian": (lambda n: n.W.__setitem__(1, n.W[1].astype(">f8")), TypeError, r"net.W\[1\] \(W2\) has dtype"),
    "read-only": (lambda n: n.W[0].setflags(write=False), ValueError, r"net.W\[0\] \(W1\) is read-only"),
    "Fortran order": (lambda n: n.W.__setitem__(0, np.asfortranarray(n.W[0])), ValueError,
                      r"net.W\[0\] \(W1\) is not C-contiguous"),
    "strided view": (lambda n: n.b.__setitem__(0, np.zeros(10)[::2]), ValueError,
                     r"net.b\[0\] \(b1\) is not C-contiguous"),
    "NaN": (lambda n: n.W[1].__setitem__((0, 0), np.nan), ValueError, r"net.W\[1\] \(W2\) contains NaN"),
    "inf in a bias": (lambda n: n.b[0].__setitem__(0, -np.inf), ValueError, r"net.b\[0\] \(b1\) contains NaN"),
    "nested list": (lambda n: n.W.__setitem__(0, n.W[0].tolist()), TypeError,
                    r"net.W\[0\] \(W1\) must be a numpy.ndarray of float64 with shape \(4, 5\), got list"),
    "masked array": (lambda n: n.W.__setitem__(0, np.ma.masked_array(n.W[0])), TypeError,
                     r"net.W\[0\] \(W1\) must be a numpy.ndarray.*got MaskedArray"),
    "a tuple of arrays": (lambda n: setattr(n, "W", tuple(n.W)), TypeError, r"net.W must be a list of 2"),
    "a layer too few": (lambda n: n.b.pop(), ValueError, r"net.b holds 1 arrays; sizes=\(4, 5, 3\) needs 2"),
    "shape edited in place": (lambda n: setattr(n.W[0], "shape", (5, 4)), ValueError, r"net.W\[0\] \(W1\) has shape"),
    "two parameters share memory": (lambda n: n.b.__setitem__(1, n.W[1].reshape(-1)[2:5]), ValueError,
                                    r"net.W\[1\] \(W2\) and net.b\[1\] \(b2\) share memory"),
    "dtype edited": (lambda n: setattr(n, "dtype", np.dtype(np.float16)), TypeError,
                     r"net.dtype must be numpy.dtype\('float32'\) or numpy.dtype\('float64'\), got dtype\('float16'\)"),
    "dtype set to a string": (lambda n: setattr(n, "dtype", "float32"), TypeError,
                              r"net.dtype must be .* got 'float32'"),
    "activations edited": (lambda n: setattr(n, "activations", ("sigmoid",)), ValueError,
                           r"net.activations names 1 layers"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_corrupted_parameters_are_refused_before_any_kernel(case, batch, tmp_path):
    X, T = batch
    corrupt, error, message = CORRUPTIONS[case]
    net = MLP((4, 5, 3), seed=0)
    corrupt(net)
    calls = spy_engine(net)
    for call in (lambda: net.forward(X), lambda: net.loss(X, T), lambda: net.gradients(X, T),
                 lambda: net.fit(X, T, epochs=1), lambda: net.save(tmp_path / "m.npz"),
                 lambda: nbmlp.gradcheck(net, X, T)):
        with pytest.raises(error, match=message):
            call()
    assert calls == []
    assert not (tmp_path / "m.npz").exists()


def test_sizes_cannot_be_edited(net):
    with pytest.raises(AttributeError, match=r"net.sizes is fixed at \(4, 5, 3\)"):
        net.sizes = (4, 50, 3)
    assert net.sizes == (4, 5, 3)


def test_parameter_check_reads_the_values_in_one_sum_and_names_the_culprit_only_when_needed(monkeypatch):
    from nbmlp import validation

    net = MLP((4, 5, 3), seed=0)
    seen = []
    real = np.isfinite

    def spy(a, *args, **kwargs):
        seen.append(np.shape(a))
        return real(a, *args, **kwargs)

    monkeypatch.setattr(validation.np, "isfinite", spy)
    validation.check_parameters(net)
    assert seen == [()]  # one scalar test of the total: no per-entry temporary
    huge = MLP((2, 2), seed=0)
    huge.W[0][...] = 1e308  # finite, but the total overflows: the exact test decides, and accepts
    with pytest.warns(RuntimeWarning, match="overflow"):
        validation.check_parameters(huge)
    net.b[0][1] = np.nan
    with pytest.raises(ValueError, match=r"net.b\[0\] \(b1\) contains NaN"):
        validation.check_parameters(net)


def test_fit_reads_the_parameter_values_once(monkeypatch, batch):
    from nbmlp import validation

    X, T = batch
    net = MLP((4, 5, 3), seed=0)
    net.fit(X, T, epochs=1)  # compiled and warm: nothing below is first-call work
    totals = []
    real = np.add.reduce

    def spy(a, *args, **kwargs):
        if any(a is p for p in net.W + net.b):  # a parameter summed for the finiteness test
            totals.append(a)
        return real(a, *args, **kwargs)

    monkeypatch.setattr(validation.np.add, "reduce", spy, raising=False)
    net.fit(X, T, epochs=2)
    assert len(totals) == len(net.W + net.b)  # each parameter once


def test_a_masked_array_that_hides_entries_is_refused(net):
    X = np.ma.masked_array(np.zeros((3, 4)), mask=np.zeros((3, 4), bool))
    np.testing.assert_array_equal(net.forward(X), net.forward(np.zeros((3, 4))))  # nothing hidden: its data
    X[1, 2] = np.ma.masked
    with pytest.raises(ValueError, match="X is a masked array with 1 masked entries"):
        net.forward(X)
    with pytest.raises(ValueError, match="T is a masked array"):
        net.loss(np.zeros((3, 4)), np.ma.masked_array(np.zeros((3, 3)), mask=np.eye(3, dtype=bool)))


def test_estimator_coefs_are_the_checked_arrays(rng):
    X = rng.normal(size=(20, 4))
    y = np.arange(20) % 3
    clf = nbmlp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X, y)
    assert clf.coefs_ is clf.net_.W and clf.intercepts_ is clf.net_.b
    clf.coefs_[0] = clf.coefs_[0].T.copy()
    spy_engine(clf.net_)
    with pytest.raises(ValueError, match=r"net.W\[0\] \(W1\) has shape \(5, 4\)"):
        clf.predict(X)
