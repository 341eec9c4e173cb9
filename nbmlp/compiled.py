r"""The compiled training loop: one forward and one backward function per layer kind, one short driver.

Written in the manner of llm.c's ``train_gpt2.c``: every layer kind is a pair
of plain loop functions, ``X_forward(out, inp, ...)`` and ``X_backward(dinp,
..., dout, ...)``, outputs first; :func:`train_steps` calls the forward
functions in order and the backward ones in reverse, one line each, then the
update rule.  Everything runs inside one compiled call per *chunk* of steps
(:class:`CompiledRun`), so a mini-batch step costs no Python at all.

Index letters, fixed for the whole module::

    i = sample of the batch (B rows of the batch buffers, row-major)
    j = unit of the layer below (d_in),  k = unit of the layer (d_out)
    m = slot of a flat parameter vector (W_l.reshape(-1) or b_l)

Array roles (as in :mod:`nbmlp.network`): ``z_l = h_{l-1} W_l + b_l`` (B x
d_l), ``h_l = act_l(z_l)``; ``g_l`` holds ∂L/∂h_l and is turned into ∂L/∂z_l in
place by the activation's backward, which -- like every derivative of nbmlp --
is written from the saved output h_l.

Layer and rule kinds are the named constants of the table of operations
(:mod:`nbmlp.ops`: ``ACT_SIGMOID``, ``LOSS_MSE``, ``OPT_ADAM``, ...; :data:`KINDS`
maps names to them); the driver branches on them at run time inside small
functions.

**Sample weights.**  With per-sample weights w_i every sample's loss term and
gradient is multiplied by w_i; a *mean* loss is normalised by Σ_i w_i of the
batch instead of the batch size (scikit-learn's convention)::

    half_sse       L = ½ Σ_i w_i Σ_k (t_ik - h_ik)^2
    mse            L = 1/(d Σ_i w_i) Σ_i w_i Σ_k (t_ik - h_ik)^2
    cross_entropy  L = -1/(Σ_i w_i) Σ_i w_i Σ_k t_ik log softmax(z_i)_k

With all weights 1 these are exactly the unweighted losses.  An epoch's mean
loss weighs each batch by its share of Σ w (the batch's share of the rows
when unweighted).

**Serial or parallel** is decided once per run (:func:`nbmlp.parallel.use_parallel`:
free cores, and the run's largest call).  The drivers (:data:`DRIVERS`) are
compiled twice from one source: :func:`train_steps` calls the parallel
compilations of the functions that can run in parallel (:data:`PARALLEL_KERNELS`:
the three :mod:`nbmlp.products`, the activations' forward and backward, the bias
gradient and the update), ``SERIAL_DRIVERS["train_steps"]`` their ``.serial``
twins; both are cached on disk (a driver that took the functions as arguments
would not be).
A parallel compilation still runs a call below the threshold
(:data:`nbmlp.parallel.PARALLEL_MIN_WORK`; products:
:data:`nbmlp.products.PARALLEL_MIN_MACS`) on the calling thread, without a
parallel region, so the small layers of a mini-batch step cost no wake-ups.
The parallel loops run over a written index (rows, columns or slots), every
sum stays serial inside, and the results do not depend on the thread count.
The loss and the stopping rule (one row of a few outputs) stay serial.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time

import numpy as np
from numba import prange

from . import ops, parallel, products
from ._jit import compile_twice, compiling, jit, serial_twins
from .kernels import LEAKY_RELU_SLOPE
from .kernels_tuned import TUNED_FLAGS, exp_nonpositive, sigmoid_same_type
from .ops import (
    ACT_IDENTITY,
    ACT_LEAKY_RELU,
    ACT_RELU,
    ACT_SIGMOID,
    ACT_SOFTMAX,
    ACT_SOFTPLUS,
    ACT_TANH,
    LOSS_CROSS_ENTROPY,
    LOSS_HALF_SSE,
    LOSS_MSE,
    OPT_ADAM,
    OPT_MOMENTUM,
    OPT_NESTEROV,
    OPT_SGD,
)
from .optim import adam_scalars, adam_slot, momentum_slot, nesterov_slot
from .parallel import DIV_WORK, EXP_WORK, PACKED_MACS_PER_WORK, PARALLEL_MIN_WORK, num_threads
from .products import matmul_nn, matmul_nt, matmul_tn

#: Compile flags of the training loop: the tuned tier's (cached on disk, no GIL, fused multiply-adds
#: allowed: differences of ~1 ulp per product against the NumPy twin; NumPy's error model: a division
#: by zero gives inf, which the non-finite guard reports, not ZeroDivisionError).
ENGINE_FLAGS = TUNED_FLAGS

# -- the kinds, by name: the codes of the table of operations (nbmlp.ops) -------------------------

#: Slope of leaky_relu for z <= 0 (the literal kernels' constant).
LEAKY_SLOPE = LEAKY_RELU_SLOPE

#: name -> code, per kind of entry, read from :mod:`nbmlp.ops` (the one source of the codes).
KINDS = {
    "activation": {name: op.code for name, op in ops.ACTIVATIONS.items()},
    "loss": {name: op.code for name, op in ops.LOSSES.items()},
    "optimizer": {name: op.code for name, op in ops.OPTIMIZERS.items()},
}

#: Losses that are sums over samples (the rest are means over Σ w).
SUM_LOSSES = frozenset(name for name, op in ops.LOSSES.items() if op.reduction == "sum")

# ---------------------------------------------------------------------------
# Layers: forward / backward pairs
# ---------------------------------------------------------------------------


@jit(**ENGINE_FLAGS)
def input_forward_rows(h0, X, sigmoid):
    r"""h0 = σ(X) (or X), σ by :func:`nbmlp.kernels_tuned.sigmoid_same_type` (in X's float type).  h0, X: (rows, d0)."""
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            x = X[i, j]
            if sigmoid:
                h0[i, j] = sigmoid_same_type(x)
            else:
                h0[i, j] = x


def _input_forward(h0, X, sigmoid):
    r"""h0 = σ(X) (or X) in blocks of rows (:func:`input_forward_rows`).  h0, X: (n, d0)."""
    n = X.shape[0]
    nb = blocks(X.size * (EXP_WORK if sigmoid else 1))
    if nb == 1:
        input_forward_rows(h0, X, sigmoid)
        return
    for c in prange(nb):
        lo, hi = block_bounds(c, nb, n)
        input_forward_rows(h0[lo:hi], X[lo:hi], sigmoid)


@jit(**ENGINE_FLAGS)
def blocks(work):
    r"""Pieces to cut a loop of ``work`` units into: one below :data:`nbmlp.parallel.PARALLEL_MIN_WORK`
    (run on the calling thread, no parallel region), else one per thread.  (The
    threshold is read at import: compiled code keeps the value it was compiled with.)"""
    return 1 if work < PARALLEL_MIN_WORK else num_threads()


@jit(inline="always", **ENGINE_FLAGS)
def block_bounds(c, nb, size):
    r"""[lo, hi) of block c of nb equal blocks of range(size)."""
    return c * size // nb, (c + 1) * size // nb


input_forward = compile_twice(_input_forward, ENGINE_FLAGS)


@jit(**ENGINE_FLAGS)
def activation_work(act):
    r"""Units of work per element of an activation (:data:`nbmlp.parallel.EXP_WORK` where it evaluates exp or log)."""
    if act == ACT_SIGMOID or act == ACT_TANH or act == ACT_SOFTPLUS or act == ACT_SOFTMAX:
        return EXP_WORK
    return 1


@jit(**ENGINE_FLAGS)
def activation_forward_rows(h, z, b, act):
    r"""z_ik <- z_ik + b_k, then h_ik = act(z_ik) for every row i of z (softmax: over k of each row i).

    h, z: (rows, d), a block of rows of the layer's arrays; b: (d,).  The bias
    is added here, fused with the activation.  (A block is passed as slices, so
    every index starts at 0 and the loops vectorize.)
    """
    d = z.shape[1]
    for i in range(z.shape[0]):
        for k in range(d):
            z[i, k] += b[k]
        if act == ACT_SIGMOID:  # the tuned tier's vectorizable σ, in z's float type (a few ulp of it)
            for k in range(d):
                h[i, k] = sigmoid_same_type(z[i, k])
        elif act == ACT_TANH:
            for k in range(d):
                h[i, k] = math.tanh(z[i, k])
        elif act == ACT_RELU:
            for k in range(d):
                h[i, k] = z[i, k] if z[i, k] > 0.0 else 0.0
        elif act == ACT_LEAKY_RELU:
            for k in range(d):
                h[i, k] = z[i, k] if z[i, k] > 0.0 else LEAKY_SLOPE * z[i, k]
        elif act == ACT_SOFTPLUS:  # max(z, 0) + log1p(e^{-|z|})
            for k in range(d):
                x = z[i, k]
                h[i, k] = max(x, 0.0) + math.log1p(math.exp(-abs(x)))
        elif act == ACT_SOFTMAX:  # shifted by the row maximum
            top = z[i, 0]
            for k in range(1, d):
                top = max(top, z[i, k])
            total = 0.0
            for k in range(d):
                e = exp_nonpositive(np.float64(z[i, k] - top))
                h[i, k] = e
                total += e
            for k in range(d):
                h[i, k] = h[i, k] / total
        else:
            for k in range(d):
                h[i, k] = z[i, k]


def _activation_forward(h, z, b, act, B):
    r"""z_ik <- z_ik + b_k, h_ik = act(z_ik) for the first B rows, in blocks (:func:`activation_forward_rows`)."""
    nb = blocks(B * z.shape[1] * activation_work(act))
    if nb == 1:
        activation_forward_rows(h[:B], z[:B], b, act)
        return
    for c in prange(nb):
        lo, hi = block_bounds(c, nb, B)
        activation_forward_rows(h[lo:hi], z[lo:hi], b, act)


activation_forward = compile_twice(_activation_forward, ENGINE_FLAGS)


@jit(**ENGINE_FLAGS)
def activation_backward_rows(g, h, act):
    r"""∂L/∂z = ∂L/∂h ⊙ act'(z), in place in g (a block of rows), written from the saved output h:

    sigmoid h(1 - h); tanh 1 - h^2; relu [h > 0]; leaky_relu 1 if h > 0 else 0.01;
    softplus σ(z) = 1 - e^{-h}; identity 1.  (softmax's backward is fused with
    cross-entropy in :func:`loss_backward`.)
    """
    d = g.shape[1]
    if act == ACT_IDENTITY or act == ACT_SOFTMAX:
        return
    for i in range(g.shape[0]):
        for k in range(d):
            y = h[i, k]
            if act == ACT_SIGMOID:
                g[i, k] = g[i, k] * y * (1.0 - y)
            elif act == ACT_TANH:
                g[i, k] = g[i, k] * (1.0 - y * y)
            elif act == ACT_RELU:
                g[i, k] = g[i, k] if y > 0.0 else 0.0
            elif act == ACT_LEAKY_RELU:
                g[i, k] = g[i, k] if y > 0.0 else LEAKY_SLOPE * g[i, k]
            elif act == ACT_SOFTPLUS:
                g[i, k] = g[i, k] * -math.expm1(-y)


def _activation_backward(g, h, act, B):
    r"""∂L/∂z = ∂L/∂h ⊙ act'(z) in place in g, first B rows, in blocks of rows (:func:`activation_backward_rows`)."""
    if act == ACT_IDENTITY or act == ACT_SOFTMAX:
        return
    nb = blocks(B * g.shape[1] * (EXP_WORK if act == ACT_SOFTPLUS else 1))
    if nb == 1:
        activation_backward_rows(g[:B], h[:B], act)
        return
    for c in prange(nb):
        lo, hi = block_bounds(c, nb, B)
        activation_backward_rows(g[lo:hi], h[lo:hi], act)


activation_backward = compile_twice(_activation_backward, ENGINE_FLAGS)


@jit(**ENGINE_FLAGS)
def loss_forward(h, z, T, w, B, wsum, loss):
    r"""The batch loss (float64) of the first B rows; see the module docstring for the weighted forms.

    h: outputs (>= B, d); z: logits (cross-entropy); T: targets; w: sample weights (>= B,).
    """
    d = h.shape[1]
    acc = 0.0
    if loss == LOSS_CROSS_ENTROPY:
        for i in range(B):
            top = np.float64(z[i, 0])
            for k in range(1, d):
                top = max(top, np.float64(z[i, k]))
            total = 0.0
            for k in range(d):
                total += math.exp(np.float64(z[i, k]) - top)
            lse = top + math.log(total)
            row = 0.0
            for k in range(d):
                row += np.float64(T[i, k]) * (lse - np.float64(z[i, k]))
            acc += np.float64(w[i]) * row
        return acc / wsum
    for i in range(B):
        row = 0.0
        for k in range(d):
            diff = np.float64(T[i, k]) - np.float64(h[i, k])
            row += diff * diff
        acc += np.float64(w[i]) * row
    if loss == LOSS_HALF_SSE:
        return 0.5 * acc
    return acc / (wsum * d)


@jit(**ENGINE_FLAGS)
def loss_backward(g, h, T, w, B, wsum, loss):
    r"""g = ∂L/∂h_L (half_sse: w_i (h - t); mse: 2 w_i (h - t)/(d Σw)) or, for cross-entropy,
    ∂L/∂z_L = w_i (p - t)/Σw directly.  First B rows.
    """
    d = h.shape[1]
    for i in range(B):
        if loss == LOSS_HALF_SSE:
            scale = w[i]
        elif loss == LOSS_MSE:
            scale = 2.0 * w[i] / (wsum * d)
        else:
            scale = w[i] / wsum
        for k in range(d):
            g[i, k] = scale * (h[i, k] - T[i, k])


@jit(**ENGINE_FLAGS)
def bias_backward_columns(db, g, B, lo, hi):
    r"""∂L/∂b_k = Σ_i ∂L/∂z_ik over the first B rows, i ascending, for columns lo <= k < hi."""
    part = db[lo:hi]
    for k in range(hi - lo):
        part[k] = 0.0
    for i in range(B):
        row = g[i, lo:hi]
        for k in range(hi - lo):
            part[k] += row[k]


def _bias_backward(db, g, B):
    r"""∂L/∂b_k = Σ_i ∂L/∂z_ik (i ascending) in blocks of columns k (:func:`bias_backward_columns`)."""
    d = g.shape[1]
    nb = blocks(B * d)
    if nb == 1:
        lo, hi = block_bounds(0, 1, d)  # int64 bounds: literal arguments would compile a second copy
        bias_backward_columns(db, g, B, lo, hi)
        return
    for c in prange(nb):
        lo, hi = block_bounds(c, nb, d)
        bias_backward_columns(db, g, B, lo, hi)


bias_backward = compile_twice(_bias_backward, ENGINE_FLAGS)


#: :func:`l2_forward` keeps this many partial sums: slot m goes to sum m % L2_LANES.
L2_LANES = 8


@jit(**ENGINE_FLAGS)
def l2_forward(W):
    r"""½ Σ_m w_m^2 (float64) over a flat weight vector, the decay term of the loss before its factor λ.

    Summed in :data:`L2_LANES` interleaved partial sums, then those in order, then
    the last n % L2_LANES slots: a fixed order (the same on every machine and for
    any thread count) that the compiler can keep in one vector register.
    """
    n = W.shape[0]
    full = n - n % L2_LANES
    acc = np.zeros(L2_LANES)
    for m in range(0, full, L2_LANES):
        for j in range(L2_LANES):
            x = np.float64(W[m + j])
            acc[j] += x * x
    total = 0.0
    for j in range(L2_LANES):
        total += acc[j]
    for m in range(full, n):
        x = np.float64(W[m])
        total += x * x
    return 0.5 * total


# ---------------------------------------------------------------------------
# Update rules, on flat vectors (the slot formulas of nbmlp.optim)
# ---------------------------------------------------------------------------


@jit(**ENGINE_FLAGS)
def update_slots(p, g, snap, s1, s2, rule, lr, momentum, beta1, beta2, step, eps_hat, decay):
    r"""Every slot m of the flat parameter p (or of a block of it): keep p_m in snap, then the rule's update
    with the gradient g_m + λ p_m (λ = decay: L2 weight decay, 0 for biases).

    sgd p <- p - lr g; momentum, nesterov: :func:`nbmlp.optim.momentum_slot`,
    :func:`nbmlp.optim.nesterov_slot` (s1 = v; momentum 0 is sgd); adam:
    :func:`nbmlp.optim.adam_slot` (s1 = m, s2 = v; step, eps_hat from
    :func:`nbmlp.optim.adam_scalars`).  Returns how many updated slots are not
    finite (x - x is 0 for every finite x, nan for inf and nan).  A block is
    passed as slices, so every index starts at 0 and the loops vectorize.
    """
    bad = 0
    if rule == OPT_ADAM:
        for m in range(p.shape[0]):
            x = p[m]
            snap[m] = x
            y, s1[m], s2[m] = adam_slot(x, s1[m], s2[m], g[m] + decay * x, beta1, beta2, step, eps_hat)
            p[m] = y
            bad += y - y != 0.0
    elif rule == OPT_SGD or momentum == 0.0:
        for m in range(p.shape[0]):
            x = p[m]
            snap[m] = x
            y = x - lr * (g[m] + decay * x)
            p[m] = y
            bad += y - y != 0.0
    else:
        nesterov = rule == OPT_NESTEROV
        for m in range(p.shape[0]):
            x = p[m]
            snap[m] = x
            if nesterov:
                y, s1[m] = nesterov_slot(x, s1[m], g[m] + decay * x, lr, momentum)
            else:
                y, s1[m] = momentum_slot(x, s1[m], g[m] + decay * x, lr, momentum)
            p[m] = y
            bad += y - y != 0.0
    return bad


def _update(params, grads, snapshot, s1, s2, rule, lr, momentum, beta1, beta2, epsilon, t, decay):
    r"""One update of every flat parameter, step t >= 1; the parameters before it are kept in ``snapshot``.

    params, grads, ...: W_1, b_1, W_2, b_2, ... flat; decay λ >= 0 applies to the weights (even q).

    Large parameters in blocks of slots (:func:`update_slots`).  Returns how many
    updated slots are not finite.
    """
    step, eps_hat = adam_scalars(lr, beta1, beta2, epsilon, t)
    weight = DIV_WORK if rule == OPT_ADAM else 1
    bad = 0
    for q in range(len(params)):
        size = params[q].shape[0]
        nb = blocks(size * weight)
        dq = decay if q % 2 == 0 else 0.0
        if nb == 1:
            bad += update_slots(params[q], grads[q], snapshot[q], s1[q], s2[q], rule, lr, momentum, beta1, beta2,
                                step, eps_hat, dq)
            continue
        for c in prange(nb):
            lo, hi = block_bounds(c, nb, size)
            bad += update_slots(params[q][lo:hi], grads[q][lo:hi], snapshot[q][lo:hi], s1[q][lo:hi], s2[q][lo:hi],
                                rule, lr, momentum, beta1, beta2, step, eps_hat, dq)
    return bad


update = compile_twice(_update, ENGINE_FLAGS)


# ---------------------------------------------------------------------------
# Stopping rule (shared with the Python twin in nbmlp.training)
# ---------------------------------------------------------------------------

#: Slots of the float state vector ``fstate`` of a run.
F_BEST_LOSS, F_BEST_SCORE, F_LR, F_EPOCH_LOSS = 0, 1, 2, 3
#: Slots of the integer state vector ``istate`` of a run.
I_STEP, I_POS, I_NO_IMPROVEMENT, I_STATUS, I_HAVE_SNAPSHOT, I_HAVE_BEST = 0, 1, 2, 3, 4, 5
#: istate[I_STATUS] after a chunk.
RUNNING, STOPPED, CONVERGED, NON_FINITE = 0, 1, 2, 3

#: ``"adaptive"`` divides the rate by this factor on a plateau, and stops below ADAPTIVE_MIN_LR
#: (scikit-learn's values, ``sklearn/neural_network/_multilayer_perceptron.py``).
ADAPTIVE_FACTOR = 5.0
ADAPTIVE_MIN_LR = 1e-6


@jit(**ENGINE_FLAGS)
def end_of_epoch(fstate, istate, loss, score, early_stopping, tol, patience, adaptive):
    r"""scikit-learn's no-improvement rule after an epoch; returns (stop, new_best_score).

    Early stopping counts epochs whose validation score is not above best + tol,
    otherwise epochs whose loss is not below best - tol.  When the count exceeds
    ``patience`` (>= 1; 0 means never stop) an adaptive schedule divides the rate
    by :data:`ADAPTIVE_FACTOR` (and restarts the count) while it stays above
    :data:`ADAPTIVE_MIN_LR`; otherwise training stops.
    """
    new_best = False
    if early_stopping:
        if score < fstate[F_BEST_SCORE] + tol:
            istate[I_NO_IMPROVEMENT] += 1
        else:
            istate[I_NO_IMPROVEMENT] = 0
        if score > fstate[F_BEST_SCORE]:
            fstate[F_BEST_SCORE] = score
            new_best = True
    else:
        if loss > fstate[F_BEST_LOSS] - tol:
            istate[I_NO_IMPROVEMENT] += 1
        else:
            istate[I_NO_IMPROVEMENT] = 0
    if loss < fstate[F_BEST_LOSS]:
        fstate[F_BEST_LOSS] = loss
    if patience > 0 and istate[I_NO_IMPROVEMENT] > patience:
        if adaptive and fstate[F_LR] / ADAPTIVE_FACTOR >= ADAPTIVE_MIN_LR:
            fstate[F_LR] = fstate[F_LR] / ADAPTIVE_FACTOR
            istate[I_NO_IMPROVEMENT] = 0
            return False, new_best
        return True, new_best
    return False, new_best


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


@jit(**ENGINE_FLAGS)
def network_forward(zs, hs, h0, Ws, bs, acts, B, ws):
    r"""z_l = h_{l-1} W_l + b_l, h_l = act_l(z_l) for l = 1..L on the first B rows of h0."""
    L = len(Ws)
    for l in range(L):
        h_in = h0 if l == 0 else hs[l - 1]
        matmul_nn(zs[l][:B], h_in[:B], Ws[l], ws)
        activation_forward(hs[l], zs[l], bs[l], acts[l], B)


@jit(**ENGINE_FLAGS)
def network_backward(dWs, dbs, gs, hs, h0, Ws, acts, B, ws):
    r"""From g_L = ∂L/∂h_L (or ∂L/∂z_L for softmax) down: ∂L/∂W_l, ∂L/∂b_l, and g_{l-1} = ∂L/∂z_l W_lᵀ."""
    L = len(Ws)
    for l in range(L - 1, -1, -1):
        activation_backward(gs[l], hs[l], acts[l], B)
        h_in = h0 if l == 0 else hs[l - 1]
        matmul_tn(dWs[l], h_in[:B], gs[l][:B], ws)
        bias_backward(dbs[l], gs[l], B)
        if l > 0:
            matmul_nt(gs[l - 1][:B], gs[l][:B], Ws[l], ws)


@jit(**ENGINE_FLAGS)
def pass_forward_backward(zs, hs, gs, dWs, dbs, h0, T, w, Ws, bs, acts, loss, B, wsum, ws):
    r"""One forward + loss + backward pass on the first B rows; returns the data loss (float64).

    The one pass driver of nbmlp's compiled training (``MLP.gradients`` computes
    the same quantities layer by layer through the engines' kernels, which
    also return ∂L/∂X).
    """
    L = len(Ws)
    network_forward(zs, hs, h0, Ws, bs, acts, B, ws)
    value = loss_forward(hs[L - 1], zs[L - 1], T, w, B, wsum, loss)
    loss_backward(gs[L - 1], hs[L - 1], T, w, B, wsum, loss)
    network_backward(dWs, dbs, gs, hs, h0, Ws, acts, B, ws)
    return value


@jit(**ENGINE_FLAGS)
def penalty_forward(Wflat, decay):
    r"""λ ½ Σ_l Σ_jk w_jk^2 over every weight matrix (flat views); 0 when λ = 0."""
    if decay == 0.0:
        return 0.0
    acc = 0.0
    for l in range(len(Wflat)):
        acc += l2_forward(Wflat[l])
    return decay * acc


@jit(**ENGINE_FLAGS)
def train_steps(Ws, bs, Wflat, params, grads, dWs, dbs, s1, s2, snapshot, best, zs, hs, gs, vzs, vhs,
                H0, T, w, Hb, Tb, wb, Hv, Tv, wv, perms, lrs, acts, icfg, fcfg, fstate, istate,
                losses, vlosses, max_steps, ws):
    r"""Run up to ``perms.shape[0]`` epochs, at most ``max_steps`` steps; returns the epochs finished.

    One step: gather the batch (mini-batches), forward, loss, backward, the
    non-finite guard (loss and every gradient; on failure the parameters before
    the last update are put back and istate[I_STATUS] = NON_FINITE), the update
    with λW added to the weight gradients (keeping the parameters before it as
    the snapshot), and the guard again on the updated parameters (on failure the
    snapshot is put back, NON_FINITE).  After
    an epoch: its loss goes to losses[e], the validation loss (with the decay
    term) to vlosses[e], then :func:`end_of_epoch` (unless the score is computed
    in Python).  A chunk may end inside an epoch (istate[I_POS] > 0); the next
    call continues it, with the same permutation in perms[0].

    icfg: loss, rule, batch, gather, has_val, early_stopping, patience, adaptive, rule_in_driver, is_sum
    fcfg: momentum, beta1, beta2, epsilon, decay, tol, wtotal
    """
    loss, rule, batch, gather, has_val = icfg[0], icfg[1], icfg[2], icfg[3], icfg[4]
    early_stopping, patience, adaptive, rule_in_driver, is_sum = icfg[5], icfg[6], icfg[7], icfg[8], icfg[9]
    momentum, beta1, beta2, epsilon, decay, tol, wtotal = fcfg[0], fcfg[1], fcfg[2], fcfg[3], fcfg[4], fcfg[5], \
        fcfg[6]
    n = H0.shape[0]
    L = len(Ws)
    P = len(params)
    steps = 0
    for e in range(perms.shape[0]):
        lr = fstate[F_LR] if adaptive else lrs[e]
        while istate[I_POS] < n:
            if steps >= max_steps:
                return e
            pos = istate[I_POS]
            B = min(batch, n - pos)
            if gather:
                for r in range(B):
                    src = perms[e, pos + r]
                    for j in range(H0.shape[1]):
                        Hb[r, j] = H0[src, j]
                    for k in range(T.shape[1]):
                        Tb[r, k] = T[src, k]
                    wb[r] = w[src]
                h0, tb, wbat = Hb, Tb, wb
            else:
                h0, tb, wbat = H0, T, w
            wsum = 0.0
            for r in range(B):
                wsum += wbat[r]
            data = pass_forward_backward(zs, hs, gs, dWs, dbs, h0, tb, wbat, Ws, bs, acts, loss, B, wsum, ws)
            penalty = penalty_forward(Wflat, decay)
            finite = math.isfinite(data + penalty)
            for q in range(P):
                g = grads[q]
                for m in range(g.shape[0]):
                    if not math.isfinite(g[m]):
                        finite = False
            if not finite:
                if istate[I_HAVE_SNAPSHOT]:
                    for q in range(P):
                        params[q][:] = snapshot[q]
                fstate[F_EPOCH_LOSS] = data + penalty
                istate[I_STATUS] = NON_FINITE
                return e
            istate[I_HAVE_SNAPSHOT] = 1
            istate[I_STEP] += 1
            bad = update(params, grads, snapshot, s1, s2, rule, lr, momentum, beta1, beta2, epsilon, istate[I_STEP],
                         decay)
            if bad:  # the update overflowed: back to the parameters it started from
                for q in range(P):
                    params[q][:] = snapshot[q]
                fstate[F_EPOCH_LOSS] = data + penalty
                istate[I_STATUS] = NON_FINITE
                return e
            share = wsum / wtotal
            fstate[F_EPOCH_LOSS] += (data if is_sum else share * data) + share * penalty
            istate[I_POS] = pos + B
            steps += 1
        losses[e] = fstate[F_EPOCH_LOSS]
        fstate[F_EPOCH_LOSS] = 0.0
        istate[I_POS] = 0
        score = 0.0
        if has_val:
            nv = Hv.shape[0]
            network_forward(vzs, vhs, Hv, Ws, bs, acts, nv, ws)
            vloss = loss_forward(vhs[L - 1], vzs[L - 1], Tv, wv, nv, np.float64(nv), loss) \
                + penalty_forward(Wflat, decay)
            vlosses[e] = vloss
            score = -vloss
        if rule_in_driver:
            stop, new_best = end_of_epoch(fstate, istate, losses[e], score, early_stopping, tol, patience, adaptive)
            if new_best:
                for q in range(P):
                    best[q][:] = params[q]
                istate[I_HAVE_BEST] = 1
            if stop:
                istate[I_STATUS] = STOPPED
                return e + 1
    return perms.shape[0]


# ---------------------------------------------------------------------------
# Python side: allocate once per run, call in chunks
# ---------------------------------------------------------------------------

#: Seconds of work between two returns to Python (progress, callbacks, signals).
CHUNK_SECONDS = 0.075

#: At most this many epochs per chunk: the chunk's per-epoch arrays (losses, rates, row orders)
#: stay bounded however short an epoch is.
MAX_CHUNK_EPOCHS = 4096


#: Bytes of buffers a finished run leaves for the next run with the same shapes (a fit called once per
#: epoch in a loop, ``partial_fit``): reused buffers are already mapped, where fresh ones fault their
#: pages in on first touch (784-1024-10, n = 1024, float64: ~3,400 page faults, +25 ms on a 30 ms epoch).
#: Only the latest run's buffers are kept; a run's larger than this keeps none.
SPARE_BYTES = 256 << 20


class SpareBuffers:
    """The buffers of the latest finished run, handed to the next run that asks for the same shape and dtype.

    :meth:`take` gives an array whose contents are left over (a kept one) or undefined (a new one): the
    caller writes every element before reading it.  An array is never handed to two runs at once;
    :meth:`keep` replaces the kept buffers by a finished run's.  Thread-safe.
    """

    def __init__(self, max_bytes: int = SPARE_BYTES):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._arrays = {}

    def take(self, shape, dtype, make=None) -> np.ndarray:
        """A kept array of this shape and dtype, else a new one (``make()``, or ``np.empty``)."""
        key = (tuple(int(d) for d in shape), np.dtype(dtype).str)
        with self._lock:
            spare = self._arrays.get(key)
            a = spare.pop() if spare else None
        if a is not None:
            return a
        return make() if make is not None else np.empty(key[0], dtype)

    def keep(self, arrays) -> None:
        kept, total = {}, 0
        for a in arrays:
            total += a.nbytes
            kept.setdefault((a.shape, a.dtype.str), []).append(a)
        with self._lock:
            self._arrays = kept if total <= self.max_bytes else {}

    def clear(self) -> None:
        """Let go of the kept buffers (their memory returns to the allocator)."""
        with self._lock:
            self._arrays = {}


#: The spare buffers of :class:`CompiledRun`.
SPARES = SpareBuffers()

_STARTED = set()


@contextlib.contextmanager
def compile_watch(key, config: str):
    """Around the first call of a configuration in this process: :func:`nbmlp._jit.compiling` says on
    stderr that the training loop for ``config`` is compiling when the call runs over a second (not when
    it loads from the cache).  Later calls skip the watch."""
    if key in _STARTED:
        yield
        return
    try:
        with compiling(f"the training loop for {config}"):
            yield
    finally:
        _STARTED.add(key)


#: The functions the drivers call that have a parallel compilation and a serial twin (``f.serial``).
PARALLEL_KERNELS = ("matmul_nn", "matmul_tn", "matmul_nt", "activation_forward", "activation_backward",
                    "bias_backward", "update")

#: The drivers: compiled twice from one source, once calling the parallel compilations of
#: :data:`PARALLEL_KERNELS` (the functions above, under their own names) and once calling their serial
#: twins (``<name>_serial``, made below); each calls the others by name within its own set.
DRIVERS = ("network_forward", "network_backward", "pass_forward_backward", "train_steps")


#: The serial drivers, by name (``SERIAL_DRIVERS["train_steps"]``: the whole loop on the calling thread).
SERIAL_DRIVERS = serial_twins(DRIVERS, PARALLEL_KERNELS, globals(), ENGINE_FLAGS)


class CompiledRun:
    r"""Buffers of one training run, allocated once; :meth:`chunk` runs compiled steps on them.

    net: the network (its ``W``/``b`` are updated in place); X, T: checked
    training arrays; sample_weight: (n,) or None; validation: (X_val, T_val)
    or None; s1, s2: flat optimizer state vectors (parameter layout W_1, b_1,
    W_2, b_2, ...), updated in place.
    """

    def __init__(self, net, X, T, sample_weight, validation, *, rule, batch_size, momentum, beta1, beta2,
                 epsilon, weight_decay, early_stopping, patience, tol, adaptive, rule_in_driver, s1, s2):
        dtype = net.dtype
        n = X.shape[0]
        self._owned = []

        def buffer(shape, make=None):
            """A buffer of the run, taken from :data:`SPARES`: every one is written whole before it is read."""
            a = SPARES.take(shape, dtype, make)
            self._owned.append(a)
            return a

        self.net = net
        self.n = n
        self.batch = n if batch_size is None else min(int(batch_size), n)
        acts = [KINDS["activation"][a] for a in net.activations]
        self.acts = np.asarray(acts, dtype=np.int64)
        self.Ws = tuple(net.W)
        self.bs = tuple(net.b)
        self.params = tuple(a for W, b in zip(net.W, net.b, strict=True) for a in (W.reshape(-1), b))
        sizes = [p.size for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        flat_grad = buffer((int(self.offsets[-1]),))  # written by every step's backward pass
        self.grads = tuple(flat_grad[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:]))
        self.dWs = tuple(self.grads[2 * l].reshape(W.shape) for l, W in enumerate(net.W))
        self.dbs = tuple(self.grads[2 * l + 1] for l in range(len(net.W)))
        self.s1 = tuple(s1[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:]))
        self.s2 = tuple(s2[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:]))
        # written by each update before it changes a parameter; read only after one (I_HAVE_SNAPSHOT)
        self.snapshot = tuple(buffer(p.shape) for p in self.params)
        self.best = tuple(p.copy() for p in self.params) if early_stopping else tuple(
            np.zeros(1, dtype) for _ in self.params)
        B = self.batch
        # a step's first B rows: z and h written by the forward pass, g by the loss and the backward pass
        self.zs = tuple(buffer((B, d)) for d in net.sizes[1:])
        self.hs = tuple(buffer((B, d)) for d in net.sizes[1:])
        self.gs = tuple(buffer((B, d)) for d in net.sizes[1:])
        self.H0 = buffer(X.shape)
        self._input_forward(self.H0, X)
        self.T = T
        self.w = (np.ones(n, dtype) if sample_weight is None else np.ascontiguousarray(sample_weight, dtype))
        self.gather = self.batch < n
        if self.gather:  # a step's first B rows, gathered before they are read
            self.Hb = buffer((B, X.shape[1]))
            self.Tb = buffer((B, T.shape[1]))
            self.wb = buffer((B,))
        else:
            self.Hb, self.Tb, self.wb = self.H0[:1], T[:1], self.w[:1]
        if validation is not None:
            Xv, Tv = validation
            nv = Xv.shape[0]
            self.Hv = buffer(Xv.shape)
            self._input_forward(self.Hv, Xv)
            self.Tv = Tv
            self.vzs = tuple(buffer((nv, d)) for d in net.sizes[1:])  # all nv rows: the validation pass
            self.vhs = tuple(buffer((nv, d)) for d in net.sizes[1:])
        else:
            self.Hv, self.Tv = self.H0[:1], T[:1]
            self.vzs = tuple(np.zeros((1, d), dtype) for d in net.sizes[1:])
            self.vhs = tuple(np.zeros((1, d), dtype) for d in net.sizes[1:])
        self.wv = np.ones(self.Hv.shape[0], dtype)
        self.icfg = np.array([KINDS["loss"][net.loss_name], rule, B, self.gather, validation is not None,
                              early_stopping, 0 if patience is None else patience, adaptive, rule_in_driver,
                              net.loss_name in SUM_LOSSES], dtype=np.int64)
        self.fcfg = np.array([momentum, beta1, beta2, epsilon, weight_decay, tol, float(self.w.sum())],
                             dtype=np.float64)
        # Serial or parallel, decided once for the run (nbmlp.parallel: the machine's free cores and the
        # run's largest call); inside a parallel run every call that is below the threshold still runs on
        # the calling thread (products.PARALLEL_MIN_MACS, blocks()).
        dims = list(zip(net.sizes[:-1], net.sizes[1:]))
        rows = max(B, self.Hv.shape[0])
        largest = max(max(rows * a * b for a, b in dims) // PACKED_MACS_PER_WORK,
                      rows * max(net.sizes[1:]) * EXP_WORK, max(sizes) * DIV_WORK)
        self.parallel = parallel.use_parallel(largest)
        self.train_steps = train_steps if self.parallel else SERIAL_DRIVERS["train_steps"]
        shapes = [(rows, b, a) for a, b in dims] + [(a, b, rows) for a, b in dims] + [(rows, a, b) for a, b in dims]
        largest = max(shapes, key=lambda s: products.workspace_size(*s))
        self.ws = buffer((products.workspace_size(*largest),),
                         make=lambda: products.workspace(*largest, dtype))  # scratch, aligned

    def _input_forward(self, h0, X) -> None:
        """h0 = σ(X) (or X), in parallel where that pays (:func:`nbmlp.parallel.call`)."""
        sigmoid = self.net.input_sigmoid
        parallel.call(input_forward, X.size * (EXP_WORK if sigmoid else 1), h0, X, sigmoid)

    def close(self) -> None:
        """The run is over: its buffers become :data:`SPARES` for the next run (call once, last)."""
        owned, self._owned = self._owned, []
        if owned:
            SPARES.keep(owned)

    def chunk(self, perms, lrs, fstate, istate, losses, vlosses, max_steps) -> int:
        """Run compiled steps (see :func:`train_steps`); returns the number of epochs finished."""
        args = (self.Ws, self.bs, self.params[0::2], self.params, self.grads, self.dWs, self.dbs, self.s1, self.s2,
                self.snapshot, self.best, self.zs, self.hs, self.gs, self.vzs, self.vhs, self.H0, self.T, self.w,
                self.Hb, self.Tb, self.wb, self.Hv, self.Tv, self.wv, perms, lrs, self.acts, self.icfg, self.fcfg,
                fstate, istate, losses, vlosses, int(max_steps), self.ws)
        key = ("train_steps", self.net.dtype.name, len(self.Ws), self.parallel)
        config = f"{self.net.dtype.name}, {len(self.Ws)} layer(s), {'parallel' if self.parallel else 'serial'}"
        with compile_watch(key, config), (parallel.region() if self.parallel else contextlib.nullcontext()):
            return int(self.train_steps(*args))


