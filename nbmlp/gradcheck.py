r"""Gradient checking: backpropagation against central finite differences, for any network.

For every parameter entry theta_m (an entry w_jk of some W_l or b_k of some b_l)

    numeric_m  = (L(theta + eps e_m) - L(theta - eps e_m)) / (2 eps)          (central difference)
    analytic_m = dL/dtheta_m from net.gradients(X, T)                          (backpropagation)
    rel_m      = |analytic_m - numeric_m| / max(|analytic_m|, |numeric_m|, floor)

and :func:`gradcheck` reports max_m rel_m per parameter array.  The central
difference has truncation error O(eps^2) and rounding error O(machine eps |L| / eps),
about 1e-10 |L| in float64 at eps = 1e-6.  Relative to a large gradient entry that
is ~1e-9; relative to a tiny one it can reach ~1e-7, so a correct backpropagation
reports max errors below about 1e-6 (the CS231n rule of thumb: < 1e-7 fine, up to
1e-4 suspicious unless there are kinks).  Errors around 1e-2 or larger mean a wrong
formula; values in between often come from a kink (relu at 0) within eps of some z.

The check always runs in float64: a float32 network is copied to float64 first
(its float32 rounding would swamp the differences).  A float64 network is
perturbed in place, one entry at a time, and every entry is written back
exactly, so the network is unchanged afterwards.
"""

from __future__ import annotations

import numpy as np

from .validation import check_parameters, check_positive_float, check_positive_int, check_seed


def _float64_twin(net):
    from .network import MLP

    twin = MLP(net.sizes, dtype="float64", engine=net.engine, input_sigmoid=net.input_sigmoid,
               activation=list(net.activations), loss=net.loss_name)
    twin.W = [w.astype(np.float64) for w in net.W]
    twin.b = [b.astype(np.float64) for b in net.b]
    return twin


def gradcheck(net, X, T, *, eps: float = 1e-6, floor: float = 1e-8, max_entries: int | None = None,
              seed: int | None = 0, include_input: bool = False) -> dict:
    r"""Per-parameter max relative error between backpropagation and central differences.

    Parameters
    ----------
    net : nbmlp.MLP
        Any network (any sizes, activations, loss, engine).  It is left unchanged.
    X, T : array-like, (n, d0) and (n, dL)
        The batch whose loss L is differentiated.
    eps : float
        Step of the central difference.
    floor : float
        Smallest denominator of the relative error, so that entries whose
        gradient is (nearly) zero on both sides report an absolute error.
    max_entries : int or None
        Check at most this many randomly chosen entries per parameter array
        (seeded by ``seed``); ``None`` checks all of them.
    include_input : bool
        Also check dL/dX (``Gradients.dL_dz[0]``), reported as ``"X"``.

    Returns
    -------
    dict
        ``{"W1": err, "b1": err, "W2": err, ...}`` (1-based, the note's names),
        plus ``"X"`` if requested.

    Example
    -------
    >>> import nbmlp
    >>> X, y = nbmlp.load_iris()
    >>> errors = nbmlp.gradcheck(nbmlp.MLP((4, 5, 3), seed=0), X[:10], nbmlp.one_hot(y[:10], 3))
    >>> max(errors.values()) < 1e-6
    True
    """
    from .network import MLP

    if not isinstance(net, MLP):
        raise TypeError(f"net must be an nbmlp.MLP, got {type(net).__name__}")
    eps = check_positive_float(eps, "eps")
    floor = check_positive_float(floor, "floor")
    if max_entries is not None:
        max_entries = check_positive_int(max_entries, "max_entries")
    seed = check_seed(seed)
    check_parameters(net)
    work = net if net.dtype == np.float64 else _float64_twin(net)
    X = work.check_X(X)
    T = work.check_T(T, X.shape[0])
    rng = np.random.default_rng(seed)
    analytic = work.gradients(X, T)

    targets = []
    for l in range(work.n_layers):
        targets.append((f"W{l + 1}", work.W[l], analytic.W[l]))
        targets.append((f"b{l + 1}", work.b[l], analytic.b[l]))
    if include_input:
        targets.append(("X", X, analytic.dL_dz[0]))

    errors = {}
    for name, param, grad in targets:
        flat, flat_grad = param.reshape(-1), grad.reshape(-1)
        entries = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            entries = np.sort(rng.choice(flat.size, size=max_entries, replace=False))
        worst = 0.0
        for m in entries:
            saved = flat[m]
            flat[m] = saved + eps
            plus = work.loss(X, T)  # for name == "X", param is X itself
            flat[m] = saved - eps
            minus = work.loss(X, T)
            flat[m] = saved  # bit-exact restore
            numeric = (plus - minus) / (2.0 * eps)
            a = float(flat_grad[m])
            rel = abs(a - numeric) / max(abs(a), abs(numeric), floor)
            worst = max(worst, rel)
        errors[name] = worst
    return errors
