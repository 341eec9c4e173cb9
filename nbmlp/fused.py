r"""Full-batch training with the whole epoch loop compiled: the fast path of ``MLP.fit``.

:func:`fit_full_batch` runs ``epochs`` steps of plain full-batch gradient descent,
W_l <- W_l - lr ∂L/∂W_l and b_l <- b_l - lr ∂L/∂b_l, and returns the loss of
every epoch (each computed before that epoch's update, as ``MLP.fit`` records
it).  :mod:`nbmlp.training` calls it when a run is plain full-batch SGD with
nothing to do between epochs.  The formulas are those of :mod:`nbmlp.kernels`;
what differs is where the loops live:

* **Small networks** (at most :data:`SMALL_MAX_WORK` multiply-adds per forward
  pass, e.g. the note's 4-5-3 on Iris) run every epoch inside one compiled
  function (:func:`_train_small`), serial: no Python between kernels, no
  parallel-region start-up, no allocation per epoch.  Three more changes:

  - the batch is stored **transposed** (one row per unit, n samples along the
    row), so with d = 3..5 units every loop still runs n long, unit stride,
    over samples: it vectorizes where a row of 5 cannot;
  - the input sigmoid h0 = σ(X) does not change between epochs: it is
    computed once per call;
  - the sigmoid uses the tuned tier's vectorizable exp
    (:func:`nbmlp.kernels_tuned.exp_nonpositive`);
  - sums over samples (∂L/∂W, ∂L/∂b) keep eight interleaved partial sums
    (i mod 8) added at the end, so eight independent FMA chains overlap;
    in float32 they accumulate in float32, as the tuned tier does.

* **Larger networks** run the epoch loop in Python over the kernels of the
  tuned tier (:mod:`nbmlp.kernels_tuned`), which choose serial or parallel by
  the work of each call; σ(X) is still computed once and every buffer is
  allocated once.  Here a kernel call takes milliseconds, so the Python
  between calls costs nothing measurable.

Results agree with ``MLP.fit`` on the literal ``"loops"`` engine up to
rounding (the sums are the same, a few are added in another order and
multiply-adds are fused); the tests hold the loss trajectories and the final
parameters to 1e-10 in float64.

Developer note: Numba's on-disk cache of :func:`_train_small` is keyed by this
file only, not by the tuned-tier helpers it inlines; after editing
``kernels_tuned.py``, delete ``nbmlp/__pycache__/fused.*`` (or touch this file).

If a loss or a gradient becomes NaN or infinite, the parameters that gave the
last finite loss are put back and ``FloatingPointError`` is raised, as
``MLP.fit`` does; the finite losses of the epochs before are appended to
``net.loss_history`` (as the Python loop would have) and attached to the error
as ``losses``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import kernels_tuned as tuned
from .kernels_tuned import TILE_COLS, TUNED_FLAGS, _tile, exp_nonpositive, sigmoid_fast

#: Activation and loss names -> the codes the compiled loop branches on.
ACTIVATION_CODES = {"identity": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "softmax": 4}
LOSS_CODES = {"half_sse": 0, "mse": 1, "cross_entropy": 2}

#: Networks with at most this many multiply-adds per forward pass,
#: n * Σ_l d_{l-1} d_l, train in the compiled serial loop; larger ones over the
#: tuned kernels, which can use every core.  Measured on 64-128-10 (2 cores,
#: the sweep in bench/RESULTS.md): the serial compiled loop wins up to n = 32
#: (0.3 M), the two tie at n = 128 (1.2 M), the kernels win from n = 512 (4.8 M).
SMALL_MAX_WORK = 1 << 20


def supports(net) -> bool:
    """True when :func:`fit_full_batch` can train ``net`` (every activation and loss of nbmlp)."""
    return (net.loss_name in LOSS_CODES and all(a in ACTIVATION_CODES for a in net.activations)
            and net.dtype in (np.dtype(np.float64), np.dtype(np.float32)))


def forward_work(net, n: int) -> int:
    """Multiply-adds of one forward pass on n samples: n Σ_l d_{l-1} d_l."""
    return n * sum(a * b for a, b in zip(net.sizes[:-1], net.sizes[1:]))


# ---------------------------------------------------------------------------
# The compiled loop for small networks (batch stored transposed: unit x sample)
# ---------------------------------------------------------------------------


@njit(inline="always", **TUNED_FLAGS)
def _dot(x, y, zero):
    r"""Σ_i x_i y_i as eight interleaved partial sums (i mod 8), added pairwise at the end.

    Accumulated in the type of ``zero`` (the arrays' dtype: float32 sums stay
    float32, as in the tuned tier; converting each term to float64 costs more
    than the multiply-add here).
    """
    n = x.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
    i = 0
    while i + 8 <= n:
        s0 += x[i] * y[i]
        s1 += x[i + 1] * y[i + 1]
        s2 += x[i + 2] * y[i + 2]
        s3 += x[i + 3] * y[i + 3]
        s4 += x[i + 4] * y[i + 4]
        s5 += x[i + 5] * y[i + 5]
        s6 += x[i + 6] * y[i + 6]
        s7 += x[i + 7] * y[i + 7]
        i += 8
    while i < n:
        s0 += x[i] * y[i]
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(inline="always", **TUNED_FLAGS)
def _sum(x, zero):
    r"""Σ_i x_i, eight interleaved partial sums as in :func:`_dot`, in the type of ``zero``."""
    n = x.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
    i = 0
    while i + 8 <= n:
        s0 += x[i]
        s1 += x[i + 1]
        s2 += x[i + 2]
        s3 += x[i + 3]
        s4 += x[i + 4]
        s5 += x[i + 5]
        s6 += x[i + 6]
        s7 += x[i + 7]
        i += 8
    while i < n:
        s0 += x[i]
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(inline="always", **TUNED_FLAGS)
def _combine_rows(row, X, w):
    r"""row_i = Σ_j w_j X_ji, j ascending, vectorized over i; four terms of the sum per pass over the row.

    X: (m, n) rows, w: (m,) weights (a column of W, or a row of W).  Adding
    four terms per pass loads and stores ``row`` m/4 times instead of m times.
    """
    m = X.shape[0]
    n = row.shape[0]
    x0 = X[0]
    w0 = w[0]
    for i in range(n):
        row[i] = x0[i] * w0
    j = 1
    while j + 4 <= m:
        x0, x1, x2, x3 = X[j], X[j + 1], X[j + 2], X[j + 3]
        w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
        for i in range(n):
            row[i] = (((row[i] + x0[i] * w0) + x1[i] * w1) + x2[i] * w2) + x3[i] * w3
        j += 4
    while j < m:
        x0 = X[j]
        w0 = w[j]
        for i in range(n):
            row[i] += x0[i] * w0
        j += 1


@njit(inline="always", **TUNED_FLAGS)
def _activation_backward(row, h, act):
    """row_i <- row_i act'(z_i), written with the saved output h (as the literal kernels do)."""
    if act == 1:  # sigmoid: dh * h * (1 - h)
        for i in range(row.shape[0]):
            row[i] = row[i] * h[i] * (1.0 - h[i])
    elif act == 2:  # tanh: dh * (1 - h^2)
        for i in range(row.shape[0]):
            row[i] = row[i] * (1.0 - h[i] * h[i])
    elif act == 3:  # relu: dh * [h > 0]
        for i in range(row.shape[0]):
            row[i] = row[i] if h[i] > 0.0 else 0.0


