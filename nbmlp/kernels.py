r"""The literal loop tier: one Numba loop nest per formula of the derivation.

Index letters, fixed for the whole package (as in the note):

* ``i`` -- sample, ``0 <= i < n`` (a row of every batch matrix);
* ``j`` -- input unit of a layer, ``0 <= j < d_in`` (a row of ``W``);
* ``k`` -- output unit of a layer, ``0 <= k < d_out`` (a column of ``W``).

Layer ``l`` computes ``z_l = h_{l-1} W_l + b_l`` and ``h_l = act(z_l)``; the
network's input layer is ``h_0 = sigma(z_0)`` with ``z_0 = X`` (or ``h_0 = X``).
Gradients are written ``dX`` for ``dL/dX``, as in llm.c: outputs come first in
every signature, then inputs, then scalars.

Each kernel is written so that it reads line by line against its formula.
``prange`` runs over an index whose slots the body *writes*; every ``Σ`` is a
private scalar accumulated serially, so results do not depend on the number of
threads.  Sums are accumulated in float64 whatever the array dtype, and the
result is rounded once when it is stored.

:mod:`nbmlp.reference` holds a vectorized NumPy twin of every function here,
with the same name and signature; the tests compare the two.
``docs/derivation.md`` derives every formula and sets it beside its loop nest.
Each kernel is compiled twice (see :mod:`nbmlp._jit`): ``f`` is parallel and
``f.serial`` is the same loop nest without threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import loop_kernel, scalar_helper

#: The slope a of leaky_relu for z <= 0 (h = a z).  Read by the kernels at compile time.
LEAKY_RELU_SLOPE = 0.01

# ---------------------------------------------------------------------------
# Scalar helpers
# ---------------------------------------------------------------------------


@scalar_helper
def sigmoid_scalar(z):
    r"""sigma(z) = 1 / (1 + e^{-z}), evaluated so that exp never overflows.

    For z >= 0, e^{-z} <= 1; for z < 0 the equal form e^{z} / (1 + e^{z}) is used.
    """
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# ---------------------------------------------------------------------------
# Activations: h_ik = act(z_ik) and dL/dz_ik = dL/dh_ik * act'(z_ik)
# ---------------------------------------------------------------------------


@loop_kernel
def sigmoid_forward(h, z):
    r"""h_ik = sigma(z_ik) = 1 / (1 + exp(-z_ik)).

    h, z: (n, d).  Stable for any finite z (no overflow at z = +-1000).
    """
    n, d = z.shape
    for i in prange(n):
        for k in range(d):
            h[i, k] = sigmoid_scalar(z[i, k])


@loop_kernel
def sigmoid_backward(dz, dh, h):
    r"""dL/dz_ik = dL/dh_ik * h_ik * (1 - h_ik)   (matrix form: dz = dh ⊙ h ⊙ (1 - h), element-wise).

    dz, dh, h: (n, d).  sigma'(z) = sigma(z) (1 - sigma(z)) = h (1 - h): the
    factor uses the saved *output* h.  (The note writes z(1 - z); that is wrong.)
    """
    n, d = h.shape
    for i in prange(n):
        for k in range(d):
            dz[i, k] = dh[i, k] * h[i, k] * (1.0 - h[i, k])


@loop_kernel
def tanh_forward(h, z):
    r"""h_ik = tanh(z_ik).

    h, z: (n, d).
    """
    n, d = z.shape
    for i in prange(n):
        for k in range(d):
            h[i, k] = math.tanh(z[i, k])


@loop_kernel
def tanh_backward(dz, dh, h):
    r"""dL/dz_ik = dL/dh_ik * (1 - h_ik^2)   since tanh'(z) = 1 - tanh(z)^2.

    dz, dh, h: (n, d).
    """
    n, d = h.shape
    for i in prange(n):
        for k in range(d):
            dz[i, k] = dh[i, k] * (1.0 - h[i, k] * h[i, k])


@loop_kernel
def relu_forward(h, z):
    r"""h_ik = max(z_ik, 0).

    h, z: (n, d).  Written so that a NaN in z stays NaN in h (a diverging run stays visible).
    """
    n, d = z.shape
    for i in prange(n):
        for k in range(d):
            h[i, k] = 0.0 if z[i, k] < 0.0 else z[i, k]


@loop_kernel
def relu_backward(dz, dh, h):
    r"""dL/dz_ik = dL/dh_ik * [h_ik > 0]   (relu'(0) is taken as 0).

    dz, dh, h: (n, d).
    """
    n, d = h.shape
    for i in prange(n):
        for k in range(d):
            dz[i, k] = dh[i, k] if h[i, k] > 0.0 else 0.0


@loop_kernel
def leaky_relu_forward(h, z):
    r"""h_ik = z_ik if z_ik > 0 else a z_ik,   a = LEAKY_RELU_SLOPE = 0.01.

    h, z: (n, d).
    """
    n, d = z.shape
    for i in prange(n):
        for k in range(d):
            h[i, k] = z[i, k] if z[i, k] > 0.0 else LEAKY_RELU_SLOPE * z[i, k]


@loop_kernel
def leaky_relu_backward(dz, dh, h):
    r"""dL/dz_ik = dL/dh_ik * (1 if h_ik > 0 else a)   (h > 0 exactly when z > 0, as a > 0).

    dz, dh, h: (n, d).  leaky_relu'(0) is taken as a.
    """
    n, d = h.shape
    for i in prange(n):
        for k in range(d):
            dz[i, k] = dh[i, k] if h[i, k] > 0.0 else LEAKY_RELU_SLOPE * dh[i, k]


@loop_kernel
def softplus_forward(h, z):
    r"""h_ik = log(1 + exp(z_ik)) = max(z_ik, 0) + log1p(exp(-|z_ik|)).

    h, z: (n, d).  The second form never overflows (exp(-|z|) <= 1) and keeps
    full precision where log(1 + e^z) would round 1 + e^z to 1.
    """
    n, d = z.shape
    for i in prange(n):
        for k in range(d):
            zik = z[i, k]
            h[i, k] = max(zik, 0.0) + math.log1p(math.exp(-abs(zik)))


@loop_kernel
def softplus_backward(dz, dh, h):
    r"""dL/dz_ik = dL/dh_ik * sigma(z_ik) = dL/dh_ik * (1 - exp(-h_ik)).

    dz, dh, h: (n, d).  softplus'(z) = sigma(z), and e^{-h} = 1 / (1 + e^z) =
    1 - sigma(z), so the factor comes from the saved output h; -expm1(-h) keeps
    its precision when h is small (z very negative).
    """
    n, d = h.shape
    for i in prange(n):
        for k in range(d):
            dz[i, k] = dh[i, k] * -math.expm1(-h[i, k])


@loop_kernel
def identity_forward(h, z):
    r"""h_ik = z_ik.

    h, z: (n, d).
    """
    n, d = z.shape
    for i in prange(n):
        for k in range(d):
            h[i, k] = z[i, k]


@loop_kernel
def identity_backward(dz, dh, h):
    r"""dL/dz_ik = dL/dh_ik.

    dz, dh, h: (n, d).
    """
    n, d = h.shape
    for i in prange(n):
        for k in range(d):
            dz[i, k] = dh[i, k]


@loop_kernel
def softmax_forward(p, z):
    r"""p_ik = exp(z_ik - m_i) / Σ_k' exp(z_ik' - m_i),   m_i = max_k z_ik.

    p, z: (n, d).  Subtracting the row maximum keeps every exp <= 1.
    Its backward is fused into :func:`softmax_cross_entropy_backward`.
    """
    n, d = z.shape
    for i in prange(n):
        m = z[i, 0]
        for k in range(1, d):
            if z[i, k] > m:
                m = z[i, k]
        s = 0.0
        for k in range(d):
            s += math.exp(z[i, k] - m)
        for k in range(d):
            p[i, k] = math.exp(z[i, k] - m) / s


# ---------------------------------------------------------------------------
# Linear layer: z = h_prev W + b and its three gradients
# ---------------------------------------------------------------------------


@loop_kernel
def linear_forward(z, h_prev, W, b):
    r"""z_ik = Σ_j h_ij w_jk + b_k            (matrix form: h_prev · W + 1_n b).

    z: (n, d_out), h_prev: (n, d_in), W: (d_in, d_out), b: (d_out,).
    The note writes b as an n x d_out matrix whose rows are all equal
    (b_1k = ... = b_nk); here it is the one row b_k, broadcast over i.
    """
    n, d_in = h_prev.shape
    d_out = W.shape[1]
    for i in prange(n):
        for k in range(d_out):
            acc = 0.0
            for j in range(d_in):
                acc += h_prev[i, j] * W[j, k]
            z[i, k] = acc + b[k]


@loop_kernel
def linear_backward_weight(dW, dz, h_prev):
    r"""dL/dw_jk = Σ_i dL/dz_ik h_ij          (matrix form: h_prevᵀ · dz).

    dW: (d_in, d_out), dz: (n, d_out), h_prev: (n, d_in).
    Parallel over j, the row of dW being written; the Σ over samples i is serial.
    """
    n, d_in = h_prev.shape
    d_out = dz.shape[1]
    for j in prange(d_in):
        for k in range(d_out):
            acc = 0.0
            for i in range(n):
                acc += dz[i, k] * h_prev[i, j]
            dW[j, k] = acc


@loop_kernel
def linear_backward_bias(db, dz):
    r"""dL/db_k = Σ_i dL/dz_ik                (matrix form: 1_nᵀ · dz, the column sums).

    db: (d_out,), dz: (n, d_out).  Parallel over the output unit k being written.
    """
    n, d_out = dz.shape
    for k in prange(d_out):
        acc = 0.0
        for i in range(n):
            acc += dz[i, k]
        db[k] = acc


@loop_kernel
def linear_backward_input(dh_prev, dz, W):
    r"""dL/dh_ij = Σ_k dL/dz_ik w_jk          (matrix form: dz · Wᵀ).

    dh_prev: (n, d_in), dz: (n, d_out), W: (d_in, d_out).
    Parallel over the sample i being written; the Σ over output units k is serial.
    """
    n, d_out = dz.shape
    d_in = W.shape[0]
    for i in prange(n):
        for j in range(d_in):
            acc = 0.0
            for k in range(d_out):
                acc += dz[i, k] * W[j, k]
            dh_prev[i, j] = acc


# ---------------------------------------------------------------------------
# Losses.  Each ``*_loss`` returns a float; each ``*_backward`` writes dL/d(out).
# Row sums are written in parallel, then added serially in row order, so the
# total does not depend on the thread count.
# ---------------------------------------------------------------------------


@loop_kernel
def half_sse_loss(h, t):
    r"""L = ½ Σ_i Σ_k (t_ik - h_ik)^2   -- the note's loss: a sum, not a mean.

    h, t: (n, d).
    """
    n, d = h.shape
    row = np.empty(n, dtype=np.float64)
    for i in prange(n):
        acc = 0.0
        for k in range(d):
            diff = t[i, k] - h[i, k]
            acc += diff * diff
        row[i] = acc
    total = 0.0
    for i in range(n):
        total += row[i]
    return 0.5 * total


@loop_kernel
def half_sse_backward(dh, h, t):
    r"""dL/dh_ik = h_ik - t_ik   for L = ½ ΣΣ (t - h)^2.

    dh, h, t: (n, d).
    """
    n, d = h.shape
    for i in prange(n):
        for k in range(d):
            dh[i, k] = h[i, k] - t[i, k]


@loop_kernel
def mse_loss(h, t):
    r"""L = 1/(n d) Σ_i Σ_k (t_ik - h_ik)^2   -- a mean over samples *and* outputs.

    h, t: (n, d).
    """
    n, d = h.shape
    row = np.empty(n, dtype=np.float64)
    for i in prange(n):
        acc = 0.0
        for k in range(d):
            diff = t[i, k] - h[i, k]
            acc += diff * diff
        row[i] = acc
    total = 0.0
    for i in range(n):
        total += row[i]
    return total / (n * d)


@loop_kernel
def mse_backward(dh, h, t):
    r"""dL/dh_ik = 2 (h_ik - t_ik) / (n d)   for L = 1/(n d) ΣΣ (t - h)^2.

    dh, h, t: (n, d).
    """
    n, d = h.shape
    scale = 2.0 / (n * d)
    for i in prange(n):
        for k in range(d):
            dh[i, k] = scale * (h[i, k] - t[i, k])


@loop_kernel
def softmax_cross_entropy_loss(z, t):
    r"""L = 1/n Σ_i Σ_k t_ik (lse_i - z_ik),  lse_i = m_i + log Σ_k exp(z_ik - m_i).

    z (logits), t: (n, d).  Equals -1/n Σ_i Σ_k t_ik log softmax(z)_ik -- a mean
    over samples, a sum over classes -- computed from the logits with the
    log-sum-exp shift m_i = max_k z_ik, so it cannot overflow or take log(0).
    """
    n, d = z.shape
    row = np.empty(n, dtype=np.float64)
    for i in prange(n):
        m = z[i, 0]
        for k in range(1, d):
            if z[i, k] > m:
                m = z[i, k]
        s = 0.0
        for k in range(d):
            s += math.exp(z[i, k] - m)
        lse = m + math.log(s)
        acc = 0.0
        for k in range(d):
            acc += t[i, k] * (lse - z[i, k])
        row[i] = acc
    total = 0.0
    for i in range(n):
        total += row[i]
    return total / n


@loop_kernel
def softmax_cross_entropy_backward(dz, p, t):
    r"""dL/dz_ik = (p_ik - t_ik) / n   with p = softmax(z), for rows of t summing to 1.

    dz, p, t: (n, d).  Softmax and cross-entropy are differentiated together,
    which is why this kernel writes dL/dz directly (no dL/dh step).
    """
    n, d = p.shape
    for i in prange(n):
        for k in range(d):
            dz[i, k] = (p[i, k] - t[i, k]) / n


# ---------------------------------------------------------------------------
# Plain gradient-descent step
# ---------------------------------------------------------------------------


@loop_kernel
def sgd_update(param, grad, lr):
    r"""theta_m <- theta_m - lr * dL/dtheta_m, for every entry m of a flattened parameter.

    param, grad: (m,) -- pass ``W.reshape(-1)`` (a view of a C-contiguous W).
    """
    (size,) = param.shape
    for m in prange(size):
        param[m] = param[m] - lr * grad[m]
