"""The table of operations (nbmlp.ops): every entry exists in every tier, and what it states is true.

Kernel against twin on random shapes is tests/test_core_kernels.py (it iterates over the same table);
here: the derived names, each activation's backward against the derivative of its forward, its
weight initialisation, and the two activations added through the table (leaky_relu, softplus).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from conftest import DTYPES, FD_EPS

import nbmlp
from nbmlp import engines, kernels, kernels_tuned, ops, optim, reference

ACTIVATIONS_WITH_BACKWARD = [op for op in ops.ACTIVATIONS.values() if op.backward is not None]


def test_every_kernel_of_the_table_exists_in_every_tier():
    for name in ops.kernel_names():
        for tier in (kernels, reference, kernels_tuned):
            assert callable(getattr(tier, name, None)), f"{tier.__name__} lacks {name}"
    for name in ops.update_kernel_names():
        assert callable(getattr(optim, name, None)) and callable(getattr(reference, name, None)), name


def test_the_derived_tables_are_the_table():
    assert engines.KERNEL_NAMES == ops.kernel_names()
    assert tuple(nbmlp.ACTIVATIONS) == tuple(ops.ACTIVATIONS)
    assert all(nbmlp.ACTIVATIONS[n] == (op.forward, op.backward) for n, op in ops.ACTIVATIONS.items())
    assert nbmlp.LOSSES is ops.LOSSES
    assert optim.OPTIMIZERS == tuple(ops.OPTIMIZERS)
    assert optim.UPDATE_KERNEL_NAMES == ops.update_kernel_names()
    assert "softmax" not in ops.HIDDEN_ACTIVATIONS and "leaky_relu" in ops.HIDDEN_ACTIVATIONS
    for engine in nbmlp.ENGINES:
        ns = nbmlp.get_engine(engine)
        assert all(callable(getattr(ns, k)) for k in ops.kernel_names()), engine


def test_every_entry_has_its_named_constant():
    """The compiled loop branches on ops.ACT_* / LOSS_* / OPT_*: one constant per entry, all distinct."""
    for prefix, table in (("ACT_", ops.ACTIVATIONS), ("LOSS_", ops.LOSSES), ("OPT_", ops.OPTIMIZERS)):
        constants = {k: v for k, v in vars(ops).items() if k.startswith(prefix)}
        assert sorted(constants) == sorted(prefix + name.upper() for name in table), prefix
        for name, op in table.items():
            assert op.code == constants[prefix + name.upper()]


@pytest.mark.parametrize("rule", ops.OPTIMIZERS.values(), ids=lambda r: r.name)
def test_update_rules_state_and_hyperparameters_are_the_optimizers(rule):
    """make_optimizer takes each named hyperparameter; the optimizer keeps each named state list."""
    assert set(rule.hyperparameters) <= set(inspect.signature(optim.make_optimizer).parameters)
    opt = optim.make_optimizer(rule.name, engine="numpy")
    theta, g = np.ones(3), np.full(3, 0.5)
    opt.step([theta], [g], 0.1)
    assert not np.array_equal(theta, np.ones(3))
    for name in rule.state:
        assert [a.shape for a in getattr(opt, name)] == [(3,)], name
    for name in rule.hyperparameters:
        assert isinstance(getattr(opt, name), float), name


def test_activation_help_lists_each_formula_and_derivative():
    lines = ops.activation_help().splitlines()
    assert len(lines) == len(ops.ACTIVATIONS)
    for line, op in zip(lines, ops.ACTIVATIONS.values(), strict=True):
        assert line.startswith(op.name + ":") and op.formula in line and op.derivative in line


@pytest.mark.parametrize("engine", nbmlp.ENGINES)
@pytest.mark.parametrize("op", ACTIVATIONS_WITH_BACKWARD, ids=lambda op: op.name)
def test_backward_is_the_derivative_of_forward(op, engine, rng):
    """backward(dz, 1, h) = dh/dz by central differences of forward, away from the entry's kink."""
    ns = nbmlp.get_engine(engine)
    z = rng.uniform(-4.0, 4.0, size=(5, 7))
    if op.kink is not None:
        z = np.where(np.abs(z - op.kink) < 1e-2, op.kink + 0.5, z)
    forward, backward = getattr(ns, op.forward), getattr(ns, op.backward)
    h, plus, minus = np.empty_like(z), np.empty_like(z), np.empty_like(z)
    forward(h, z)
    forward(plus, z + FD_EPS)
    forward(minus, z - FD_EPS)
    dz = np.empty_like(z)
    backward(dz, np.ones_like(z), h)
    np.testing.assert_allclose(dz, (plus - minus) / (2 * FD_EPS), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ops.HIDDEN_ACTIVATIONS)
def test_weight_initialisation_follows_the_entry(name):
    """He: U(±sqrt(6 / d_in)); Glorot: U(±sqrt(6 / (d_in + d_out)))."""
    d_in, d_out = 20, 30
    net = nbmlp.MLP((d_in, d_out, 2), seed=0, activation=name, output_activation="identity")
    limit = math.sqrt(6.0 / (d_in if ops.ACTIVATIONS[name].init == ops.INIT_HE else d_in + d_out))
    W = np.abs(net.W[0])
    assert W.max() <= limit and W.max() > 0.99 * limit  # 600 draws reach the edge


