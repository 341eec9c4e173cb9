"""The update-rule kernels of nbmlp.optim against their NumPy twins, and the optimizers built on them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, FD_EPS, FD_REL_TOL, REL_TOL, assert_close, rel_err

from nbmlp import ops, optim, parallel, reference

#: Flat parameter sizes: single entries, odd sizes, and one above the parallel threshold.
SIZES = (1, 2, 7, 130, parallel.PARALLEL_MIN_WORK + 3)

#: kernel name -> compilations to test (parallel, serial, the size-dispatching one).
COMPILATIONS = ("parallel", "serial", "auto")


def _kernel(name, compilation):
    parallel = getattr(optim, name)
    if compilation == "parallel":
        return parallel
    if compilation == "serial":
        return parallel.serial
    return getattr(optim.update_kernels("loops"), name)


def _state(rng, size, dtype):
    return rng.normal(size=size).astype(dtype)


#: A test value of each hyperparameter an update rule names.
HYPERPARAMETERS = {"momentum": 0.9, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}

#: The update rules whose kernels live in nbmlp.optim (the table's non-engine rules), by kernel name.
RULES = {rule.kernel: rule for rule in ops.OPTIMIZERS.values() if not rule.engine_kernel}


def _run_steps(name, kernel, param, state, grads, lr=0.05):
    """Apply ``len(grads)`` steps of kernel ``name`` to param and its state arrays (in place).

    An update rule's kernel is called as the table says: (theta, *state, g, lr, *hyperparameters[, t]).
    """
    for t, g in enumerate(grads, start=1):
        if name == "l2_gradient":  # g <- g + lambda theta
            kernel(g, param, 0.3)
            continue
        rule = RULES[name]
        kernel(param, *state, g, lr, *(HYPERPARAMETERS[h] for h in rule.hyperparameters),
               *((t,) if rule.step_count else ()))


def _warm_state(name, rng, size, dtype):
    """The rule's state arrays a few steps in (from zeros, by the twin): Adam's second moment stays >= 0."""
    state = [np.zeros(size, dtype) for _ in (RULES[name].state if name in RULES else ())]
    _run_steps(name, getattr(reference, name), _state(rng, size, dtype), state,
               [_state(rng, size, dtype) for _ in range(2)])
    return state


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("compilation", COMPILATIONS)
@pytest.mark.parametrize("name", [*RULES, "l2_gradient"])
def test_update_kernel_matches_reference(name, compilation, size, dtype, rng):
    param = _state(rng, size, dtype)
    state = _warm_state(name, rng, size, dtype)
    grads = [_state(rng, size, dtype) for _ in range(3)]
    grads_before = [g.copy() for g in grads]

    p_loop, s_loop, g_loop = param.copy(), [s.copy() for s in state], [g.copy() for g in grads]
    p_ref, s_ref, g_ref = param.copy(), [s.copy() for s in state], [g.copy() for g in grads]
    _run_steps(name, _kernel(name, compilation), p_loop, s_loop, g_loop)
    _run_steps(name, getattr(reference, name), p_ref, s_ref, g_ref)

    assert p_loop.dtype == dtype
    if name == "l2_gradient":  # writes the gradient; the parameter is read-only
        np.testing.assert_array_equal(p_loop, param)
        for a, b in zip(g_loop, g_ref, strict=True):
            assert_close(a, b, dtype, name)
        return
    # The update does not change the gradient it reads.
    for g, g0 in zip(g_loop, grads_before, strict=True):
        np.testing.assert_array_equal(g, g0)
    assert_close(p_loop, p_ref, dtype, f"{name} parameter")
    for k, (a, b) in enumerate(zip(s_loop, s_ref, strict=True)):
        assert_close(a, b, dtype, f"{name} state {k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", SIZES)
def test_l2_penalty_matches_reference(size, dtype, rng):
    param = _state(rng, size, dtype)
    expected = reference.l2_penalty(param)
    for kernel in (optim.l2_penalty, optim.l2_penalty.serial, optim.update_kernels("loops").l2_penalty):
        assert abs(kernel(param) - expected) <= REL_TOL[np.dtype(dtype)] * expected
    # independent of both implementations: ½ Σ θ² by Python floats
    by_hand = 0.5 * sum(float(v) ** 2 for v in param)
    assert abs(optim.l2_penalty(param) - by_hand) <= REL_TOL[np.dtype(dtype)] * by_hand


@pytest.mark.parametrize("name", list(RULES))
def test_parallel_and_serial_compilations_agree_bit_for_bit(name, rng):
    size = parallel.PARALLEL_MIN_WORK + 11
    param = rng.normal(size=size)
    state = _warm_state(name, rng, size, np.float64)
    grads = [rng.normal(size=size) for _ in range(2)]
    a_param, a_state = param.copy(), [s.copy() for s in state]
    b_param, b_state = param.copy(), [s.copy() for s in state]
    _run_steps(name, getattr(optim, name), a_param, a_state, [g.copy() for g in grads])
    _run_steps(name, getattr(optim, name).serial, b_param, b_state, [g.copy() for g in grads])
    np.testing.assert_array_equal(a_param, b_param)
    for a, b in zip(a_state, b_state, strict=True):
        np.testing.assert_array_equal(a, b)


def test_l2_gradient_is_the_derivative_of_the_penalty(rng):
    """Central differences of lambda · ½ Σ θ² agree with the term l2_gradient adds."""
    theta = rng.normal(size=9)
    lam = 0.37
    added = np.zeros_like(theta)
    optim.l2_gradient(added, theta, lam)
    numeric = np.empty_like(theta)
    for m in range(theta.size):
        plus, minus = theta.copy(), theta.copy()
        plus[m] += FD_EPS
        minus[m] -= FD_EPS
        numeric[m] = lam * (optim.l2_penalty(plus) - optim.l2_penalty(minus)) / (2 * FD_EPS)
    assert rel_err(added, numeric) <= FD_REL_TOL


def test_momentum_hand_worked_two_steps():
    # θ = 1, v = 0, lr = 0.1, μ = 0.5, g = 2 then g = -1:
    # step 1: v = 0.5·0 - 0.1·2 = -0.2;  θ = 1 - 0.2 = 0.8
    # step 2: v = 0.5·(-0.2) - 0.1·(-1) = 0.0;  θ = 0.8
    theta, v = np.array([1.0]), np.array([0.0])
    optim.momentum_update(theta, v, np.array([2.0]), 0.1, 0.5)
    assert theta[0] == pytest.approx(0.8, abs=1e-15) and v[0] == pytest.approx(-0.2, abs=1e-15)
    optim.momentum_update(theta, v, np.array([-1.0]), 0.1, 0.5)
    assert theta[0] == pytest.approx(0.8, abs=1e-15) and v[0] == pytest.approx(0.0, abs=1e-15)


def test_nesterov_hand_worked_step():
    # θ = 1, v = 0.4, lr = 0.1, μ = 0.5, g = 2:  v = 0.2 - 0.2 = 0;  θ = 1 + 0.5·0 - 0.2 = 0.8
    # (heavy-ball would give θ = 1 + 0 = 1: the two rules differ)
    theta, v = np.array([1.0]), np.array([0.4])
    optim.nesterov_update(theta, v, np.array([2.0]), 0.1, 0.5)
    assert theta[0] == pytest.approx(0.8, abs=1e-15) and v[0] == pytest.approx(0.0, abs=1e-15)


def test_adam_first_step_is_lr_times_sign_of_gradient():
    # At t = 1 the bias corrections make m_hat = g and v_hat = g², so the step is
    # lr · g / (|g| + ε) ≈ lr · sign(g) whatever the size of g (Kingma & Ba 2015, §2).
    g = np.array([3.0, -1e-3, 250.0, 0.0])
    theta = np.zeros(4)
    m1, m2 = np.zeros(4), np.zeros(4)
    optim.adam_update(theta, m1, m2, g, 0.01, 0.9, 0.999, 1e-8, 1)
    np.testing.assert_allclose(theta, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-14, atol=0)
    np.testing.assert_allclose(m1, 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(m2, 0.001 * g * g, rtol=1e-13)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
@pytest.mark.parametrize("engine", ["loops", "loops-serial", "numpy"])
def test_optimizers_reduce_a_quadratic(name, engine):
    """Each optimizer walks f(θ) = ½ Σ a_m θ_m² (gradient a ⊙ θ) toward 0, keeping its state across steps."""
    a = np.array([1.0, 3.0, 0.5])
    params = [np.array([[1.0, -2.0, 0.5]]), np.array([0.3])]
    opt = optim.make_optimizer(name, engine=engine)
    f0 = 0.5 * float(np.sum(a * params[0][0] ** 2) + params[1][0] ** 2)
    for _ in range(200):
        grads = [a * params[0], params[1].copy()]
        opt.step(params, grads, 0.05)
    f = 0.5 * float(np.sum(a * params[0][0] ** 2) + params[1][0] ** 2)
    assert opt.t == 200
    assert f < 1e-2 * f0


def test_optimizer_engines_give_the_same_trajectory(rng):
    start = rng.normal(size=(3, 2))
    for name in optim.OPTIMIZERS:
        ends = {}
        for engine in ("loops", "numpy"):
            params = [start.copy()]
            opt = optim.make_optimizer(name, engine=engine)
            for _ in range(5):
                opt.step(params, [np.sin(params[0]) + 0.1], 0.1)
            ends[engine] = params[0]
        assert rel_err(ends["loops"], start) > 1e-3  # it moved
        assert_close(ends["loops"], ends["numpy"], np.float64, name)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"name": "rmsprop"}, ValueError),
        ({"name": 3}, ValueError),
        ({"name": "momentum", "momentum": 1.0}, ValueError),
        ({"name": "nesterov", "momentum": -0.1}, ValueError),
        ({"name": "momentum", "momentum": "0.9"}, TypeError),
        ({"name": "adam", "beta1": 1.5}, ValueError),
        ({"name": "adam", "beta2": True}, TypeError),
        ({"name": "adam", "epsilon": 0.0}, ValueError),
    ],
)
def test_make_optimizer_rejects_bad_arguments(kwargs, error):
    name = kwargs.pop("name")
    with pytest.raises(error, match=r"optimizer|momentum|beta|epsilon"):
        optim.make_optimizer(name, **kwargs)
