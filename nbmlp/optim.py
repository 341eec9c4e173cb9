r"""Update rules as loop kernels, and the optimizers that call them.

Every parameter array (``W_l``, ``b_l``) is updated through a flat view
``theta = W_l.reshape(-1)`` (C-contiguous, so a view), indexed by a single
index ``m``; the optimizer's state (velocity, moments) has the same flat shape.
Each kernel's outer loop is ``prange`` over m, the slot it writes; no kernel
reads a slot that another iteration writes, so results do not depend on the
number of threads.  Arithmetic is in float64 and rounded once when stored.

Kernels (the vectorized twins, same names and signatures, are at the end of
:mod:`nbmlp.reference`):

* :func:`l2_gradient`      -- g_m <- g_m + lambda theta_m (L2 weight decay, "coupled");
* :func:`l2_penalty`       -- ½ Σ_m theta_m^2 (the decay's share of the loss);
* :func:`momentum_update`  -- heavy-ball momentum;
* :func:`nesterov_update`  -- Nesterov's accelerated gradient;
* :func:`adam_update`      -- Adam with bias correction.

Each rule's formula for one slot is a scalar function (:func:`momentum_slot`,
:func:`nesterov_slot`, :func:`adam_slot`): these kernels loop over it, and so
does the compiled training loop (:mod:`nbmlp.compiled`), so the formulas are
written once.

The plain step ``theta_m <- theta_m - lr g_m`` is :func:`nbmlp.kernels.sgd_update`,
shared with every engine.

The momentum rules follow Sutskever, Martens, Dahl & Hinton, "On the importance
of initialization and momentum in deep learning", ICML 2013 (eqs. 1-4), in the
form scikit-learn's ``SGDOptimizer`` uses; Adam is Algorithm 1 of Kingma & Ba,
"Adam: A Method for Stochastic Optimization", ICLR 2015, written with the
bias-corrected moments m_hat and v_hat exactly as printed there.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import njit, prange

from . import ops, reference
from ._jit import JIT_FLAGS, VECTOR_FLAGS, compile_twice, loop_kernel, scalar_helper
from .engines import get_engine
from .parallel import call

# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------


@loop_kernel
def l2_gradient(grad, param, weight_decay):
    r"""g_m <- g_m + lambda theta_m   -- the gradient of (lambda/2) Σ_m theta_m^2 added to dL/dtheta.

    grad, param: (size,); weight_decay = lambda >= 0.
    """
    (size,) = param.shape
    for m in prange(size):
        grad[m] = grad[m] + weight_decay * param[m]


def _l2_penalty(param):
    r"""P = ½ Σ_m theta_m^2   (multiply by lambda for the decay term of the loss).

    param: (size,).  A single serial Σ: there is no slot to split over threads.
    """
    (size,) = param.shape
    acc = 0.0
    for m in range(size):
        theta = np.float64(param[m])
        acc += theta * theta
    return 0.5 * acc


# A sum has no written index to prange over, so both compilations are serial.
l2_penalty = njit(**JIT_FLAGS)(_l2_penalty)
l2_penalty.serial = l2_penalty


def update_kernel(py_func):
    """Compile an update rule's loop with :data:`nbmlp._jit.VECTOR_FLAGS` (no zero test before Adam's
    division, whose divisor is > 0: the loops vectorize), parallel with a serial twin at ``.serial``."""
    return compile_twice(py_func, VECTOR_FLAGS)


@scalar_helper
def momentum_slot(theta, v, g, lr, momentum):
    r"""One slot of heavy-ball momentum: returns (theta', v'), v' = mu v - lr g, theta' = theta + v'."""
    v = momentum * v - lr * g
    return theta + v, v


@scalar_helper
def nesterov_slot(theta, v, g, lr, momentum):
    r"""One slot of Nesterov momentum: returns (theta', v'), v' = mu v - lr g, theta' = theta + mu v' - lr g."""
    v = momentum * v - lr * g
    return theta + momentum * v - lr * g, v


@scalar_helper
def adam_scalars(lr, beta1, beta2, epsilon, t):
    r"""(step, eps_hat) of Adam's step t: the bias corrections moved out of the loop over slots.

    With c1 = 1 - beta1^t and c2 = 1 - beta2^t,
    lr m_hat / (sqrt(v_hat) + eps) = lr (m / c1) / (sqrt(v) / sqrt(c2) + eps)
    = step m / (sqrt(v) + eps_hat),  step = lr sqrt(c2) / c1,  eps_hat = eps sqrt(c2):
    the same quantity, with one square root and one division per slot instead of
    two of each (divisions and square roots are what an Adam step spends its time on).
    """
    root = math.sqrt(1.0 - beta2**t)
    return lr * root / (1.0 - beta1**t), epsilon * root


