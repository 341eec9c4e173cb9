r"""Full-batch training with the whole epoch loop compiled, samples along the vectors: ``MLP.fit`` on small nets.

:func:`fit_full_batch` runs ``epochs`` steps of plain full-batch gradient descent,
W_l <- W_l - lr ∂L/∂W_l and b_l <- b_l - lr ∂L/∂b_l, and returns the loss of
every epoch (each computed before that epoch's update, as ``MLP.fit`` records
it).  :mod:`nbmlp.training` calls it when a run is plain full-batch SGD with
nothing to do between epochs, on a network of at most :data:`SMALL_MAX_WORK`
multiply-adds per forward pass (e.g. the note's 4-5-3 on Iris); every other run
trains in :mod:`nbmlp.compiled`.  The formulas are those of :mod:`nbmlp.kernels`;
what differs is where the loops live:

* Every epoch runs inside one compiled function (:func:`_train_small`), serial:
  no Python between kernels, no parallel-region start-up, no allocation per
  epoch.  More changes against the literal loops, each measured on 4-5-3,
  n = 150 (bench/RESULTS.md):

  - the batch is stored **transposed** (one row per unit, n samples along the
    row), so with d = 3..5 units every loop still runs n long, unit stride,
    over samples: it vectorizes where a row of 5 cannot;
  - the sample count is **padded** to a multiple of :data:`PAD` with zero
    inputs whose ∂L/∂z is set to 0 (they add exact zeros to every sum and are
    left out of the loss), so no vector loop ends in scalar iterations;
  - the input sigmoid h0 = σ(X) does not change between epochs: it is
    computed once per call;
  - the sigmoid uses the tuned tier's vectorizable exp
    (:func:`nbmlp.kernels_tuned.exp_nonpositive`), and for **float32** nets
    its float32 twin (:func:`~nbmlp.kernels_tuned.sigmoid_fast_f32`: exp and
    division in float32, 8 lanes per vector);
  - **passes are fused**: the last term of each z row, + b and σ in one pass;
    the loss terms, ∂L/∂h and σ' of the output layer in one pass; the last
    term of each ∂L/∂h row and σ' in one pass;
  - sums over samples (∂L/∂W, ∂L/∂b, the loss) are
    :func:`nbmlp.kernels_tuned.lane_dot` / ``lane_sum``: 16 interleaved partial
    sums (i mod 16) held in vector registers, combined pairwise in a fixed
    order -- deterministic, whatever the machine or thread count, and
    vectorized (without ``reassoc``, LLVM would keep a written sum scalar);
    in float32 they accumulate in float32, as the tuned tier does;
  - **no per-epoch views or reshapes** in the small-layer path: rows are
    addressed by index and weights read from the flat parameter vector
    (each array view made in a loop costs two atomic reference-count updates
    in Numba, each reshape a runtime call; together about a fifth of the
    epoch before).

Results agree with ``MLP.fit`` on the literal ``"loops"`` engine up to
rounding (the sums are the same, a few are added in another order and
multiply-adds are fused; float32 nets compute σ in float32); the tests hold the
loss trajectories and the final parameters to 1e-10 in float64 and 1e-4 in float32.

Compile time: the helpers below (row combinations, σ′, the wide-layer product, the
transpose) are ordinary compiled functions, not inlined into :func:`_train_small` at
Numba's IR level; LLVM still inlines the small ones, and the 8 x 8 product tile is
compiled once instead of once per call site (the cold compile of ``python -m nbmlp``
halves).  A stale cache cannot outlive an edit of a helper: :mod:`nbmlp._jit` stamps
every nbmlp cache entry with a hash of all nbmlp sources.

If a loss or a gradient becomes NaN or infinite, the parameters that gave the
last finite loss are put back and ``FloatingPointError`` is raised, as
``MLP.fit`` does; the finite losses of the epochs before are appended to
``net.loss_history`` (as the Python loop would have) and attached to the error
as ``losses``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import kernels_tuned as tuned
from . import ops
from .kernels_tuned import (
    TILE_COLS,
    TUNED_FLAGS,
    exp_nonpositive,
    lane_dot_rows,
    lane_sum,
    lane_sum_row,
    sigmoid_fast,
    sigmoid_fast_f32,
    tile_product,
)
from .ops import ACT_RELU, ACT_SIGMOID, ACT_SOFTMAX, ACT_TANH, LOSS_CROSS_ENTROPY, LOSS_HALF_SSE

#: Activation and loss names -> the codes (of :mod:`nbmlp.ops`) the compiled loop branches on; this
#: loop has branches for these activations (the others train in :mod:`nbmlp.compiled`).
ACTIVATION_CODES = {name: ops.ACTIVATIONS[name].code for name in ("identity", "sigmoid", "tanh", "relu", "softmax")}
LOSS_CODES = {name: op.code for name, op in ops.LOSSES.items()}

#: :mod:`nbmlp.training` sends plain full-batch runs of networks with at most this many
#: multiply-adds per forward pass, n * Σ_l d_{l-1} d_l, to this serial loop; larger ones
#: train in :mod:`nbmlp.compiled`, whose products can use every core.  Measured on
#: 64-128-10 (2 cores, the sweep in bench/RESULTS.md) against the tuned kernels: the
#: serial loop wins up to n = 32 (0.3 M), the two tie at n = 128 (1.2 M), the kernels
#: win from n = 512 (4.8 M).
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


def _sigmoid_same(z):
    """σ(z) in z's own float type (stub; the compiled versions are chosen by the overload below)."""
    raise NotImplementedError


