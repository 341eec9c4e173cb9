"""nbmlp.gradcheck: passes correct gradients, catches wrong ones, leaves the network alone."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import nbmlp
from nbmlp import ops
from nbmlp.engines import KERNEL_NAMES

#: A correct backpropagation agrees with central differences (eps = 1e-6, float64) to ~1e-8.
PASS_TOL = 1e-6
#: The note's slip (sigma' = z(1 - z)) or a missing factor gives errors of order 1.
FAIL_MIN = 1e-2

NETS = [
    dict(sizes=(4, 5, 3)),  # the note's
    dict(sizes=(3, 6, 4, 2), activation=["tanh", "sigmoid", "identity"], loss="mse", input_sigmoid=False),
    dict(sizes=(2, 5, 3), activation="tanh", loss="cross_entropy"),
    dict(sizes=(1, 1), activation="identity", loss="half_sse"),
    dict(sizes=(3, 4, 2), activation="relu", loss="mse", input_sigmoid=False),
    dict(sizes=(3, 4, 2), loss="half_sse", dtype="float32", engine="numpy"),
    dict(sizes=(3, 5, 4, 2), activation=["leaky_relu", "softplus", "identity"], loss="mse", input_sigmoid=False),
    dict(sizes=(2, 6, 3), activation="softplus", loss="cross_entropy", engine="tuned"),
    dict(sizes=(3, 4, 2), activation="leaky_relu", loss="half_sse", dtype="float32"),
    # every activation of the table in a hidden layer
    *(dict(sizes=(3, 5, 2), activation=[name, "identity"], loss="mse") for name in ops.HIDDEN_ACTIVATIONS),
]


def _batch(net, rng, n=6):
    X = rng.normal(size=(n, net.sizes[0]))
    dL = net.sizes[-1]
    if ops.LOSSES[net.loss_name].targets == "probabilities":
        return X, nbmlp.one_hot(rng.integers(0, dL, n), dL)
    return X, rng.random((n, dL))


def _arch_id(a):
    return f"{a['sizes']}-{a.get('activation', 'sigmoid')}-{a.get('loss', 'half_sse')}"


@pytest.mark.parametrize("arch", NETS, ids=_arch_id)
def test_correct_gradients_pass_and_the_net_is_unchanged(arch, rng):
    net = nbmlp.MLP(seed=4, **arch)
    X, T = _batch(net, rng)
    before = [p.copy() for p in net.W + net.b]
    errors = nbmlp.gradcheck(net, X, T, include_input=True)
    L = net.n_layers
    assert list(errors) == [f"{p}{l}" for l in range(1, L + 1) for p in "Wb"] + ["X"]
    assert max(errors.values()) < PASS_TOL, errors
    for p, q in zip(net.W + net.b, before, strict=True):
        assert p.dtype == q.dtype
        np.testing.assert_array_equal(p, q)


def _broken(net, name, wrong):
    """Replace one kernel of the net's engine (its private namespace only) by a wrong version."""
    ops = {k: getattr(net._ops, k) for k in KERNEL_NAMES}
    ops[name] = wrong
    net._ops = SimpleNamespace(**ops)
    return net


def test_the_notes_slip_is_caught(rng):
    """sigma'(z) written as z(1 - z) -- the note's slip -- instead of h(1 - h)."""
    net = nbmlp.MLP((4, 5, 3), seed=0, engine="numpy")
    X, T = _batch(net, rng)

    def slip(dz, dh, h):
        z = np.log(h / (1.0 - h))  # recover z from h = sigma(z)
        dz[...] = dh * z * (1.0 - z)

    errors = nbmlp.gradcheck(_broken(net, "sigmoid_backward", slip), X, T)
    assert errors["W1"] > FAIL_MIN and errors["W2"] > FAIL_MIN


def test_a_wrong_bias_gradient_is_caught_in_b_only(rng):
    net = nbmlp.MLP((3, 4, 2), seed=0, engine="numpy", loss="mse")
    X, T = _batch(net, rng)

    def mean_instead_of_sum(db, dz):
        db[...] = dz.mean(axis=0)

    errors = nbmlp.gradcheck(_broken(net, "linear_backward_bias", mean_instead_of_sum), X, T)
    assert errors["b1"] > FAIL_MIN and errors["b2"] > FAIL_MIN
    assert errors["W1"] < PASS_TOL and errors["W2"] < PASS_TOL


def test_max_entries_samples_a_seeded_subset(rng):
    net = nbmlp.MLP((8, 30, 3), seed=0)
    X, T = _batch(net, rng)
    calls = []
    original = net.loss

    def counting_loss(*args):
        calls.append(1)
        return original(*args)

    net.loss = counting_loss
    errors = nbmlp.gradcheck(net, X, T, max_entries=5, seed=1)
    # 5 entries of W1 (240), W2 (90), b1 (30); all 3 of b2: two losses per entry
    assert len(calls) == 2 * (5 + 5 + 5 + 3)
    assert max(errors.values()) < PASS_TOL


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"eps": 0.0}, ValueError, "eps"),
        ({"floor": -1.0}, ValueError, "floor"),
        ({"max_entries": 0}, ValueError, "max_entries"),
        ({"seed": "x"}, TypeError, "seed"),
    ],
)
def test_bad_arguments(kwargs, error, match, rng):
    net = nbmlp.MLP((2, 2), seed=0)
    with pytest.raises(error, match=match):
        nbmlp.gradcheck(net, np.zeros((1, 2)), np.zeros((1, 2)), **kwargs)


def test_bad_data_and_net(rng):
    net = nbmlp.MLP((2, 2), seed=0)
    with pytest.raises(ValueError, match="T must have 2 columns"):
        nbmlp.gradcheck(net, np.zeros((1, 2)), np.zeros((1, 3)))
    with pytest.raises(TypeError, match="net must be an nbmlp.MLP"):
        nbmlp.gradcheck("net", np.zeros((1, 2)), np.zeros((1, 2)))