def test_the_relu_family_uses_he_initialisation():
    assert [ops.ACTIVATIONS[n].init for n in ("relu", "leaky_relu", "softplus", "sigmoid", "tanh")] == \
        [ops.INIT_HE] * 3 + [ops.INIT_GLOROT] * 2


def test_softmax_only_as_the_output_of_cross_entropy():
    with pytest.raises(ValueError, match="softmax is only available as the output activation"):
        nbmlp.MLP((2, 3, 2), activation=["softmax", "softmax"], loss="cross_entropy")
    with pytest.raises(ValueError, match="softmax is only available as the output activation"):
        nbmlp.MLP((2, 3, 2), output_activation="softmax", loss="mse")
    with pytest.raises(ValueError, match="needs output_activation='softmax'"):
        nbmlp.MLP((2, 3, 2), output_activation="tanh", loss="cross_entropy")
    assert nbmlp.MLP((2, 3, 2), loss="cross_entropy").activations == ("sigmoid", "softmax")


# ---------------------------------------------------------------------------
# leaky_relu and softplus
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("engine", nbmlp.ENGINES)
def test_leaky_relu_slope_shows_in_forward_and_backward(engine, dtype):
    a = kernels.LEAKY_RELU_SLOPE
    assert a == 0.01
    ns = nbmlp.get_engine(engine)
    z = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], dtype=dtype)
    h = np.empty_like(z)
    ns.leaky_relu_forward(h, z)
    np.testing.assert_array_equal(h, np.array([[-0.02, -0.005, 0.0, 0.5, 3.0]], dtype=dtype))
    dh = np.array([[1.0, 2.0, 4.0, 3.0, -5.0]], dtype=dtype)
    dz = np.empty_like(z)
    ns.leaky_relu_backward(dz, dh, h)
    # z <= 0: dL/dz = a dL/dh (0.01, 0.02, 0.04 -- relu would give 0); z > 0: dL/dz = dL/dh
    np.testing.assert_array_equal(dz, np.array([[0.01, 0.02, 0.04, 3.0, -5.0]], dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("engine", nbmlp.ENGINES)
def test_softplus_is_stable_up_to_a_thousand(engine, dtype):
    ns = nbmlp.get_engine(engine)
    z = np.array([[-1000.0, -40.0, -1e-3, 0.0, 1e-3, 40.0, 1000.0]], dtype=dtype)
    h = np.empty_like(z)
    dz = np.empty_like(z)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # overflow or 0 * inf would raise
        ns.softplus_forward(h, z)
        ns.softplus_backward(dz, np.ones_like(z), h)
    assert np.isfinite(h).all() and np.isfinite(dz).all()
    # log(1 + e^z) by hand: e^-1000 underflows to 0; e^-40 = 4.248e-18 is kept to full precision
    # (log(1 + e^-40) in floating point would round to 0); log(1 + e^(±1e-3)) = log 2 ± 5e-4 + 1.25e-7;
    # 40 + e^-40 rounds to 40; 1000 exactly.
    e40 = math.exp(-40.0)
    expected_h = [0.0, e40, math.log(2.0) - 5e-4 + 1.25e-7, math.log(2.0), math.log(2.0) + 5e-4 + 1.25e-7,
                  40.0, 1000.0]
    # sigma(z) = 1 - e^-h: 0, e^-40 (relative precision kept by expm1), 1/2 -+ 2.5e-4, 1, 1.
    expected_dz = [0.0, e40, 0.5 - 2.5e-4, 0.5, 0.5 + 2.5e-4, 1.0, 1.0]
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(h[0], expected_h, rtol=rtol, atol=0.0 if dtype == np.float64 else 1e-30)
    np.testing.assert_allclose(dz[0], expected_dz, rtol=max(rtol, 1e-8), atol=0.0 if dtype == np.float64 else 1e-30)


def test_softplus_trains_and_leaky_relu_trains():
    """Each new activation, end to end: the loss of a small fit falls."""
    X, y = nbmlp.load_iris()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    T = nbmlp.one_hot(y, 3)
    for name in ("leaky_relu", "softplus"):
        net = nbmlp.MLP((4, 8, 3), seed=0, activation=name, input_sigmoid=False, loss="cross_entropy")
        net.fit(X, T, epochs=200, lr=0.1)
        assert net.loss_history[-1] < 0.5 * net.loss_history[0], name


@pytest.mark.parametrize("engine", nbmlp.ENGINES)
@pytest.mark.parametrize("op", ACTIVATIONS_WITH_BACKWARD, ids=lambda op: op.name)
def test_nan_and_infinity_go_through_as_in_numpy(op, engine):
    """A diverging run must stay detectable: NaN and ±inf come out of every tier as out of the twin."""
    z = np.array([[np.nan, np.inf, -np.inf, 800.0, -800.0]])
    results = []
    for ns in (nbmlp.get_engine(engine), reference):
        h, dz = np.empty_like(z), np.empty_like(z)
        with np.errstate(all="ignore"):
            getattr(ns, op.forward)(h, z)
            getattr(ns, op.backward)(dz, np.ones_like(z), h)
        results.append((h, dz))
    (h, dz), (h_ref, dz_ref) = results
    np.testing.assert_allclose(h, h_ref, rtol=1e-15, equal_nan=True)
    np.testing.assert_allclose(dz, dz_ref, rtol=1e-15, equal_nan=True)
    assert np.isnan(h[0, 0])
