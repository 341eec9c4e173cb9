"""Every kernel of every loop engine against its NumPy twin, on random shapes.

Shapes include n = 1 and width-1 layers; both dtypes.  Each case also checks
that the kernel leaves its inputs untouched and writes every slot of its output
(outputs start as NaN, so a skipped slot cannot pass).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import nbmlp
from nbmlp import ops, reference
from nbmlp.engines import KERNEL_NAMES, get_engine

LOOP_ENGINES = [name for name in nbmlp.ENGINES if name != "numpy"]

#: (n, d_in, d_out): the edge sizes every kernel must handle, plus ordinary ones.
EDGE_SHAPES = [(1, 1, 1), (1, 4, 5), (3, 1, 1), (150, 4, 5), (7, 5, 3), (1, 7, 1), (33, 1, 9), (64, 17, 10)]


ROLES = ops.kernel_roles()


def _activation_output(op, rng, shape, dtype):
    """A valid saved output h of the activation (what the backward kernel reads): its twin's forward of z."""
    z = rng.normal(scale=2.0, size=shape).astype(dtype)
    h = np.empty_like(z)
    getattr(reference, op.forward)(h, z)
    return h


def _targets(rng, n, d, dtype, probabilities=False):
    if probabilities:  # rows of a one-hot or soft label matrix sum to 1
        t = rng.random((n, d)) ** 3
        return (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    return rng.normal(size=(n, d)).astype(dtype)


def make_case(name, rng, n, d_in, d_out, dtype):
    """Arguments for one call of kernel ``name``: (args, indices of output arrays).

    The kernel's role (from the table of operations, ``nbmlp.ops.kernel_roles``) decides its arguments.
    """
    def normal(*shape, scale=1.0):
        return (rng.normal(scale=scale, size=shape)).astype(dtype)

    def out(*shape):
        return np.full(shape, np.nan, dtype=dtype)

    role, op = ROLES[name]
    if role == "activation_forward":
        # (h, z); z spans large magnitudes to exercise stability
        z = normal(n, d_out, scale=4.0)
        z[0, 0] = 30.0 if z.size > 1 else z[0, 0]
        return (out(n, d_out), z), [0]
    if role == "activation_backward":
        return (out(n, d_out), normal(n, d_out), _activation_output(op, rng, (n, d_out), dtype)), [0]
    if role == "linear_forward":
        return (out(n, d_out), normal(n, d_in), normal(d_in, d_out), normal(d_out)), [0]
    if role == "linear_backward_weight":
        return (out(d_in, d_out), normal(n, d_out), normal(n, d_in)), [0]
    if role == "linear_backward_bias":
        return (out(d_out), normal(n, d_out)), [0]
    if role == "linear_backward_input":
        return (out(n, d_in), normal(n, d_out), normal(d_in, d_out)), [0]
    probabilities = role.startswith("loss") and op.targets == "probabilities"
    if role == "loss":  # (out, t): out is the logits for a fused-softmax loss
        scale = 4.0 if op.fused_softmax else 1.0
        return (normal(n, d_out, scale=scale), _targets(rng, n, d_out, dtype, probabilities)), []
    if role == "loss_backward":  # (d, h or p, t)
        first = _targets(rng, n, d_out, dtype, probabilities=True) if op.fused_softmax else normal(n, d_out)
        return (out(n, d_out), first, _targets(rng, n, d_out, dtype, probabilities)), [0]
    if role == "update":
        return (normal(n * d_out), normal(n * d_out), 0.1), [0]
    raise AssertionError(f"no test case for kernel {name} (role {role})")


def check_kernel(engine_name, name, rng, n, d_in, d_out, dtype):
    args, outputs = make_case(name, rng, n, d_in, d_out, dtype)
    ref_args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
    inputs_before = {m: a.copy() for m, a in enumerate(args) if isinstance(a, np.ndarray) and m not in outputs}
    result = getattr(get_engine(engine_name), name)(*args)
    expected = getattr(reference, name)(*ref_args)
    what = f"{engine_name}.{name} n={n} d_in={d_in} d_out={d_out} {np.dtype(dtype).name}"
    if not outputs:  # a loss: compare the returned scalars
        assert_close(np.array(result), np.array(expected), dtype, what)
    for m in outputs:
        assert args[m].dtype == np.dtype(dtype), what
        assert np.isfinite(args[m]).all(), f"{what}: some output slot was not written"
        assert_close(args[m], ref_args[m], dtype, what)
    for m, before in inputs_before.items():
        np.testing.assert_array_equal(args[m], before, err_msg=f"{what}: input {m} was modified")


def test_every_kernel_has_a_test_case(rng):
    for name in KERNEL_NAMES:
        make_case(name, rng, 2, 3, 4, np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("engine_name", LOOP_ENGINES)
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_matches_reference_on_edge_shapes(engine_name, name, dtype, rng):
    for n, d_in, d_out in EDGE_SHAPES:
        check_kernel(engine_name, name, rng, n, d_in, d_out, dtype)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(KERNEL_NAMES),
    engine_name=st.sampled_from(LOOP_ENGINES),
    dtype=st.sampled_from(DTYPES),
    n=st.integers(1, 70),
    d_in=st.integers(1, 20),
    d_out=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_matches_reference_on_random_shapes(name, engine_name, dtype, n, d_in, d_out, seed):
    check_kernel(engine_name, name, np.random.default_rng(seed), n, d_in, d_out, dtype)


@pytest.mark.parametrize("engine_name", nbmlp.ENGINES)
def test_sigmoid_is_stable_at_large_magnitudes(engine_name):
    z = np.array([[-1000.0, -40.0, 0.0, 40.0, 1000.0]])
    h = np.empty_like(z)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # overflow would raise
        get_engine(engine_name).sigmoid_forward(h, z)
    np.testing.assert_array_equal(h[0, [0, 2, 4]], [0.0, 0.5, 1.0])
    assert 0.0 < h[0, 1] < 1e-17 and 1.0 - 1e-15 < h[0, 3] <= 1.0


@pytest.mark.parametrize("engine_name", nbmlp.ENGINES)
def test_softmax_and_cross_entropy_are_stable_at_large_logits(engine_name):
    ops = get_engine(engine_name)
    z = np.array([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, -999.0]])
    t = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    p = np.empty_like(z)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ops.softmax_forward(p, z)
        loss = ops.softmax_cross_entropy_loss(z, t)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    # row 1: p = (1, e^-1000, 0) -> -log p_1 = 0; row 2: logits (-1000, -1000, -999):
    # -log p_3 = log(1 + 2/e) exactly, by hand.  Mean over the two rows.  lse is
    # formed at magnitude ~1000 (ulp 1.1e-13) before z is subtracted, hence 1e-12:
    np.testing.assert_allclose(loss, np.log(1.0 + 2.0 / np.e) / 2.0, rtol=1e-12)
