"""The whole batch backpropagation: loops vs reference, finite differences, and
the note's 4-5-3 network worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, FD_EPS, FD_REL_TOL, assert_close, rel_err

import nbmlp
from nbmlp import MLP, ops

LOOP_ENGINES = [name for name in nbmlp.ENGINES if name != "numpy"]

#: (sizes, activation, loss, input_sigmoid): the note's network, width-1 layers,
#: deep nets, every activation and every loss.
ARCHITECTURES = [
    ((4, 5, 3), "sigmoid", "half_sse", True),
    ((1, 1), "sigmoid", "half_sse", True),
    ((1, 1, 1), "tanh", "mse", False),
    ((3, 1, 4), "sigmoid", "half_sse", True),
    ((4, 6, 5, 4, 3), "sigmoid", "half_sse", True),
    ((5, 7, 1, 6, 2), "tanh", "half_sse", False),
    ((6, 8, 8, 3), "relu", "cross_entropy", False),
    ((4, 5, 3), "identity", "mse", True),
    ((2, 9, 9, 9, 9, 2), ["relu", "tanh", "sigmoid", "identity", "sigmoid"], "mse", True),
    ((4, 5, 2), "sigmoid", "cross_entropy", True),
    ((3, 6, 1, 3), ["softplus", "leaky_relu", "softplus"], "half_sse", True),
    # one network per activation of the table, and one per loss
    *(((3, 6, 4, 2), [name, name, "identity"], "mse", False) for name in ops.HIDDEN_ACTIVATIONS),
    *(((3, 5, 3), "tanh", name, True) for name in ops.LOSSES),
]


def arch_id(arch):
    sizes, activation, loss, _ = arch
    names = activation if isinstance(activation, str) else "+".join(activation)
    return "-".join(map(str, sizes)) + f"-{names}-{loss}"


def make_net(sizes, activation, loss, input_sigmoid, engine="loops", dtype="float64", seed=1):
    return MLP(sizes, seed=seed, dtype=dtype, engine=engine, activation=activation, loss=loss,
               input_sigmoid=input_sigmoid)


def make_batch(rng, n, sizes, loss, dtype="float64"):
    X = rng.normal(scale=1.5, size=(n, sizes[0])).astype(dtype)
    if ops.LOSSES[loss].targets == "probabilities":
        T = nbmlp.one_hot(rng.integers(0, sizes[-1], size=n), sizes[-1], dtype=dtype)
    else:
        T = rng.random((n, sizes[-1])).astype(dtype)
    return X, T


def copy_parameters(dst, src):
    dst.W = [w.copy() for w in src.W]
    dst.b = [b.copy() for b in src.b]


def all_quantities(g):
    """(name, array) for every quantity of a Gradients object, as a student would list them."""
    named = [(f"dL/dW{l + 1}", a) for l, a in enumerate(g.W)] + [(f"dL/db{l + 1}", a) for l, a in enumerate(g.b)]
    named += [(f"dL/dz{l}", a) for l, a in enumerate(g.dL_dz)]
    named += [(f"dL/dh{l}", a) for l, a in enumerate(g.dL_dh) if a is not None]
    named += [(f"z{l}", a) for l, a in enumerate(g.z)] + [(f"h{l}", a) for l, a in enumerate(g.h)]
    return named


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("engine", LOOP_ENGINES)
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=arch_id)
@pytest.mark.parametrize("n", [1, 2, 37])
def test_every_quantity_matches_reference(arch, engine, dtype, n, rng):
    sizes, activation, loss, input_sigmoid = arch
    net = make_net(*arch, engine=engine, dtype=dtype)
    ref = make_net(*arch, engine="numpy", dtype=dtype)
    copy_parameters(ref, net)
    X, T = make_batch(rng, n, sizes, loss, dtype)
    g, g_ref = net.gradients(X, T), ref.gradients(X, T)
    for (name, a), (_, b) in zip(all_quantities(g), all_quantities(g_ref), strict=True):
        assert a.dtype == np.dtype(dtype), name
        assert_close(a, b, dtype, f"{name} of {sizes} {engine}")
    assert_close(np.array(g.loss), np.array(g_ref.loss), dtype, "loss")
    assert_close(net.forward(X), ref.forward(X), dtype, "forward")
    if ops.LOSSES[loss].fused_softmax:
        assert g.dL_dh[-1] is None  # the fused loss differentiates straight to dL/dz_L


def central_difference(net, X, T, array, index):
    """(L(θ + ε) - L(θ - ε)) / 2ε for one entry of a parameter or of X."""
    saved = array[index]
    array[index] = saved + FD_EPS
    plus = net.loss(X, T)
    array[index] = saved - FD_EPS
    minus = net.loss(X, T)
    array[index] = saved
    return (plus - minus) / (2.0 * FD_EPS)


@pytest.mark.parametrize("engine", ["loops", "numpy"])
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=arch_id)
def test_gradients_match_central_finite_differences(arch, engine, rng):
    sizes, _, loss, _ = arch
    net = make_net(*arch, engine=engine)
    X, T = make_batch(rng, 5, sizes, loss)
    if any(ops.ACTIVATIONS[a].kink is not None for a in net.activations):
        # keep pre-activations away from a kink (relu's at 0): with zero biases, a sample whose
        # units of one layer are all off has z = 0 exactly in the next layer
        X = X * 0.5
        for b in net.b:
            b[...] = rng.uniform(0.05, 0.2, size=b.shape)
    g = net.gradients(X, T)
    pairs = [(net.W[l], g.W[l]) for l in range(net.n_layers)] + [(net.b[l], g.b[l]) for l in range(net.n_layers)]
    pairs.append((X, g.dL_dz[0]))  # dL/dz0 is the gradient with respect to the input batch X
    for param, grad in pairs:
        numeric = np.array([central_difference(net, X, T, param, idx) for idx in np.ndindex(param.shape)])
        assert rel_err(grad.ravel(), numeric) <= FD_REL_TOL, (param.shape, grad.ravel(), numeric)


def test_hand_worked_4_5_3_example():
    """The note's network on n = 2 samples, with numbers chosen so every step is exact in binary.

    X = 0, so h0 = σ(0) = 1/2 everywhere.  Each bias cancels its layer's input,
    b_k = -½ Σ_j w_jk, so z1 = 0, h1 = 1/2 and z2 = 0, h2 = 1/2 everywhere, and
    σ'(z) = h (1 - h) = 1/4 at every unit.  (The note's z (1 - z) would be 0.)

    Targets t1 = (1, 0, 0), t2 = (0, 1, 0).
    L = ½ · 6 entries · (1/2)^2 = 3/4.
    dL/dh2 = h2 - t = [[-1/2, 1/2, 1/2], [1/2, -1/2, 1/2]].
    dL/dz2 = dL/dh2 · 1/4 = [[-1/8, 1/8, 1/8], [1/8, -1/8, 1/8]].
    dL/dW2_jk = Σ_i dL/dz2_ik h1_ij = 1/2 · (column sums 0, 0, 1/4) = (0, 0, 1/8) in every row j.
    dL/db2 = column sums = (0, 0, 1/4).
    dL/dh1_ij = Σ_k dL/dz2_ik w2_jk with W2 rows (1,0,0), (0,1,0), (0,0,1), (1,1,0), (0,1,1):
        i=1: (-1/8, 1/8, 1/8, -1/8 + 1/8 = 0, 1/8 + 1/8 = 1/4)
        i=2: (1/8, -1/8, 1/8, 1/8 - 1/8 = 0, -1/8 + 1/8 = 0)
    dL/dz1 = dL/dh1 · 1/4 = [[-1/32, 1/32, 1/32, 0, 1/16], [1/32, -1/32, 1/32, 0, 0]].
    dL/dW1_jk = 1/2 · column sums of dL/dz1 = 1/2 · (0, 0, 1/16, 0, 1/16) = (0, 0, 1/32, 0, 1/32) in every row.
    dL/db1 = (0, 0, 1/16, 0, 1/16).
    dL/dh0_ij = Σ_k dL/dz1_ik w1_jk with W1 rows (1,0,0,0,1), (0,1,0,0,0), (0,0,1,0,-1), (0,0,0,1,2):
        i=1: (-1/32 + 1/16, 1/32, 1/32 - 1/16, 0 + 2/16) = (1/32, 1/32, -1/32, 1/8)
        i=2: (1/32, -1/32, 1/32, 0)
    dL/dz0 = dL/dh0 · 1/4 = [[1/128, 1/128, -1/128, 1/32], [1/128, -1/128, 1/128, 0]].
    """
    W1 = np.array([[1, 0, 0, 0, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, -1], [0, 0, 0, 1, 2]], dtype=float)
    W2 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=float)
    b1 = np.array([-0.5, -0.5, -0.5, -0.5, -1.0])  # -½ · column sums of W1: (1, 1, 1, 1, 2)
    b2 = np.array([-1.0, -1.5, -1.0])  # -½ · column sums of W2: (2, 3, 2)
    X = np.zeros((2, 4))
    T = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    expected = {
        "loss": 0.75,
        "dW2": np.tile([0.0, 0.0, 1 / 8], (5, 1)),
        "db2": np.array([0.0, 0.0, 1 / 4]),
        "dz2": np.array([[-1, 1, 1], [1, -1, 1]]) / 8,
        "dh1": np.array([[-1 / 8, 1 / 8, 1 / 8, 0, 1 / 4], [1 / 8, -1 / 8, 1 / 8, 0, 0]]),
        "dz1": np.array([[-1 / 32, 1 / 32, 1 / 32, 0, 1 / 16], [1 / 32, -1 / 32, 1 / 32, 0, 0]]),
        "dW1": np.tile([0.0, 0.0, 1 / 32, 0.0, 1 / 32], (4, 1)),
        "db1": np.array([0.0, 0.0, 1 / 16, 0.0, 1 / 16]),
        "dh0": np.array([[1 / 32, 1 / 32, -1 / 32, 1 / 8], [1 / 32, -1 / 32, 1 / 32, 0]]),
        "dz0": np.array([[1 / 128, 1 / 128, -1 / 128, 1 / 32], [1 / 128, -1 / 128, 1 / 128, 0]]),
    }
    for engine in nbmlp.ENGINES:
        net = MLP((4, 5, 3), engine=engine)
        net.W, net.b = [W1.copy(), W2.copy()], [b1.copy(), b2.copy()]
        g = net.gradients(X, T)
        got = {"loss": g.loss, "dW2": g.W[1], "db2": g.b[1], "dz2": g.dL_dz[2], "dh1": g.dL_dh[1],
               "dz1": g.dL_dz[1], "dW1": g.W[0], "db1": g.b[0], "dh0": g.dL_dh[0], "dz0": g.dL_dz[0]}
        np.testing.assert_array_equal(g.h[2], np.full((2, 3), 0.5))
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-15, err_msg=f"{engine}: {name}")


@pytest.mark.parametrize("engine", nbmlp.ENGINES)
def test_sigmoid_derivative_uses_h_not_z(engine):
    """dL/dz = dL/dh · h(1 - h).  The note writes z(1 - z): this test fails for that formula."""
    ops = nbmlp.get_engine(engine)
    z = np.array([[-3.0, -0.5, 0.0, 0.5, 2.0, 6.0]])
    h = np.empty_like(z)
    ops.sigmoid_forward(h, z)
    dz = np.empty_like(z)
    ops.sigmoid_backward(dz, np.ones_like(z), h)
    exact = np.exp(-z) / (1.0 + np.exp(-z)) ** 2  # σ'(z), differentiated by hand
    np.testing.assert_allclose(dz, exact, rtol=1e-12)
    sigma = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    numeric = (sigma(z + FD_EPS) - sigma(z - FD_EPS)) / (2 * FD_EPS)
    np.testing.assert_allclose(dz, numeric, rtol=0, atol=1e-9)  # FD rounding: ~eps / FD_EPS
    wrong = z * (1.0 - z)  # the note's slip; it is nowhere near σ'(z):
    assert np.max(np.abs(wrong - exact)) > 1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_training_end_to_end_in_both_dtypes(dtype):
    X, y = nbmlp.load_iris()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    T = nbmlp.one_hot(y, 3)
    net = MLP((4, 5, 3), seed=0, dtype=dtype).fit(X, T, epochs=400, lr=0.05)
    assert all(p.dtype == dtype for p in net.W + net.b)
    assert net.forward(X).dtype == dtype
    assert len(net.loss_history) == 400
    assert net.loss_history[-1] < 0.25 * net.loss_history[0]
    assert np.mean(net.forward(X).argmax(axis=1) == y) > 0.9


def test_fit_matches_reference_engine_step_by_step(rng):
    X, T = make_batch(rng, 20, (4, 5, 3), "half_sse")
    loops = MLP((4, 5, 3), seed=3).fit(X, T, epochs=25, lr=0.1)
    numpy = MLP((4, 5, 3), seed=3, engine="numpy").fit(X, T, epochs=25, lr=0.1)
    assert rel_err(loops.loss_history, numpy.loss_history) < 1e-12
    for a, b in zip(loops.W + loops.b, numpy.W + numpy.b, strict=True):
        assert rel_err(a, b) < 1e-12


def test_fit_is_gradient_descent(rng):
    """One epoch moves every parameter by exactly -lr times its gradient."""
    X, T = make_batch(rng, 6, (4, 5, 3), "half_sse")
    net = MLP((4, 5, 3), seed=2)
    g = net.gradients(X, T)
    before = [p.copy() for p in net.W + net.b]
    net.fit(X, T, epochs=1, lr=0.25)
    for after, start, grad in zip(net.W + net.b, before, g.W + g.b, strict=True):
        np.testing.assert_allclose(after, start - 0.25 * grad, rtol=0, atol=1e-15)
    assert net.loss_history == [pytest.approx(g.loss, rel=1e-15)]


def test_divergent_training_raises_and_keeps_last_finite_parameters():
    X = np.array([[1e3, -2e3], [3e3, 1e3]])
    T = np.array([[1e6], [-1e6]])
    net = MLP((2, 3, 1), seed=0, activation="identity", input_sigmoid=False)
    with pytest.raises(FloatingPointError, match="non-finite"):
        net.fit(X, T, epochs=200, lr=10.0)
    assert all(np.isfinite(p).all() for p in net.W + net.b)
    assert np.isfinite(net.loss(X, T))


def test_main_job_reaches_95_percent_and_cross_checks(capsys):
    from nbmlp.main_job import run

    assert run([]) == 0
    out = capsys.readouterr().out
    test_accuracy = float(out.split("test accuracy")[1].split("%")[0])
    assert test_accuracy >= 95.0, out
    worst = float(out.split("max relative difference")[1].split()[0])
    assert worst < 1e-12, out
    assert "epoch 3000/3000" in out