@scalar_helper
def adam_slot(theta, m1, m2, g, beta1, beta2, step, eps_hat):
    r"""One slot of Adam: returns (theta', m', v'), m' = b1 m + (1-b1) g, v' = b2 v + (1-b2) g^2,
    theta' = theta - step m' / (sqrt(v') + eps_hat), with (step, eps_hat) = :func:`adam_scalars`."""
    first = beta1 * m1 + (1.0 - beta1) * g
    second = beta2 * m2 + (1.0 - beta2) * g * g
    return theta - step * first / (math.sqrt(second) + eps_hat), first, second


@update_kernel
def momentum_update(param, velocity, grad, lr, momentum):
    r"""v_m <- mu v_m - lr g_m;   theta_m <- theta_m + v_m        (heavy-ball momentum).

    param, velocity, grad: (size,); lr > 0, 0 <= mu = momentum < 1.
    """
    (size,) = param.shape
    for m in prange(size):
        param[m], velocity[m] = momentum_slot(param[m], velocity[m], grad[m], lr, momentum)


@update_kernel
def nesterov_update(param, velocity, grad, lr, momentum):
    r"""v_m <- mu v_m - lr g_m;   theta_m <- theta_m + mu v_m - lr g_m   (Nesterov momentum).

    param, velocity, grad: (size,).  The look-ahead form of Sutskever et al. (2013),
    rewritten so that the gradient is taken at the stored theta (as scikit-learn does).
    """
    (size,) = param.shape
    for m in prange(size):
        param[m], velocity[m] = nesterov_slot(param[m], velocity[m], grad[m], lr, momentum)


@update_kernel
def adam_update(param, m1, m2, grad, lr, beta1, beta2, epsilon, t):
    r"""Adam, step t >= 1 (Kingma & Ba 2015, Algorithm 1):

        m_m <- beta1 m_m + (1 - beta1) g_m
        v_m <- beta2 v_m + (1 - beta2) g_m^2
        m_hat = m_m / (1 - beta1^t),   v_hat = v_m / (1 - beta2^t)
        theta_m <- theta_m - lr m_hat / (sqrt(v_hat) + epsilon)

    computed as :func:`adam_slot` (the bias corrections folded into two scalars,
    :func:`adam_scalars`).  param, m1 (first moment m), m2 (second moment v), grad: (size,).
    """
    (size,) = param.shape
    step, eps_hat = adam_scalars(lr, beta1, beta2, epsilon, t)
    for m in prange(size):
        param[m], m1[m], m2[m] = adam_slot(param[m], m1[m], m2[m], grad[m], beta1, beta2, step, eps_hat)


#: The update kernels of this module (each has a twin of the same name in nbmlp.reference),
#: from the table of operations (:func:`nbmlp.ops.update_kernel_names`).
UPDATE_KERNEL_NAMES = ops.update_kernel_names()


def _auto(kernel):
    def dispatch(param, *args):
        return call(kernel, param.shape[0], param, *args)

    dispatch.__name__ = kernel.__name__
    dispatch.__doc__ = kernel.__doc__
    return dispatch


def update_kernels(engine: str) -> SimpleNamespace:
    """The update kernels that go with a network engine.

    ``"numpy"`` gets the NumPy twins, ``"loops-serial"`` / ``"loops-parallel"``
    always the serial / parallel compilation, and every other engine the loop
    kernels, serial or parallel by the number of entries (:func:`nbmlp.parallel.call`).
    """
    g = globals()
    if engine == "numpy":
        return SimpleNamespace(**{name: getattr(reference, name) for name in UPDATE_KERNEL_NAMES})
    if engine == "loops-serial":
        return SimpleNamespace(**{name: g[name].serial for name in UPDATE_KERNEL_NAMES})
    if engine == "loops-parallel":
        return SimpleNamespace(**{name: g[name] for name in UPDATE_KERNEL_NAMES})
    return SimpleNamespace(**{name: _auto(g[name]) for name in UPDATE_KERNEL_NAMES})


# ---------------------------------------------------------------------------
# Optimizers: Python objects that own the state arrays and call the kernels
# ---------------------------------------------------------------------------


