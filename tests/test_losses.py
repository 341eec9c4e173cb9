"""Each loss and its gradient agree: in value, in scaling (sum vs mean), and by finite differences.

scikit-learn's issue #8349 (https://github.com/scikit-learn/scikit-learn/issues/8349) is a loss whose
reported value and whose gradient were scaled differently; these tests make that mismatch fail here.
The documented scaling (``nbmlp.LOSSES[name].scaling`` and the kernel docstrings) is checked against
what the code does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import FD_EPS, FD_REL_TOL, rel_err

import nbmlp
from nbmlp import kernels, reference
from nbmlp.network import LOSSES

ENGINES = ("loops", "loops-serial", "numpy")


def _targets(name, rng, n, d):
    if LOSSES[name].targets == "probabilities":
        return nbmlp.one_hot(rng.integers(0, d, n), d)
    return rng.random((n, d))


def _half_sse_by_hand(out, t):
    n, d = len(out), len(out[0])
    return 0.5 * sum((t[i][k] - out[i][k]) ** 2 for i in range(n) for k in range(d))


def _mse_by_hand(out, t):
    n, d = len(out), len(out[0])
    return sum((t[i][k] - out[i][k]) ** 2 for i in range(n) for k in range(d)) / (n * d)


def _cross_entropy_by_hand(out, t):
    """-1/n Σ_i Σ_k t_ik log softmax(z)_ik, from the logits."""
    n, d = len(out), len(out[0])
    total = 0.0
    for i in range(n):
        m = max(out[i])
        lse = m + math.log(sum(math.exp(v - m) for v in out[i]))
        total += sum(t[i][k] * (lse - out[i][k]) for k in range(d))
    return total / n


#: Each loss of the table written with Python floats and math, straight from its formula.
BY_HAND = {"half_sse": _half_sse_by_hand, "mse": _mse_by_hand, "cross_entropy": _cross_entropy_by_hand}


def test_every_loss_has_a_formula_by_hand():
    assert sorted(BY_HAND) == sorted(LOSSES)


def _loss_and_grad(name, engine, out, t):
    """(L, dL/d(out)) with the engine's kernels; out is h, or the logits z for cross-entropy."""
    ops = nbmlp.get_engine(engine)
    spec = LOSSES[name]
    loss = getattr(ops, spec.loss_kernel)(out, t)
    grad = np.empty_like(out)
    if spec.fused_softmax:
        p = np.empty_like(out)
        ops.softmax_forward(p, out)
        getattr(ops, spec.backward_kernel)(grad, p, t)
    else:
        getattr(ops, spec.backward_kernel)(grad, out, t)
    return loss, grad


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("n, d", [(1, 1), (1, 3), (5, 1), (7, 4)])
def test_loss_value_and_gradient_by_finite_differences(name, engine, n, d, rng):
    if LOSSES[name].fused_softmax and d == 1:
        d = 2  # one class is a constant softmax
    out = rng.normal(scale=2.0, size=(n, d))
    t = _targets(name, rng, n, d)
    loss, grad = _loss_and_grad(name, engine, out, t)
    assert loss == pytest.approx(BY_HAND[name](out.tolist(), t.tolist()), rel=1e-13, abs=1e-15)
    numeric = np.empty_like(out)
    for i in range(n):
        for k in range(d):
            plus, minus = out.copy(), out.copy()
            plus[i, k] += FD_EPS
            minus[i, k] -= FD_EPS
            numeric[i, k] = (_loss_and_grad(name, engine, plus, t)[0] -
                             _loss_and_grad(name, engine, minus, t)[0]) / (2 * FD_EPS)
    assert rel_err(grad, numeric) <= FD_REL_TOL


@pytest.mark.parametrize("name", list(LOSSES))
def test_documented_scaling_is_what_loss_and_gradient_do(name, rng):
    """Stacking the batch twice doubles a *sum* and leaves a *mean* alone -- the loss and every gradient alike."""
    spec = LOSSES[name]
    kernel_doc = " ".join(getattr(kernels, spec.loss_kernel).__doc__.split())
    documented_sum = "a sum" in spec.scaling and "mean" not in spec.scaling
    documented_mean = "a mean over samples" in spec.scaling
    assert documented_sum != documented_mean, spec.scaling
    # the kernel's docstring says the same ("a sum, not a mean" / "a mean over samples ...")
    assert ("a mean over samples" in kernel_doc) == documented_mean
    assert documented_mean or "a sum" in kernel_doc

    activation = "tanh"
    net = nbmlp.MLP((3, 4, 2), seed=0, activation=activation, loss=name)
    X = rng.normal(size=(5, 3))
    T = _targets(name, rng, 5, 2)
    once = net.gradients(X, T)
    twice = net.gradients(np.vstack([X, X]), np.vstack([T, T]))
    factor = 2.0 if documented_sum else 1.0
    assert twice.loss == pytest.approx(factor * once.loss, rel=1e-13)
    for g2, g1 in zip(twice.W + twice.b, once.W + once.b, strict=True):
        assert rel_err(g2, factor * g1) <= 1e-13


@pytest.mark.parametrize("name", list(LOSSES))
def test_network_gradient_agrees_with_the_reported_loss(name, rng):
    """dL/dW from backpropagation is the derivative of exactly the value net.loss reports."""
    net = nbmlp.MLP((3, 4, 3), seed=2, activation="sigmoid", loss=name)
    X = rng.normal(size=(6, 3))
    T = _targets(name, rng, 6, 3)
    g = net.gradients(X, T)
    assert g.loss == net.loss(X, T)
    for W, dW in zip(net.W, g.W, strict=True):
        numeric = np.empty_like(W)
        for j in range(W.shape[0]):
            for k in range(W.shape[1]):
                saved = W[j, k]
                W[j, k] = saved + FD_EPS
                plus = net.loss(X, T)
                W[j, k] = saved - FD_EPS
                minus = net.loss(X, T)
                W[j, k] = saved
                numeric[j, k] = (plus - minus) / (2 * FD_EPS)
        assert rel_err(dW, numeric) <= FD_REL_TOL


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("impl", [kernels.softmax_cross_entropy_loss, kernels.softmax_cross_entropy_loss.serial,
                                  reference.softmax_cross_entropy_loss])
def test_log_sum_exp_cannot_overflow(impl, dtype):
    z = np.array([[1000.0, 0.0, -1000.0], [1e4, -1e4, 0.0]], dtype=dtype)
    # row 0, target class 2: L = lse - z_2 = 1000 + log(1 + e^-1000 + e^-2000) + 1000 = 2000
    # row 1, target class 0: L = lse - z_0 = log(1 + e^-1e4 + e^-2e4) = 0 (to double precision)
    t = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=dtype)
    loss = impl(z, t)
    assert np.isfinite(loss)
    assert loss == pytest.approx((2000.0 + 0.0) / 2, rel=1e-12)


def test_softmax_stays_finite_at_extreme_logits():
    for softmax in (kernels.softmax_forward, reference.softmax_forward):
        z = np.array([[1000.0, 0.0, -1000.0]])
        p = np.empty_like(z)
        softmax(p, z)
        np.testing.assert_allclose(p, [[1.0, 0.0, 0.0]], atol=1e-300)