@njit(inline="always", **TUNED_FLAGS)
def _product(C, A, a_transposed, B, no_bias):
    r"""C = A·B (or Aᵀ·B) with the tuned tier's 8 x 8 register tile, one panel of columns at a time."""
    R, Q = C.shape
    for c0 in range(0, Q, TILE_COLS):
        _tile(C, A, a_transposed, B, no_bias, 0, R, c0, min(Q, c0 + TILE_COLS))


@njit(inline="always", **TUNED_FLAGS)
def _transpose_into(out, a):
    """out[q, p] = a[p, q]."""
    P, Q = a.shape
    for p in range(P):
        for q in range(Q):
            out[q, p] = a[p, q]


#: A layer with at least this many units on both sides uses the register-tiled
#: products; narrower ones (the note's 4-5-3) the plain loops below.
WIDE = 8


@njit(**TUNED_FLAGS)
def _train_small(theta, snapshot, have_snapshot, sizes, acts, loss_code, h0T, h0, TT, epochs, lr, losses,
                 zero):
    r"""``epochs`` steps of full-batch gradient descent on the flat parameters ``theta``.

    theta: W_1 (d0 x d1, row-major), b_1, W_2, b_2, ... concatenated; snapshot:
    same size, the parameters before the last update (valid if have_snapshot).
    h0T: h0ᵀ (d0 x n), h0: the same values row-major (n x d0), TT: Tᵀ (dL x n).
    Writes losses[e] for each epoch run.  zero: 0 in the dtype (the type of the sums over samples).

    Layers at least :data:`WIDE` units wide on both sides compute their three
    products with the tuned tier's register tile (:func:`_product`): z_lᵀ =
    W_lᵀ·h_{l-1}ᵀ and (∂L/∂h_{l-1})ᵀ = W_l·(∂L/∂z_l)ᵀ run along the samples;
    ∂L/∂W_l takes a row-major copy of ∂L/∂z_l (or of h_{l-1}, computing ∂L/∂W_lᵀ,
    when d_out is the smaller side) so that its vector loop also runs along a
    row.  Narrower layers use the plain loops, whose sums over samples keep
    eight partial sums (:func:`_dot`).
    Returns 0, or the epoch (from 1) whose loss or gradient was not finite;
    theta then holds the snapshot again (when there was one).
    """
    L = sizes.shape[0] - 1
    n = h0T.shape[1]
    dtype = theta.dtype
    # offsets of W_l, b_l in theta and of h_l (unit x sample) in hbuf
    w_off = np.empty(L + 1, np.int64)
    b_off = np.empty(L + 1, np.int64)
    h_off = np.empty(L + 1, np.int64)
    pos = 0
    hpos = 0
    widest = 1
    for l in range(1, L + 1):
        w_off[l] = pos
        pos += sizes[l - 1] * sizes[l]
        b_off[l] = pos
        pos += sizes[l]
        h_off[l] = hpos
        hpos += sizes[l] * n
        widest = max(widest, sizes[l - 1], sizes[l])
    hbuf = np.empty(hpos, dtype)
    zL = np.empty((sizes[L], n), dtype)  # logits, kept for softmax + cross-entropy
    dz_a = np.empty(widest * n, dtype)
    dz_b = np.empty(widest * n, dtype)
    grad = np.empty_like(theta)
    row_max = np.empty(n, np.float64)
    row_sum = np.empty(n, np.float64)
    per_sample = np.empty(n, np.float64)
    row_major = np.empty(n * widest, dtype)  # a row-major copy of dL/dz_l or h_{l-1}
    gWT = np.empty(widest * widest, dtype)  # dL/dW_lᵀ when it is computed transposed
    no_bias = np.empty(0, dtype)

    for epoch in range(epochs):
        # -- forward: z_l = h_{l-1} W_l + b_l, h_l = act(z_l), one unit k (a row of h_lᵀ) at a time
        for l in range(1, L + 1):
            d_in, d_out = sizes[l - 1], sizes[l]
            W = theta[w_off[l]:w_off[l] + d_in * d_out].reshape((d_in, d_out))
            b = theta[b_off[l]:b_off[l] + d_out]
            h_in = h0T if l == 1 else hbuf[h_off[l - 1]:h_off[l - 1] + d_in * n].reshape((d_in, n))
            h_out = hbuf[h_off[l]:h_off[l] + d_out * n].reshape((d_out, n))
            act = acts[l - 1]
            wide = d_in >= WIDE and d_out >= WIDE
            if wide:  # z_lᵀ = W_lᵀ h_{l-1}ᵀ, Σ_j ascending, register-tiled
                _product(h_out, W, True, h_in, no_bias)
            for k in range(d_out):
                row = h_out[k]
                if not wide:  # Σ_j h_ij w_jk, ascending j, vectorized over the samples i
                    _combine_rows(row, h_in, W[:, k])
                bk = b[k]
                if act == 1:
                    for i in range(n):
                        row[i] = sigmoid_fast(np.float64(row[i] + bk))
                elif act == 2:
                    for i in range(n):
                        row[i] = math.tanh(row[i] + bk)
                elif act == 3:
                    for i in range(n):
                        zi = row[i] + bk
                        row[i] = zi if zi > 0.0 else 0.0
                elif act == 4:
                    zrow = zL[k]
                    for i in range(n):
                        zrow[i] = row[i] + bk
                else:
                    for i in range(n):
                        row[i] = row[i] + bk
            if act == 4:  # softmax over the units k of each sample i, shifted by the maximum
                for i in range(n):
                    row_max[i] = zL[0, i]
                for k in range(1, d_out):
                    for i in range(n):
                        if zL[k, i] > row_max[i]:
                            row_max[i] = zL[k, i]
                for i in range(n):
                    row_sum[i] = 0.0
                for k in range(d_out):
                    for i in range(n):
                        e = exp_nonpositive(np.float64(zL[k, i]) - row_max[i])
                        h_out[k, i] = e
                        row_sum[i] += e
                for k in range(d_out):
                    for i in range(n):
                        h_out[k, i] = h_out[k, i] / row_sum[i]

        # -- loss, before the update
        d_L = sizes[L]
        h_L = hbuf[h_off[L]:h_off[L] + d_L * n].reshape((d_L, n))
        for i in range(n):
            per_sample[i] = 0.0
        if loss_code == 2:  # L = 1/n Σ_i Σ_k t_ik (lse_i - z_ik)
            for i in range(n):
                row_sum[i] = row_max[i] + math.log(row_sum[i])  # now lse_i
            for k in range(d_L):
                for i in range(n):
                    per_sample[i] += TT[k, i] * (row_sum[i] - zL[k, i])
            loss = _sum(per_sample, 0.0) / n
        else:  # Σ_i Σ_k (t_ik - h_ik)^2, halved (half_sse) or divided by n d (mse)
            for k in range(d_L):
                for i in range(n):
                    diff = np.float64(TT[k, i]) - np.float64(h_L[k, i])
                    per_sample[i] += diff * diff
            loss = _sum(per_sample, 0.0)
            loss = 0.5 * loss if loss_code == 0 else loss / (n * d_L)

        # -- dL/dz_L
        dz = dz_a[:d_L * n].reshape((d_L, n))
        for k in range(d_L):
            if loss_code == 2:  # (p - t) / n, softmax and cross-entropy together
                for i in range(n):
                    dz[k, i] = (h_L[k, i] - TT[k, i]) / n
            else:
                scale = 1.0 if loss_code == 0 else 2.0 / (n * d_L)
                for i in range(n):
                    dz[k, i] = scale * (h_L[k, i] - TT[k, i])
                _activation_backward(dz[k], h_L[k], acts[L - 1])

        # -- backward, l = L .. 1
        use_a = True
        for l in range(L, 0, -1):
            d_in, d_out = sizes[l - 1], sizes[l]
            W = theta[w_off[l]:w_off[l] + d_in * d_out].reshape((d_in, d_out))
            h_in = h0T if l == 1 else hbuf[h_off[l - 1]:h_off[l - 1] + d_in * n].reshape((d_in, n))
            gW = grad[w_off[l]:w_off[l] + d_in * d_out].reshape((d_in, d_out))
            gb = grad[b_off[l]:b_off[l] + d_out]
            wide = d_in >= WIDE and d_out >= WIDE
            if not wide:
                for j in range(d_in):  # dL/dw_jk = Σ_i dL/dz_ik h_ij
                    for k in range(d_out):
                        gW[j, k] = _dot(dz[k], h_in[j], zero)
            elif d_out >= d_in:  # dL/dW = h_{l-1}ᵀ·dz with dz copied row-major (n x d_out)
                dz_rows = row_major[:n * d_out].reshape((n, d_out))
                _transpose_into(dz_rows, dz)
                _product(gW, h_in, False, dz_rows, no_bias)
            else:  # dL/dWᵀ = dzᵀ·h_{l-1}, h_{l-1} row-major (n x d_in), then transposed into gW
                if l == 1:
                    h_rows = h0
                else:
                    h_rows = row_major[:n * d_in].reshape((n, d_in))
                    _transpose_into(h_rows, h_in)
                gW_t = gWT[:d_out * d_in].reshape((d_out, d_in))
                _product(gW_t, dz, False, h_rows, no_bias)
                _transpose_into(gW, gW_t)
            for k in range(d_out):  # dL/db_k = Σ_i dL/dz_ik
                gb[k] = _sum(dz[k], zero)
            if l > 1:  # dL/dh_ij = Σ_k dL/dz_ik w_jk, then through act' of layer l - 1
                dz_prev = (dz_b if use_a else dz_a)[:d_in * n].reshape((d_in, n))
                if wide:  # (dL/dh)ᵀ = W·dzᵀ, Σ_k ascending, register-tiled
                    _product(dz_prev, W, False, dz, no_bias)
                for j in range(d_in):
                    row = dz_prev[j]
                    if not wide:  # Σ_k dL/dz_ik w_jk, ascending k
                        _combine_rows(row, dz, W[j])
                    _activation_backward(row, h_in[j], acts[l - 2])
                dz = dz_prev
                use_a = not use_a

        # -- the guard, then theta <- theta - lr grad (keeping theta as the snapshot)
        finite = math.isfinite(loss)
        for m in range(grad.shape[0]):
            if not math.isfinite(grad[m]):
                finite = False
        losses[epoch] = loss
        if not finite:
            if have_snapshot:
                for m in range(theta.shape[0]):
                    theta[m] = snapshot[m]
            return epoch + 1
        for m in range(theta.shape[0]):
            snapshot[m] = theta[m]
            theta[m] = theta[m] - lr * grad[m]
        have_snapshot = True
    return 0