@overload(_sigmoid_same, jit_options={"fastmath": {"contract"}, "error_model": "numpy"})
def _sigmoid_same_overload(z):
    # float32 networks: exp and the division in float32 (8 lanes per 256-bit vector, float32
    # division ~3x the throughput of float64); about 2 float32 ulp, inside the 1e-5 tolerance.
    # Before: every float32 sigmoid was computed in float64 and rounded back.
    if z == types.float32:
        return lambda z: sigmoid_fast_f32(z)
    return lambda z: sigmoid_fast(np.float64(z))


@njit(**TUNED_FLAGS)
def _combine_rows(out, r, X, w, w0, ws, m):
    r"""out[r, i] = Σ_{j<m} w[w0 + j ws] X[j, i], j ascending, vectorized over i; up to four terms per pass.

    X: (>= m, N); out: (., N).  Rows are addressed by index, not as row views
    (each view made in a loop costs an atomic increment and decrement of the
    array's reference count).  The weights are read from the flat parameter
    vector (a column of W_l: w0 = offset + k, ws = d_out; a row: ws = 1), which
    avoids reshaping W_l every epoch (a call into Numba's runtime).  m >= 1.
    The first pass writes up to four terms (before: one), later passes add four
    at a time, so the output row is loaded and stored about m/4 times instead of
    m times.  The order of the terms is unchanged: ((w_0 X_0i + w_1 X_1i) + w_2 X_2i) + ...
    """
    n = out.shape[1]
    if m == 1:
        c0 = w[w0]
        for i in range(n):
            out[r, i] = X[0, i] * c0
        j = 1
    elif m == 2:
        c0, c1 = w[w0], w[w0 + ws]
        for i in range(n):
            out[r, i] = X[0, i] * c0 + X[1, i] * c1
        j = 2
    elif m == 3:
        c0, c1, c2 = w[w0], w[w0 + ws], w[w0 + 2 * ws]
        for i in range(n):
            out[r, i] = (X[0, i] * c0 + X[1, i] * c1) + X[2, i] * c2
        j = 3
    else:
        c0, c1, c2, c3 = w[w0], w[w0 + ws], w[w0 + 2 * ws], w[w0 + 3 * ws]
        for i in range(n):
            out[r, i] = ((X[0, i] * c0 + X[1, i] * c1) + X[2, i] * c2) + X[3, i] * c3
        j = 4
    while j + 4 <= m:
        q = w0 + j * ws
        c0, c1, c2, c3 = w[q], w[q + ws], w[q + 2 * ws], w[q + 3 * ws]
        for i in range(n):
            out[r, i] = (((out[r, i] + X[j, i] * c0) + X[j + 1, i] * c1) + X[j + 2, i] * c2) + X[j + 3, i] * c3
        j += 4
    while j < m:
        c0 = w[w0 + j * ws]
        for i in range(n):
            out[r, i] += X[j, i] * c0
        j += 1


