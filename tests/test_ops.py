"""The table of operations (nbmlp.ops): every entry exists in every tier, and what it states is true.

Kernel against twin on random shapes is tests/test_core_kernels.py (it iterates over the same table);
here: the derived names, each activation's backward against the derivative of its forward, its
weight initialisation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import FD_EPS

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
    assert "softmax" not in ops.HIDDEN_ACTIVATIONS and "relu" in ops.HIDDEN_ACTIVATIONS
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


def test_softmax_only_as_the_output_of_cross_entropy():
    with pytest.raises(ValueError, match="softmax is only available as the output activation"):
        nbmlp.MLP((2, 3, 2), activation=["softmax", "softmax"], loss="cross_entropy")
    with pytest.raises(ValueError, match="softmax is only available as the output activation"):
        nbmlp.MLP((2, 3, 2), output_activation="softmax", loss="mse")
    with pytest.raises(ValueError, match="needs output_activation='softmax'"):
        nbmlp.MLP((2, 3, 2), output_activation="tanh", loss="cross_entropy")
    assert nbmlp.MLP((2, 3, 2), loss="cross_entropy").activations == ("sigmoid", "softmax")