# ---------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------


def _flatten(net):
    return np.concatenate([a.reshape(-1) for W, b in zip(net.W, net.b) for a in (W, b)]).astype(net.dtype)


def _unflatten(net, theta) -> None:
    pos = 0
    for W, b in zip(net.W, net.b):
        W[...] = theta[pos:pos + W.size].reshape(W.shape)
        pos += W.size
        b[...] = theta[pos:pos + b.size]
        pos += b.size


def _non_finite(net, epoch, loss, lr, losses):
    """The error to raise; the finite losses before it go to net.loss_history first (see fit_full_batch)."""
    finite = np.asarray(losses, dtype=np.float64)
    net.loss_history.extend(finite.tolist())
    err = FloatingPointError(
        f"the loss or a gradient became non-finite at epoch {epoch} (loss={loss}; lr={lr} may be too large); "
        f"the parameters of the last finite loss were restored")
    err.losses = finite
    return err


def _fit_small(net, X, T, epochs, lr, callback):
    if net.input_sigmoid:
        h0 = np.empty_like(X)
        tuned.sigmoid_forward(h0, X)
    else:
        h0 = X
    h0T = np.ascontiguousarray(h0.T)
    TT = np.ascontiguousarray(T.T)
    theta = _flatten(net)
    snapshot = theta.copy()
    sizes = np.asarray(net.sizes, dtype=np.int64)
    acts = np.asarray([ACTIVATION_CODES[a] for a in net.activations], dtype=np.int64)
    loss_code = LOSS_CODES[net.loss_name]
    losses = np.empty(epochs, dtype=np.float64)
    if callback is None:
        failed = _train_small(theta, snapshot, False, sizes, acts, loss_code, h0T, h0, TT, epochs, lr, losses,
                               net.dtype.type(0))
        _unflatten(net, theta)
        if failed:
            raise _non_finite(net, failed, losses[failed - 1], lr, losses[:failed - 1])
        return losses
    for epoch in range(epochs):  # one compiled epoch per call, so the callback sees every epoch
        failed = _train_small(theta, snapshot, epoch > 0, sizes, acts, loss_code, h0T, h0, TT, 1, lr,
                              losses[epoch:epoch + 1], net.dtype.type(0))
        _unflatten(net, theta)
        if failed:
            raise _non_finite(net, epoch + 1, losses[epoch], lr, losses[:epoch])
        callback(epoch + 1, float(losses[epoch]))
    return losses


