r"""Full-batch training with the whole epoch loop compiled, samples along the vectors: ``MLP.fit`` on small nets.

:func:`fit_full_batch` runs ``epochs`` steps of plain full-batch gradient descent,
W_l <- W_l - lr ∂L/∂W_l and b_l <- b_l - lr ∂L/∂b_l, and returns the loss of
every epoch (each computed before that epoch's update, as ``MLP.fit`` records
it).  :mod:`nbmlp.training` calls it when a run is plain full-batch SGD with
nothing to do between epochs, on a network of at most :data:`SMALL_MAX_WORK`
multiply-adds per forward pass (e.g. the note's 4-5-3 on Iris); every other run
trains in :mod:`nbmlp.compiled`.  The formulas are those of :mod:`nbmlp.kernels`;
what differs is where the loops live: every epoch runs inside one compiled
function, serial -- no Python between kernels, no parallel-region start-up, no
allocation per epoch.  More changes against the literal loops, each measured on
4-5-3, n = 150 (bench/RESULTS.md):

- the batch is stored **transposed** (one row per unit, n samples along the
  row), so with d = 3..5 units every loop still runs n long, unit stride,
  over samples: it vectorizes where a row of 5 cannot;
- the sample count is **padded** to a multiple of :data:`PAD` with zero
  inputs whose ∂L/∂z is set to 0 (they add exact zeros to every sum and are
  left out of the loss), so no vector loop ends in scalar iterations;
- the input sigmoid h0 = σ(X) does not change between epochs: it is
  computed once per call;
- the sigmoid is the tuned tier's (:func:`nbmlp.kernels_tuned.sigmoid_same_type`):
  a vectorizable exp, and for **float32** nets its float32 twin (exp and
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
- **no per-epoch views or reshapes** in narrow layers: rows are addressed by
  index and weights read from the flat parameter vector (each array view made
  in a loop costs two atomic reference-count updates in Numba, each reshape a
  runtime call);
- layers at least :data:`WIDE` units wide on both sides compute their three
  products with the tuned tier's 8 x 8 register tile instead of the plain loops.

**What compiles.**  The loop is compiled per *variant* (:class:`Variant`, :func:`variant`): the
activations the layers use, whether there are narrow layers, wide layers or both.  A variant's
flags are constants of its compiled loop (:func:`compiled_loop`), so Numba drops every branch no
layer of the variant takes before typing it, and a first run compiles what its network runs and
nothing else: the note's 4-5-3 sigmoid net compiles neither the register-tiled products nor tanh,
relu, softmax and cross-entropy.  Each piece of an epoch (a layer's Σ + b + σ, the loss rows, a
layer's weight gradient, act' of a layer, the guarded update) is a small compiled function of its
own, shared by every variant and compiled once; LLVM inlines the small ones into the loop.  A
stale cache cannot outlive an edit of a helper: :mod:`nbmlp._jit` stamps every nbmlp cache entry
with a hash of all nbmlp sources.

Results agree with ``MLP.fit`` on the literal ``"loops"`` engine up to
rounding (the sums are the same, a few are added in another order and
multiply-adds are fused; float32 nets compute σ in float32); the tests hold the
loss trajectories and the final parameters to 1e-10 in float64 and 1e-4 in float32.

If a loss or a gradient becomes NaN or infinite, the parameters that gave the
last finite loss are put back and ``FloatingPointError`` is raised, as
``MLP.fit`` does; the finite losses of the epochs before are appended to
``net.loss_history`` (as the Python loop would have) and attached to the error
as ``losses``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import njit

from . import kernels_tuned as tuned
from . import ops
from .kernels_tuned import (
    TILE_COLS,
    TUNED_FLAGS,
    exp_nonpositive,
    lane_dot_rows,
    lane_sum,
    lane_sum_row,
    sigmoid_same_type,
    tile_product,
)
from .ops import ACT_IDENTITY, ACT_RELU, ACT_SIGMOID, ACT_SOFTMAX, ACT_TANH, LOSS_HALF_SSE

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

#: A layer with at least this many units on both sides uses the register-tiled
#: products; narrower ones (the note's 4-5-3) the plain loops below.
WIDE = 8

#: The loop's buffers start on a multiple of this many bytes (a cache line, one 512-bit vector), so
#: its vector loops over samples do not straddle cache lines.
ALIGN = 64

#: 1 as a typed int64 for the compiled functions' calls: a literal 1 passed to a compiled function
#: would compile a second specialization of it, for the value 1.
UNIT = np.int64(1)

#: The compiled loop stores the batch with its sample count rounded up to a
#: multiple of this, the extra samples ("padding") being zero inputs whose
#: ∂L/∂z is set to zero, so they add exact zeros to every sum over samples.
#: With it every vector loop over samples runs whole vector iterations (32 =
#: 8 float32 lanes x LLVM's interleave of 4; 16 float64), where n = 150 would
#: leave 6 scalar iterations after each loop.
PAD = 32


def supports(net) -> bool:
    """True when :func:`fit_full_batch` can train ``net`` (every activation and loss of nbmlp)."""
    return (net.loss_name in LOSS_CODES and all(a in ACTIVATION_CODES for a in net.activations)
            and net.dtype in (np.dtype(np.float64), np.dtype(np.float32)))


def forward_work(net, n: int) -> int:
    """Multiply-adds of one forward pass on n samples: n Σ_l d_{l-1} d_l."""
    return n * sum(a * b for a, b in zip(net.sizes[:-1], net.sizes[1:]))


def padded(n: int) -> int:
    """n rounded up to a multiple of :data:`PAD` (n >= 1)."""
    return -(-n // PAD) * PAD


class Variant(NamedTuple):
    """What a network needs of the compiled loop; :func:`compiled_loop` compiles one loop per variant."""

    #: the activation names of its layers, sorted, each once
    activations: tuple
    #: the output layer's activation (softmax comes with cross-entropy, the others with a squared loss)
    output: str
    #: some layer is at least WIDE units wide on both sides (register-tiled products)
    wide: bool
    #: some layer is narrower (plain loops)
    narrow: bool

    def __str__(self) -> str:
        layers = " and ".join(kind for kind, used in (("narrow", self.narrow), ("wide", self.wide)) if used)
        return f"{', '.join(self.activations)} ({self.output} output), {layers} layers"


def variant(net) -> Variant:
    """The variant of the compiled loop that trains ``net`` (a network :func:`supports`)."""
    wide = [a >= WIDE and b >= WIDE for a, b in zip(net.sizes[:-1], net.sizes[1:])]
    return Variant(tuple(sorted(set(net.activations))), net.activations[-1], any(wide), not all(wide))


# ---------------------------------------------------------------------------
# The pieces of an epoch (batch stored transposed: unit x sample)
# ---------------------------------------------------------------------------


@njit(**TUNED_FLAGS)
def _combine_rows(out, r, X, w, w0, ws, m):
    r"""out[r, i] = Σ_{j<m} w[w0 + j ws] X[j, i], j ascending, vectorized over i; up to four terms per pass.

    X: (>= m, N); out: (., N).  Rows are addressed by index, not as row views
    (each view made in a loop costs an atomic increment and decrement of the
    array's reference count).  The weights are read from the flat parameter
    vector (a column of W_l: w0 = offset + k, ws = d_out; a row: ws = 1), which
    avoids reshaping W_l every epoch (a call into Numba's runtime).  m >= 1.
    The first pass writes up to four terms, later passes add four at a time, so
    the output row is loaded and stored about m/4 times instead of m times.
    The order of the terms: ((w_0 X_0i + w_1 X_1i) + w_2 X_2i) + ...
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
def _combine_layer(out, X, w, w0, unit_stride, term_stride, m):
    """:func:`_combine_rows` for every row r of ``out``, the weights of row r starting at w0 + r unit_stride."""
    for r in range(out.shape[0]):
        _combine_rows(out, r, X, w, w0 + r * unit_stride, term_stride, m)


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


# -- forward: h_lᵀ = act(W_lᵀ h_{l-1}ᵀ + b_l), one unit k (a row of h_lᵀ) at a time


@njit(**TUNED_FLAGS)
def _sigmoid_layer(h_out, h_in, theta, wo, bo, d_in, d_out):
    """A narrow sigmoid layer: Σ_j h_ij w_jk ascending, then its last term, + b_k and σ in one pass."""
    N = h_out.shape[1]
    for k in range(d_out):
        bk = theta[bo + k]
        w_last = theta[wo + (d_in - 1) * d_out + k]
        if d_in == 1:
            for i in range(N):
                h_out[k, i] = sigmoid_same_type(h_in[0, i] * w_last + bk)
        else:
            _combine_rows(h_out, k, h_in, theta, wo + k, d_out, d_in - 1)
            for i in range(N):
                h_out[k, i] = sigmoid_same_type((h_out[k, i] + h_in[d_in - 1, i] * w_last) + bk)


@njit(**TUNED_FLAGS)
def _bias_sigmoid(h, theta, bo):
    """h[k] <- σ(h[k] + b_k) (the sums are in h)."""
    for k in range(h.shape[0]):
        bk = theta[bo + k]
        for i in range(h.shape[1]):
            h[k, i] = sigmoid_same_type(h[k, i] + bk)


@njit(**TUNED_FLAGS)
def _bias_tanh(h, theta, bo):
    """h[k] <- tanh(h[k] + b_k)."""
    for k in range(h.shape[0]):
        bk = theta[bo + k]
        for i in range(h.shape[1]):
            h[k, i] = math.tanh(h[k, i] + bk)


@njit(**TUNED_FLAGS)
def _bias_relu(h, theta, bo):
    """h[k] <- max(h[k] + b_k, 0)."""
    for k in range(h.shape[0]):
        bk = theta[bo + k]
        for i in range(h.shape[1]):
            zi = h[k, i] + bk
            h[k, i] = zi if zi > 0.0 else 0.0


@njit(**TUNED_FLAGS)
def _bias_identity(h, theta, bo):
    """h[k] <- h[k] + b_k."""
    for k in range(h.shape[0]):
        bk = theta[bo + k]
        for i in range(h.shape[1]):
            h[k, i] = h[k, i] + bk


@njit(**TUNED_FLAGS)
def _bias_softmax(h, zL, theta, bo, row_max, row_sum):
    """zL[k] = h[k] + b_k (the logits, kept for the loss), then h = softmax over the units k of each sample i.

    Shifted by each sample's maximum; leaves the maxima in row_max and the sums of
    e^(z - max) in row_sum (float64) for :func:`_cross_entropy`.
    """
    d_out, N = h.shape
    for k in range(d_out):
        bk = theta[bo + k]
        for i in range(N):
            zL[k, i] = h[k, i] + bk
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
            h[k, i] = e
            row_sum[i] += e
    for k in range(d_out):
        for i in range(N):
            h[k, i] = h[k, i] / row_sum[i]


# -- the loss (before the update) and dL/dz_L


@njit(**TUNED_FLAGS)
def _cross_entropy(dz, h, zL, TT, row_max, row_sum, per_sample, n):
    """L = 1/n Σ_i Σ_k t_ik (lse_i - z_ik) over the n real samples; dz = (p - t) / n (row_max, row_sum from
    :func:`_bias_softmax`)."""
    N = dz.shape[1]
    for i in range(N):
        per_sample[i] = 0.0
        row_sum[i] = row_max[i] + math.log(row_sum[i])  # now lse_i
    for k in range(dz.shape[0]):
        for i in range(N):
            per_sample[i] += TT[k, i] * (row_sum[i] - zL[k, i])
            dz[k, i] = (h[k, i] - TT[k, i]) / n
    return lane_sum(per_sample[:n]) / n


@njit(**TUNED_FLAGS)
def _squared_error(dz, h, TT, per_sample, scale, sigmoid_output, one):
    """per_sample[i] = Σ_k (t_ik - h_ik)² and dz = scale (h - t) = ∂L/∂h in one pass, times σ' = h (1 - h) in
    the same pass for a sigmoid output (other outputs' act' is applied after)."""
    N = dz.shape[1]
    for i in range(N):
        per_sample[i] = 0.0
    for k in range(dz.shape[0]):
        for i in range(N):
            hi, ti = h[k, i], TT[k, i]
            diff = np.float64(ti) - np.float64(hi)
            per_sample[i] += diff * diff
            g = scale * (hi - ti)
            dz[k, i] = g * hi * (one - hi) if sigmoid_output else g


# -- backward: act'(h) with the saved output h (as the literal kernels do), the gradients, dL/dh_{l-1}


@njit(**TUNED_FLAGS)
def _activation_backward(dz, h, act, one):
    """dz <- dz act'(z), written with the saved output h: h (1 - h), 1 - h², [h > 0] or 1.

    One function for the activations (a multiply each, so compiling all of them is cheap); the
    variants whose every layer is sigmoid and narrow never call it (their σ' is fused).
    """
    if act == ACT_SIGMOID:
        for r in range(dz.shape[0]):
            for i in range(dz.shape[1]):
                dz[r, i] = dz[r, i] * h[r, i] * (one - h[r, i])
    elif act == ACT_TANH:
        for r in range(dz.shape[0]):
            for i in range(dz.shape[1]):
                dz[r, i] = dz[r, i] * (one - h[r, i] * h[r, i])
    elif act == ACT_RELU:
        for r in range(dz.shape[0]):
            for i in range(dz.shape[1]):
                dz[r, i] = dz[r, i] if h[r, i] > 0.0 else 0.0


@njit(**TUNED_FLAGS)
def _weight_gradient(grad, wo, dz, h_in, d_in, d_out):
    """A narrow layer: dL/dw_jk = Σ_i dL/dz_ik h_ij, 16 interleaved partial sums over the samples."""
    for j in range(d_in):
        for k in range(d_out):
            grad[wo + j * d_out + k] = lane_dot_rows(dz, k, h_in, j)


@njit(**TUNED_FLAGS)
def _weight_gradient_wide(gW, dz, h_in, h0, first, row_major, gWT, no_bias):
    """A wide layer's dL/dW = h_{l-1}ᵀ·dz, register-tiled, with its vector loop along a row-major copy.

    When d_out >= d_in, dz is copied row-major (N x d_out); otherwise h_{l-1} is
    (for the first layer it is h0, already row-major) and dL/dWᵀ = dzᵀ·h_{l-1} is
    computed, then transposed into gW.
    """
    d_in, d_out = gW.shape
    N = dz.shape[1]
    if d_out >= d_in:
        dz_rows = row_major[:N * d_out].reshape((N, d_out))
        _transpose_into(dz_rows, dz)
        _product(gW, h_in, False, dz_rows, no_bias)
        return
    if first:
        h_rows = h0
    else:
        h_rows = row_major[:N * d_in].reshape((N, d_in))
        _transpose_into(h_rows, h_in)
    gW_t = gWT[:d_out * d_in].reshape((d_out, d_in))
    _product(gW_t, dz, False, h_rows, no_bias)
    _transpose_into(gW, gW_t)


@njit(**TUNED_FLAGS)
def _bias_gradient(grad, bo, dz):
    """dL/db_k = Σ_i dL/dz_ik."""
    for k in range(dz.shape[0]):
        grad[bo + k] = lane_sum_row(dz, k)


@njit(**TUNED_FLAGS)
def _sigmoid_back_layer(dz_prev, dz, h_in, theta, wo, d_in, d_out, one):
    """Narrow layer, sigmoid below: Σ_k dL/dz_ik w_jk ascending, then its last term and σ' in one pass."""
    N = dz.shape[1]
    for j in range(d_in):
        w_last = theta[wo + j * d_out + d_out - 1]
        if d_out == 1:
            for i in range(N):
                hi = h_in[j, i]
                dz_prev[j, i] = (dz[0, i] * w_last) * hi * (one - hi)
        else:
            _combine_rows(dz_prev, j, dz, theta, wo + j * d_out, UNIT, d_out - 1)
            for i in range(N):
                hi = h_in[j, i]
                dz_prev[j, i] = (dz_prev[j, i] + dz[d_out - 1, i] * w_last) * hi * (one - hi)


@njit(**TUNED_FLAGS)
def _descend(theta, snapshot, grad, lr, loss, have_snapshot):
    """The guard, then theta <- theta - lr grad, keeping the old theta as the snapshot.

    Returns False, with theta put back to the snapshot (when there is one), if the
    loss or a gradient is not finite.
    """
    finite = math.isfinite(loss)
    for m in range(grad.shape[0]):
        if not math.isfinite(grad[m]):
            finite = False
    if not finite:
        if have_snapshot:
            for m in range(theta.shape[0]):
                theta[m] = snapshot[m]
        return False
    for m in range(theta.shape[0]):
        snapshot[m] = theta[m]
        theta[m] = theta[m] - lr * grad[m]
    return True


# ---------------------------------------------------------------------------
# The loop, one compiled function per variant
# ---------------------------------------------------------------------------


@functools.cache
def compiled_loop(kind: Variant):
    r"""The compiled epoch loop for networks of variant ``kind`` (see :func:`variant`), made once per process.

    Its signature: ``train(theta, snapshot, have_snapshot, sizes, acts, loss_code,
    h0T, h0, TT, n, epochs, lr, losses, one, work)`` -- theta: W_1 (d0 x d1, row-major),
    b_1, W_2, b_2, ... concatenated; snapshot: same size, the parameters before
    the last update (valid if have_snapshot); acts: each layer's activation code;
    h0T: h0ᵀ (d0 x N), h0: the same values row-major (N x d0), TT: Tᵀ (dL x N),
    where N = padded(n) >= n and columns n..N-1 are zero (padding samples).
    Writes losses[e] for each epoch run; one: 1 in the dtype (the sums over samples
    and the element-wise backward formulas run in the dtype); work: the buffers of
    :func:`workspace`.  Returns 0, or the epoch (from 1) whose loss or gradient was
    not finite; theta then holds the snapshot again (when there was one).

    The flags below are the loop's compile-time constants: a branch guarded by a
    false one is removed before Numba types the function, so what it calls is
    never compiled for this variant.  They are plain values the function closes
    over, which Numba's on-disk cache keys its entries by: one entry per variant.
    """
    used = {ACTIVATION_CODES[a] for a in kind.activations}
    SIGMOID, TANH, RELU, IDENTITY = (code in used for code in (ACT_SIGMOID, ACT_TANH, ACT_RELU, ACT_IDENTITY))
    NOT_SIGMOID = bool(used - {ACT_SIGMOID})  # a layer with another activation: the plain narrow sums
    OUTPUT = ACTIVATION_CODES[kind.output]
    WIDE_LAYERS, NARROW_LAYERS = kind.wide, kind.narrow

    @njit(**TUNED_FLAGS)
    def train(theta, snapshot, have_snapshot, sizes, acts, loss_code, h0T, h0, TT, n, epochs, lr, losses, one, work):
        L = sizes.shape[0] - 1
        N = h0T.shape[1]  # samples incl. padding; n: the real ones
        zero = one - one
        w_off, b_off, h_first, hbuf, zL, dz_a, dz_b, grad, row_major, gWT, row_max, row_sum, per_sample, no_bias = work

        for epoch in range(epochs):
            # -- forward, l = 1 .. L
            for l in range(1, L + 1):
                d_in, d_out = sizes[l - 1], sizes[l]
                wo, bo = w_off[l], b_off[l]
                h_in = h0T if l == 1 else hbuf[h_first[l - 1]:h_first[l - 1] + d_in]
                h_out = hbuf[h_first[l]:h_first[l] + d_out]
                act = acts[l - 1]
                wide = d_in >= WIDE and d_out >= WIDE
                if NARROW_LAYERS and SIGMOID and not wide and act == ACT_SIGMOID:
                    _sigmoid_layer(h_out, h_in, theta, wo, bo, d_in, d_out)
                    continue
                if WIDE_LAYERS and wide:  # z_lᵀ = W_lᵀ h_{l-1}ᵀ, Σ_j ascending, register-tiled
                    _product(h_out, theta[wo:wo + d_in * d_out].reshape((d_in, d_out)), True, h_in, no_bias)
                elif NARROW_LAYERS and NOT_SIGMOID:  # Σ_j h_ij w_jk, ascending j, vectorized over the samples i
                    _combine_layer(h_out, h_in, theta, wo, UNIT, d_out, d_in)
                if WIDE_LAYERS and SIGMOID and act == ACT_SIGMOID:
                    _bias_sigmoid(h_out, theta, bo)
                elif TANH and act == ACT_TANH:
                    _bias_tanh(h_out, theta, bo)
                elif RELU and act == ACT_RELU:
                    _bias_relu(h_out, theta, bo)
                elif OUTPUT == ACT_SOFTMAX and act == ACT_SOFTMAX:
                    _bias_softmax(h_out, zL, theta, bo, row_max, row_sum)
                elif IDENTITY:
                    _bias_identity(h_out, theta, bo)

            # -- loss (before the update) and dL/dz_L
            d_L = sizes[L]
            h_L = hbuf[h_first[L]:h_first[L] + d_L]
            dz = dz_a[:d_L]
            if OUTPUT == ACT_SOFTMAX:
                loss = _cross_entropy(dz, h_L, zL, TT, row_max, row_sum, per_sample, n)
            else:  # Σ_i Σ_k (t_ik - h_ik)^2, halved (half_sse) or divided by n d (mse)
                scale = 1.0 if loss_code == LOSS_HALF_SSE else 2.0 / (n * d_L)
                _squared_error(dz, h_L, TT, per_sample, scale, acts[L - 1] == ACT_SIGMOID, one)
                if OUTPUT != ACT_SIGMOID:
                    _activation_backward(dz, h_L, acts[L - 1], one)
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
                if WIDE_LAYERS and wide:
                    _weight_gradient_wide(grad[wo:wo + d_in * d_out].reshape((d_in, d_out)), dz, h_in, h0, l == 1,
                                          row_major, gWT, no_bias)
                elif NARROW_LAYERS:
                    _weight_gradient(grad, wo, dz, h_in, d_in, d_out)
                _bias_gradient(grad, bo, dz)
                if l == 1:
                    break
                # dL/dh_ij = Σ_k dL/dz_ik w_jk, then through act' of layer l - 1
                dz_prev = (dz_b if use_a else dz_a)[:d_in]
                act_prev = acts[l - 2]
                if NARROW_LAYERS and SIGMOID and not wide and act_prev == ACT_SIGMOID:
                    _sigmoid_back_layer(dz_prev, dz, h_in, theta, wo, d_in, d_out, one)
                elif WIDE_LAYERS or NOT_SIGMOID:
                    if WIDE_LAYERS and wide:  # (dL/dh)ᵀ = W·dzᵀ, Σ_k ascending, register-tiled
                        _product(dz_prev, theta[wo:wo + d_in * d_out].reshape((d_in, d_out)), False, dz, no_bias)
                    elif NARROW_LAYERS and NOT_SIGMOID:  # Σ_k dL/dz_ik w_jk, ascending k
                        _combine_layer(dz_prev, dz, theta, wo, d_out, UNIT, d_out)
                    _activation_backward(dz_prev, h_in, act_prev, one)
                dz = dz_prev
                use_a = not use_a

            losses[epoch] = loss
            if not _descend(theta, snapshot, grad, lr, loss, have_snapshot):
                return epoch + 1
            have_snapshot = True
        return 0

    return train


# ---------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------


def workspace(sizes, N, dtype) -> tuple:
    """The buffers of the compiled loop for layer sizes ``sizes`` and N (padded) samples, allocated here once.

    The offsets of W_l, b_l in theta and of h_l's first row in hbuf (l = 1..L),
    then hbuf (every h_lᵀ, one row per unit, N long: a layer's block is a slice of
    rows), the logits zL, two ∂L/∂z buffers, the gradient, a row-major copy and a
    transposed ∂L/∂W for wide layers, three per-sample float64 rows (maxima, sums,
    loss terms) and an empty bias for the products.
    """
    L = len(sizes) - 1
    w_off, b_off, h_first = (np.zeros(L + 1, np.int64) for _ in range(3))
    pos = rows = 0
    for l in range(1, L + 1):
        w_off[l], b_off[l], h_first[l] = pos, pos + sizes[l - 1] * sizes[l], rows
        pos += (sizes[l - 1] + 1) * sizes[l]
        rows += sizes[l]
    widest = max(sizes)
    row_sum = _aligned_zeros(N, np.float64)
    row_sum[:] = 1.0
    return (w_off, b_off, h_first, _aligned_zeros((rows, N), dtype), _aligned_zeros((sizes[L], N), dtype),
            _aligned_zeros((widest, N), dtype), _aligned_zeros((widest, N), dtype), _aligned_zeros(pos, dtype),
            _aligned_zeros(N * widest, dtype), _aligned_zeros(widest * widest, dtype),
            _aligned_zeros(N, np.float64), row_sum, _aligned_zeros(N, np.float64), np.zeros(0, dtype))


def _aligned_zeros(shape, dtype):
    """Zeros of ``shape``, the first on an :data:`ALIGN`-byte boundary (NumPy aligns small arrays to 16 bytes)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    raw = np.zeros(size + ALIGN // dtype.itemsize, dtype)
    start = (-raw.ctypes.data % ALIGN) // dtype.itemsize
    return raw[start:start + size].reshape(shape)


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
    train = compiled_loop(variant(net))
    work = workspace(net.sizes, N, net.dtype)
    if callback is None:
        failed = train(theta, snapshot, False, sizes, acts, loss_code, h0T, h0_rows, TT, n, epochs, lr, losses, one,
                       work)
        _unflatten(net, theta)
        if failed:
            raise _non_finite(net, failed, losses[failed - 1], lr, losses[:failed - 1])
        return losses
    for epoch in range(epochs):  # one compiled epoch per call, so the callback sees every epoch
        failed = train(theta, snapshot, epoch > 0, sizes, acts, loss_code, h0T, h0_rows, TT, n, 1, lr,
                       losses[epoch:epoch + 1], one, work)
        _unflatten(net, theta)
        if failed:
            raise _non_finite(net, epoch + 1, losses[epoch], lr, losses[:epoch])
        callback(epoch + 1, float(losses[epoch]))
    return losses