class Optimizer:
    """An update rule of the table (:data:`nbmlp.ops.OPTIMIZERS`) with its state: ``step(params, grads, lr)``.

    ``params`` and ``grads`` are equal-length lists of C-contiguous arrays
    (``net.W + net.b`` and the matching gradients); every array is updated in
    place through its flat view.  The rule's entry says everything the step
    needs: its kernel, called as ``kernel(theta, *state, g, lr, *hyperparameters)``
    (plus the step number t when ``step_count``), the names of its state lists
    (attributes of the optimizer, one array per parameter, created at the first
    step in the parameters' dtype and kept, so ``partial_fit`` continues where
    the last call stopped) and of its hyperparameters (attributes too).
    """

    name = "base"

    def __init__(self, engine: str = "loops", sgd_update=None, **hyperparameters):
        self.engine = engine
        self._ops = update_kernels(engine)
        self._sgd_update = sgd_update
        self.t = 0  # number of steps taken
        for h, value in hyperparameters.items():
            setattr(self, h, float(value))
        for s in self.rule.state:
            setattr(self, s, [])

    @property
    def rule(self) -> ops.UpdateRule:
        """This optimizer's entry of the table of operations."""
        return ops.OPTIMIZERS[self.name]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_ops")
        state["_sgd_update"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._ops = update_kernels(self.engine)

    def _plain_step(self, theta, g, lr):
        if self._sgd_update is None:
            try:
                self._sgd_update = get_engine(self.engine).sgd_update
            except ValueError:
                self._sgd_update = get_engine("loops").sgd_update
        self._sgd_update(theta, g, lr)

    def step(self, params, grads, lr: float) -> None:
        self.t += 1
        for index, (param, grad) in enumerate(zip(params, grads, strict=True)):
            self._update(index, param.reshape(-1), grad.reshape(-1), float(lr))

    def _update(self, index, theta, g, lr):
        rule = self.rule
        if rule.engine_kernel:  # the engine's own kernel (plain SGD)
            self._plain_step(theta, g, lr)
            return
        state = [getattr(self, s) for s in rule.state]
        if state and index == len(state[0]):
            for arrays in state:
                arrays.append(np.zeros_like(theta))
        getattr(self._ops, rule.kernel)(theta, *(arrays[index] for arrays in state), g, lr,
                                        *(getattr(self, h) for h in rule.hyperparameters),
                                        *((self.t,) if rule.step_count else ()))


class SGD(Optimizer):
    """theta <- theta - lr g (:func:`nbmlp.kernels.sgd_update`)."""

    name = "sgd"


class Momentum(Optimizer):
    """Heavy-ball momentum, or Nesterov's when ``nesterov=True``; ``momentum = 0`` is plain SGD."""

    name = "momentum"

    def __init__(self, momentum: float = 0.9, nesterov: bool = False, engine: str = "loops", sgd_update=None):
        if nesterov:
            self.name = "nesterov"
        super().__init__(engine, sgd_update, momentum=momentum)

    @property
    def nesterov(self) -> bool:
        return self.name == "nesterov"

    def _update(self, index, theta, g, lr):
        if self.momentum == 0.0:
            self._plain_step(theta, g, lr)
            return
        super()._update(index, theta, g, lr)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with the paper's defaults beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8."""

    name = "adam"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, engine: str = "loops",
                 sgd_update=None):
        super().__init__(engine, sgd_update, beta1=beta1, beta2=beta2, epsilon=epsilon)


#: Optimizer names, as accepted by nbmlp.training and ``--optimizer``: the update rules of
#: :data:`nbmlp.ops.OPTIMIZERS`.
OPTIMIZERS = tuple(ops.OPTIMIZERS)


def _check_unit_interval(value, name, *, closed_left=True):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number in [0, 1), got {value!r}")
    value = float(value)
    low_ok = value >= 0.0 if closed_left else value > 0.0
    if not (low_ok and value < 1.0):
        interval = "[0, 1)" if closed_left else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def _check_positive_finite(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


#: How each hyperparameter named by an update rule of the table is checked.
HYPERPARAMETER_CHECKS = {"momentum": _check_unit_interval, "beta1": _check_unit_interval,
                         "beta2": _check_unit_interval, "epsilon": _check_positive_finite}


def make_optimizer(name: str, *, engine: str = "loops", momentum: float = 0.9, beta1: float = 0.9,
                   beta2: float = 0.999, epsilon: float = 1e-8, sgd_update=None) -> Optimizer:
    """Build an optimizer by name: ``"sgd"``, ``"momentum"``, ``"nesterov"`` or ``"adam"``.

    Arguments are checked here, before any kernel runs.
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    given = {"momentum": momentum, "beta1": beta1, "beta2": beta2, "epsilon": epsilon}
    hyper = {h: HYPERPARAMETER_CHECKS[h](given[h], h) for h in ops.OPTIMIZERS[name].hyperparameters}
    if name == "sgd":
        return SGD(engine, sgd_update)
    if name in ("momentum", "nesterov"):
        return Momentum(hyper["momentum"], nesterov=(name == "nesterov"), engine=engine, sgd_update=sgd_update)
    return Adam(hyper["beta1"], hyper["beta2"], hyper["epsilon"], engine=engine, sgd_update=sgd_update)