@njit(**TUNED_FLAGS)
def _activation_backward(out, r, h, hr, act, one):
    """out[r, i] <- out[r, i] act'(z_i), written with the saved output h[hr] (as the literal kernels do).

    ``one``: 1 in the arrays' dtype (before: the literal 1.0, which made float32
    rows compute in float64 and convert back).
    """
    if act == ACT_SIGMOID:  # sigmoid: dh * h * (1 - h)
        for i in range(out.shape[1]):
            out[r, i] = out[r, i] * h[hr, i] * (one - h[hr, i])
    elif act == ACT_TANH:  # tanh: dh * (1 - h^2)
        for i in range(out.shape[1]):
            out[r, i] = out[r, i] * (one - h[hr, i] * h[hr, i])
    elif act == ACT_RELU:  # relu: dh * [h > 0]
        for i in range(out.shape[1]):
            out[r, i] = out[r, i] if h[hr, i] > 0.0 else 0.0


@njit(**TUNED_FLAGS)
def _product(C, A, a_transposed, B, no_bias):
    r"""C = A·B (or Aᵀ·B) with the tuned tier's 8 x 8 register tile, one panel of columns at a time."""
    R, Q = C.shape
    for c0 in range(0, Q, TILE_COLS):
        tile_product(C, A, a_transposed, B, no_bias, 0, R, c0, min(Q, c0 + TILE_COLS))


@njit(**TUNED_FLAGS)
def _transpose_into(out, a):
    """out[q, p] = a[p, q]."""
    P, Q = a.shape
    for p in range(P):
        for q in range(Q):
            out[q, p] = a[p, q]


#: A layer with at least this many units on both sides uses the register-tiled
#: products; narrower ones (the note's 4-5-3) the plain loops below.
WIDE = 8

#: The compiled loop stores the batch with its sample count rounded up to a
#: multiple of this, the extra samples ("padding") being zero inputs whose
#: ∂L/∂z is set to zero, so they add exact zeros to every sum over samples.
#: With it every vector loop over samples runs whole vector iterations (32 =
#: 8 float32 lanes x LLVM's interleave of 4; 16 float64): before, n = 150 left
#: 6 scalar iterations after each loop -- 48 scalar sigmoids per epoch.
PAD = 32