def steps_for(seconds_per_step: float) -> int:
    """Steps in a chunk of about :data:`CHUNK_SECONDS`, from the measured time of one step."""
    if not seconds_per_step > 0.0:
        return 1
    return max(1, min(1 << 30, int(CHUNK_SECONDS / seconds_per_step)))


class StepTimer:
    """Sizes the chunks: the first two run one step each (the first may include compiling), every later
    one :func:`steps_for` the seconds per step measured on the chunk before it.  A single step is never
    split, so a step that takes longer than a second delays Ctrl-C by that step."""

    def __init__(self):
        self.per_step = None
        self.chunks = 0

    def start(self):
        self._t0 = time.perf_counter()

    def stop(self, steps: int) -> None:
        elapsed = time.perf_counter() - self._t0
        self.chunks += 1
        if steps > 0 or self.chunks == 1:
            self.per_step = elapsed / max(steps, 1)

    def next_steps(self) -> int:
        return 1 if self.per_step is None or self.chunks < 2 else steps_for(self.per_step)


__all__ = [
    "DRIVERS", "PARALLEL_KERNELS", "SERIAL_DRIVERS", "activation_backward", "activation_forward", "bias_backward",
    "blocks", "update",
    "ACT_IDENTITY", "ACT_LEAKY_RELU", "ACT_RELU", "ACT_SIGMOID", "ACT_SOFTMAX", "ACT_SOFTPLUS", "ACT_TANH",
    "ADAPTIVE_FACTOR", "ADAPTIVE_MIN_LR", "CHUNK_SECONDS", "KINDS", "MAX_CHUNK_EPOCHS", "LEAKY_SLOPE",
    "LOSS_CROSS_ENTROPY",
    "LOSS_HALF_SSE", "LOSS_MSE", "OPT_ADAM", "OPT_MOMENTUM", "OPT_NESTEROV", "OPT_SGD", "SUM_LOSSES",
    "CompiledRun", "SPARES", "SPARE_BYTES", "SpareBuffers", "StepTimer", "compile_watch", "end_of_epoch",
    "train_steps",
]