def _fit_kernels(net, X, T, epochs, lr, callback):
    """The epoch loop in Python over the tuned kernels; buffers allocated once, σ(X) computed once."""
    from .network import ACTIVATIONS, LOSSES

    ops = tuned
    spec = LOSSES[net.loss_name]
    n = X.shape[0]
    L = net.n_layers
    if net.input_sigmoid:
        h0 = np.empty_like(X)
        ops.sigmoid_forward(h0, X)
    else:
        h0 = X
    z = [None] + [np.empty((n, d), net.dtype) for d in net.sizes[1:]]
    h = [h0] + [np.empty((n, d), net.dtype) for d in net.sizes[1:]]
    dz = [None] + [np.empty((n, d), net.dtype) for d in net.sizes[1:]]
    dh = [None] + [np.empty((n, d), net.dtype) for d in net.sizes[1:]]
    dW = [np.empty_like(W) for W in net.W]
    db = [np.empty_like(b) for b in net.b]
    forward = [getattr(ops, ACTIVATIONS[a][0]) for a in net.activations]
    backward = [None if ACTIVATIONS[a][1] is None else getattr(ops, ACTIVATIONS[a][1]) for a in net.activations]
    loss_kernel = getattr(ops, spec.loss_kernel)
    loss_backward = getattr(ops, spec.backward_kernel)
    params = [a.reshape(-1) for a in net.W + net.b]
    grads = [a.reshape(-1) for a in dW + db]
    snapshot = [p.copy() for p in params]
    have_snapshot = False
    losses = np.empty(epochs, dtype=np.float64)
    for epoch in range(epochs):
        for l in range(1, L + 1):
            ops.linear_forward(z[l], h[l - 1], net.W[l - 1], net.b[l - 1])
            forward[l - 1](h[l], z[l])
        loss = float(loss_kernel(z[L] if spec.fused_softmax else h[L], T))
        if spec.fused_softmax:
            loss_backward(dz[L], h[L], T)
        else:
            loss_backward(dh[L], h[L], T)
        for l in range(L, 0, -1):
            if not (spec.fused_softmax and l == L):
                backward[l - 1](dz[l], dh[l], h[l])
            ops.linear_backward_weight(dW[l - 1], dz[l], h[l - 1])
            ops.linear_backward_bias(db[l - 1], dz[l])
            if l > 1:
                ops.linear_backward_input(dh[l - 1], dz[l], net.W[l - 1])
        losses[epoch] = loss
        if not (math.isfinite(loss) and all(np.isfinite(g).all() for g in grads)):
            if have_snapshot:
                for p, s in zip(params, snapshot):
                    p[...] = s
            raise _non_finite(net, epoch + 1, loss, lr, losses[:epoch])
        for p, s, g in zip(params, snapshot, grads):
            np.copyto(s, p)
            ops.sgd_update(p, g, lr)
        have_snapshot = True
        if callback is not None:
            callback(epoch + 1, loss)
    return losses


def fit_full_batch(net, X, T, epochs: int, lr: float, *, callback=None) -> np.ndarray:
    """Train ``net`` in place by full-batch gradient descent; returns the per-epoch losses (float64).

    X: (n, d0) and T: (n, dL), C-contiguous, in the net's dtype (already
    checked); ``epochs`` >= 1, ``lr`` > 0.  Each loss is computed before that
    epoch's update.  ``callback(epoch, loss)``, if given, runs after every
    epoch with the parameters already updated (small networks then run one
    compiled epoch per call).  Raises ``FloatingPointError`` (parameters of the
    last finite loss restored) when a loss or gradient is not finite; the
    finite losses of the epochs before are then appended to
    ``net.loss_history`` (on success the caller appends the returned losses)
    and also attached to the error as ``err.losses``.
    """
    if not supports(net):
        raise ValueError(f"nbmlp.fused does not support {net!r}")
    epochs = int(epochs)
    lr = float(lr)
    if forward_work(net, X.shape[0]) <= SMALL_MAX_WORK:
        return _fit_small(net, X, T, epochs, lr, callback)
    return _fit_kernels(net, X, T, epochs, lr, callback)