def padded(n: int) -> int:
    """n rounded up to a multiple of :data:`PAD` (n >= 1)."""
    return -(-n // PAD) * PAD


@njit(**TUNED_FLAGS)
def _train_small(theta, snapshot, have_snapshot, sizes, acts, loss_code, h0T, h0, TT, n, epochs, lr, losses,
                 one):
    r"""``epochs`` steps of full-batch gradient descent on the flat parameters ``theta``.

    theta: W_1 (d0 x d1, row-major), b_1, W_2, b_2, ... concatenated; snapshot:
    same size, the parameters before the last update (valid if have_snapshot).
    h0T: h0ᵀ (d0 x N), h0: the same values row-major (N x d0), TT: Tᵀ (dL x N),
    where N = padded(n) >= n and columns n..N-1 are zero (padding samples).
    Writes losses[e] for each epoch run.  one: 1 in the dtype (the sums over samples and
    the element-wise backward formulas run in the dtype).

    Layers at least :data:`WIDE` units wide on both sides compute their three
    products with the tuned tier's register tile (:func:`_product`): z_lᵀ =
    W_lᵀ·h_{l-1}ᵀ and (∂L/∂h_{l-1})ᵀ = W_l·(∂L/∂z_l)ᵀ run along the samples;
    ∂L/∂W_l takes a row-major copy of ∂L/∂z_l (or of h_{l-1}, computing ∂L/∂W_lᵀ,
    when d_out is the smaller side) so that its vector loop also runs along a
    row.  Narrower layers use the plain loops, whose sums over samples are
    :func:`nbmlp.kernels_tuned.lane_dot` (16 interleaved partial sums, vector code).
    Returns 0, or the epoch (from 1) whose loss or gradient was not finite;
    theta then holds the snapshot again (when there was one).
    """
    L = sizes.shape[0] - 1
    N = h0T.shape[1]  # samples incl. padding; n: the real ones
    dtype = theta.dtype
    zero = one - one
    # offsets of W_l, b_l in theta and of h_l's first row in hbuf, computed once per call.
    # Every per-unit array is a row of a 2-D buffer, N long, so a layer's block is a slice of
    # rows (no reshape; before, each epoch reshaped ~15 slices, each a call into Numba's runtime).
    w_off = np.empty(L + 1, np.int64)
    b_off = np.empty(L + 1, np.int64)
    h_first = np.empty(L + 1, np.int64)
    pos = 0
    hrows = 0
    widest = 1
    for l in range(1, L + 1):
        w_off[l] = pos
        pos += sizes[l - 1] * sizes[l]
        b_off[l] = pos
        pos += sizes[l]
        h_first[l] = hrows
        hrows += sizes[l]
        widest = max(widest, sizes[l - 1], sizes[l])
    hbuf = np.zeros((hrows, N), dtype)
    zL = np.zeros((sizes[L], N), dtype)  # logits, kept for softmax + cross-entropy
    dz_a = np.zeros((widest, N), dtype)
    dz_b = np.zeros((widest, N), dtype)
    grad = np.empty_like(theta)
    row_max = np.zeros(N, np.float64)
    row_sum = np.ones(N, np.float64)
    per_sample = np.zeros(N, np.float64)
    row_major = np.zeros(N * widest, dtype)  # a row-major copy of dL/dz_l or h_{l-1}
    gWT = np.empty(widest * widest, dtype)  # dL/dW_lᵀ when it is computed transposed
    no_bias = np.empty(0, dtype)

    for epoch in range(epochs):
        # -- forward: z_l = h_{l-1} W_l + b_l, h_l = act(z_l), one unit k (a row of h_lᵀ) at a time
        for l in range(1, L + 1):
            d_in, d_out = sizes[l - 1], sizes[l]
            wo, bo = w_off[l], b_off[l]
            h_in = h0T if l == 1 else hbuf[h_first[l - 1]:h_first[l - 1] + d_in]
            h_out = hbuf[h_first[l]:h_first[l] + d_out]
            act = acts[l - 1]
            wide = d_in >= WIDE and d_out >= WIDE
            if wide:  # z_lᵀ = W_lᵀ h_{l-1}ᵀ, Σ_j ascending, register-tiled
                _product(h_out, theta[wo:wo + d_in * d_out].reshape((d_in, d_out)), True, h_in, no_bias)
            for k in range(d_out):
                bk = theta[bo + k]
                if act == ACT_SIGMOID and not wide:
                    # Σ_j h_ij w_jk, ascending j, vectorized over the samples i; the last
                    # term, + b_k and σ in one pass (before: a separate pass for b_k and σ)
                    last, w_last = d_in - 1, theta[wo + (d_in - 1) * d_out + k]
                    if d_in == 1:
                        for i in range(N):
                            h_out[k, i] = _sigmoid_same(h_in[last, i] * w_last + bk)
                    else:
                        _combine_rows(h_out, k, h_in, theta, wo + k, d_out, d_in - 1)
                        for i in range(N):
                            h_out[k, i] = _sigmoid_same((h_out[k, i] + h_in[last, i] * w_last) + bk)
                    continue
                if not wide:  # Σ_j h_ij w_jk, ascending j, vectorized over the samples i
                    _combine_rows(h_out, k, h_in, theta, wo + k, d_out, d_in)
                if act == ACT_SIGMOID:
                    for i in range(N):
                        h_out[k, i] = _sigmoid_same(h_out[k, i] + bk)
                elif act == ACT_TANH:
                    for i in range(N):
                        h_out[k, i] = math.tanh(h_out[k, i] + bk)
                elif act == ACT_RELU:
                    for i in range(N):
                        zi = h_out[k, i] + bk
                        h_out[k, i] = zi if zi > 0.0 else 0.0
                elif act == ACT_SOFTMAX:
                    for i in range(N):
                        zL[k, i] = h_out[k, i] + bk
                else:
                    for i in range(N):
                        h_out[k, i] = h_out[k, i] + bk
            if act == ACT_SOFTMAX:  # softmax over the units k of each sample i, shifted by the maximum
                for i in range(N):
                    row_max[i] = zL[0, i]
                for k in range(1, d_out):
                    for i in range(N):
                        if zL[k, i] > row_max[i]:
                            row_max[i] = zL[k, i]
                for i in range(N):
                    row_sum[i] = 0.0
                for k in range(d_out):
                    for i in range(N):
                        e = exp_nonpositive(np.float64(zL[k, i]) - row_max[i])
                        h_out[k, i] = e
                        row_sum[i] += e
                for k in range(d_out):
                    for i in range(N):
                        h_out[k, i] = h_out[k, i] / row_sum[i]

        # -- loss (before the update) and dL/dz_L
        d_L = sizes[L]
        h_L = hbuf[h_first[L]:h_first[L] + d_L]
        dz = dz_a[:d_L]
        for i in range(N):
            per_sample[i] = 0.0
        if loss_code == LOSS_CROSS_ENTROPY:  # L = 1/n Σ_i Σ_k t_ik (lse_i - z_ik); dL/dz = (p - t) / n
            for i in range(N):
                row_sum[i] = row_max[i] + math.log(row_sum[i])  # now lse_i
            for k in range(d_L):
                for i in range(N):
                    per_sample[i] += TT[k, i] * (row_sum[i] - zL[k, i])
                    dz[k, i] = (h_L[k, i] - TT[k, i]) / n
            loss = lane_sum(per_sample[:n]) / n
        else:  # Σ_i Σ_k (t_ik - h_ik)^2, halved (half_sse) or divided by n d (mse)
            scale = 1.0 if loss_code == LOSS_HALF_SSE else 2.0 / (n * d_L)
            act_L = acts[L - 1]
            for k in range(d_L):
                # per-sample squared error, dL/dh and (for a sigmoid output) σ' in one pass
                # (before: three passes over the row)
                if act_L == ACT_SIGMOID:
                    for i in range(N):
                        hi, ti = h_L[k, i], TT[k, i]
                        diff = np.float64(ti) - np.float64(hi)
                        per_sample[i] += diff * diff
                        dz[k, i] = scale * (hi - ti) * hi * (one - hi)
                else:
                    for i in range(N):
                        hi, ti = h_L[k, i], TT[k, i]
                        diff = np.float64(ti) - np.float64(hi)
                        per_sample[i] += diff * diff
                        dz[k, i] = scale * (hi - ti)
                    _activation_backward(dz, k, h_L, k, act_L, one)
            loss = lane_sum(per_sample[:n])
            loss = 0.5 * loss if loss_code == LOSS_HALF_SSE else loss / (n * d_L)
        for k in range(d_L):  # the padding samples contribute nothing from here on
            for i in range(n, N):
                dz[k, i] = zero

        # -- backward, l = L .. 1
        use_a = True
        for l in range(L, 0, -1):
            d_in, d_out = sizes[l - 1], sizes[l]
            wo, bo = w_off[l], b_off[l]
            h_in = h0T if l == 1 else hbuf[h_first[l - 1]:h_first[l - 1] + d_in]
            wide = d_in >= WIDE and d_out >= WIDE
            if not wide:
                for j in range(d_in):  # dL/dw_jk = Σ_i dL/dz_ik h_ij, 16 interleaved partial sums
                    for k in range(d_out):
                        grad[wo + j * d_out + k] = lane_dot_rows(dz, k, h_in, j)
            elif d_out >= d_in:  # dL/dW = h_{l-1}ᵀ·dz with dz copied row-major (N x d_out)
                dz_rows = row_major[:N * d_out].reshape((N, d_out))
                _transpose_into(dz_rows, dz)
                _product(grad[wo:wo + d_in * d_out].reshape((d_in, d_out)), h_in, False, dz_rows, no_bias)
            else:  # dL/dWᵀ = dzᵀ·h_{l-1}, h_{l-1} row-major (N x d_in), then transposed into gW
                if l == 1:
                    h_rows = h0
                else:
                    h_rows = row_major[:N * d_in].reshape((N, d_in))
                    _transpose_into(h_rows, h_in)
                gW_t = gWT[:d_out * d_in].reshape((d_out, d_in))
                _product(gW_t, dz, False, h_rows, no_bias)
                _transpose_into(grad[wo:wo + d_in * d_out].reshape((d_in, d_out)), gW_t)
            for k in range(d_out):  # dL/db_k = Σ_i dL/dz_ik
                grad[bo + k] = lane_sum_row(dz, k)
            if l > 1:  # dL/dh_ij = Σ_k dL/dz_ik w_jk, then through act' of layer l - 1
                dz_prev = (dz_b if use_a else dz_a)[:d_in]
                act_prev = acts[l - 2]
                if wide:  # (dL/dh)ᵀ = W·dzᵀ, Σ_k ascending, register-tiled
                    _product(dz_prev, theta[wo:wo + d_in * d_out].reshape((d_in, d_out)), False, dz, no_bias)
                for j in range(d_in):
                    if act_prev == ACT_SIGMOID and not wide:
                        # Σ_k dL/dz_ik w_jk, ascending k; the last term and σ' in one pass
                        # (before: a separate pass for σ')
                        last, w_last = d_out - 1, theta[wo + j * d_out + d_out - 1]
                        if d_out == 1:
                            for i in range(N):
                                hi = h_in[j, i]
                                dz_prev[j, i] = (dz[last, i] * w_last) * hi * (one - hi)
                        else:
                            _combine_rows(dz_prev, j, dz, theta, wo + j * d_out, 1, d_out - 1)
                            for i in range(N):
                                hi = h_in[j, i]
                                dz_prev[j, i] = (dz_prev[j, i] + dz[last, i] * w_last) * hi * (one - hi)
                        continue
                    if not wide:  # Σ_k dL/dz_ik w_jk, ascending k
                        _combine_rows(dz_prev, j, dz, theta, wo + j * d_out, 1, d_out)
                    _activation_backward(dz_prev, j, h_in, j, act_prev, one)
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


def fit_small(net, X, T, epochs, lr, callback):
    n = X.shape[0]
    N = padded(n)
    if net.input_sigmoid:
        h0 = np.empty_like(X)
        tuned.sigmoid_forward(h0, X)
    else:
        h0 = X
    h0_rows = np.zeros((N, h0.shape[1]), net.dtype)  # padding samples: zero inputs and targets
    h0_rows[:n] = h0
    h0T = np.ascontiguousarray(h0_rows.T)
    TT = np.zeros((T.shape[1], N), net.dtype)
    TT[:, :n] = T.T
    theta = _flatten(net)
    snapshot = theta.copy()
    sizes = np.asarray(net.sizes, dtype=np.int64)
    acts = np.asarray([ACTIVATION_CODES[a] for a in net.activations], dtype=np.int64)
    loss_code = LOSS_CODES[net.loss_name]
    losses = np.empty(epochs, dtype=np.float64)
    one = net.dtype.type(1)
    if callback is None:
        failed = _train_small(theta, snapshot, False, sizes, acts, loss_code, h0T, h0_rows, TT, n, epochs, lr,
                              losses, one)
        _unflatten(net, theta)
        if failed:
            raise _non_finite(net, failed, losses[failed - 1], lr, losses[:failed - 1])
        return losses
    for epoch in range(epochs):  # one compiled epoch per call, so the callback sees every epoch
        failed = _train_small(theta, snapshot, epoch > 0, sizes, acts, loss_code, h0T, h0_rows, TT, n, 1, lr,
                              losses[epoch:epoch + 1], one)
        _unflatten(net, theta)
        if failed:
            raise _non_finite(net, epoch + 1, losses[epoch], lr, losses[:epoch])
        callback(epoch + 1, float(losses[epoch]))
    return losses


def fit_full_batch(net, X, T, epochs: int, lr: float, *, callback=None) -> np.ndarray:
    """Train ``net`` in place by full-batch gradient descent; returns the per-epoch losses (float64).

    X: (n, d0) and T: (n, dL), C-contiguous, in the net's dtype (already
    checked); ``epochs`` >= 1, ``lr`` > 0.  Each loss is computed before that
    epoch's update.  ``callback(epoch, loss)``, if given, runs after every
    epoch with the parameters already updated (one compiled epoch per call).
    Raises ``FloatingPointError`` (parameters of the last finite loss restored)
    when a loss or gradient is not finite; the finite losses of the epochs
    before are then appended to ``net.loss_history`` (on success the caller
    appends the returned losses) and also attached to the error as ``err.losses``.
    Any network :func:`supports` trains here, serially; :mod:`nbmlp.training`
    sends only those up to :data:`SMALL_MAX_WORK`.
    """
    if not supports(net):
        raise ValueError(f"nbmlp.fused does not support {net!r}")
    epochs = int(epochs)
    lr = float(lr)
    return fit_small(net, X, T, epochs, lr, callback)
