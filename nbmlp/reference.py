r"""The vectorized NumPy reference: the twin of every kernel in :mod:`nbmlp.kernels`.

Same names, same signatures (outputs first, written in place; losses return a
float), same formulas -- written in matrix form with NumPy.  This is the
``engine="numpy"`` of :class:`nbmlp.MLP` and the yardstick the tests hold the
loop kernels against.  ``np.dot`` / ``@`` belong here and nowhere in the loop
tiers.
"""

from __future__ import annotations

import numpy as np

from .kernels import LEAKY_RELU_SLOPE


def _stable_sigmoid(z):
    # sigma(z) = 1/(1+e^{-z}) for z >= 0, e^{z}/(1+e^{z}) for z < 0: exp(-|z|) <= 1.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_forward(h, z):
    r"""h = sigma(z)."""
    h[...] = _stable_sigmoid(z)


def sigmoid_backward(dz, dh, h):
    r"""dL/dz = dL/dh ⊙ h ⊙ (1 - h)."""
    dz[...] = dh * h * (1.0 - h)


def tanh_forward(h, z):
    r"""h = tanh(z)."""
    h[...] = np.tanh(z)


def tanh_backward(dz, dh, h):
    r"""dL/dz = dL/dh ⊙ (1 - h²)."""
    dz[...] = dh * (1.0 - h * h)


def relu_forward(h, z):
    r"""h = max(z, 0)."""
    h[...] = np.maximum(z, 0.0)


def relu_backward(dz, dh, h):
    r"""dL/dz = dL/dh ⊙ [h > 0]."""
    dz[...] = np.where(h > 0.0, dh, 0.0)


def leaky_relu_forward(h, z):
    r"""h = z where z > 0, a z elsewhere (a = LEAKY_RELU_SLOPE)."""
    h[...] = np.where(z > 0.0, z, LEAKY_RELU_SLOPE * z)


def leaky_relu_backward(dz, dh, h):
    r"""dL/dz = dL/dh ⊙ (1 where h > 0, a elsewhere)."""
    dz[...] = np.where(h > 0.0, dh, LEAKY_RELU_SLOPE * dh)


def softplus_forward(h, z):
    r"""h = log(1 + e^z) = max(z, 0) + log1p(e^{-|z|})."""
    h[...] = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def softplus_backward(dz, dh, h):
    r"""dL/dz = dL/dh ⊙ sigma(z) = dL/dh ⊙ (1 - e^{-h})."""
    dz[...] = dh * -np.expm1(-h)


def identity_forward(h, z):
    r"""h = z."""
    h[...] = z


def identity_backward(dz, dh, h):
    r"""dL/dz = dL/dh."""
    dz[...] = dh


def softmax_forward(p, z):
    r"""p = softmax(z) row by row, shifted by the row maximum."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p[...] = e / e.sum(axis=1, keepdims=True)


def linear_forward(z, h_prev, W, b):
    r"""z = h_prev · W + b."""
    z[...] = h_prev @ W + b


def linear_backward_weight(dW, dz, h_prev):
    r"""dL/dW = h_prevᵀ · dL/dz."""
    dW[...] = h_prev.T @ dz


def linear_backward_bias(db, dz):
    r"""dL/db = Σ_i dL/dz_i (column sums)."""
    db[...] = dz.sum(axis=0)


def linear_backward_input(dh_prev, dz, W):
    r"""dL/dh_prev = dL/dz · Wᵀ."""
    dh_prev[...] = dz @ W.T


def half_sse_loss(h, t):
    r"""L = ½ ΣΣ (t - h)²."""
    return float(0.5 * np.sum((t - h) ** 2, dtype=np.float64))


def half_sse_backward(dh, h, t):
    r"""dL/dh = h - t."""
    dh[...] = h - t


def mse_loss(h, t):
    r"""L = mean over all n·d entries of (t - h)²."""
    return float(np.mean((t - h) ** 2, dtype=np.float64))


def mse_backward(dh, h, t):
    r"""dL/dh = 2 (h - t) / (n d)."""
    dh[...] = 2.0 * (h - t) / h.size


def softmax_cross_entropy_loss(z, t):
    r"""L = -1/n ΣΣ t ⊙ log softmax(z), with log softmax(z) = z - logsumexp(z)."""
    z64 = z.astype(np.float64)
    m = z64.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(z64 - m).sum(axis=1, keepdims=True))
    return float(np.sum(t * (lse - z64)) / z.shape[0])


def softmax_cross_entropy_backward(dz, p, t):
    r"""dL/dz = (p - t) / n."""
    dz[...] = (p - t) / p.shape[0]


def sgd_update(param, grad, lr):
    r"""theta <- theta - lr · dL/dtheta."""
    param -= lr * grad


# ---------------------------------------------------------------------------
# Twins of the update rules in nbmlp.optim (flat parameter vectors, index m)
# ---------------------------------------------------------------------------


def l2_gradient(grad, param, weight_decay):
    r"""g <- g + lambda · theta."""
    grad += weight_decay * param


def l2_penalty(param):
    r"""½ Σ theta²."""
    return float(0.5 * np.sum(np.square(param, dtype=np.float64)))


def momentum_update(param, velocity, grad, lr, momentum):
    r"""v <- mu v - lr g;  theta <- theta + v."""
    velocity[...] = momentum * velocity - lr * grad
    param += velocity


def nesterov_update(param, velocity, grad, lr, momentum):
    r"""v <- mu v - lr g;  theta <- theta + mu v - lr g."""
    velocity[...] = momentum * velocity - lr * grad
    param += momentum * velocity - lr * grad


def adam_update(param, m1, m2, grad, lr, beta1, beta2, epsilon, t):
    r"""Adam step t (Kingma & Ba 2015, Algorithm 1), bias-corrected moments."""
    m1[...] = beta1 * m1 + (1.0 - beta1) * grad
    m2[...] = beta2 * m2 + (1.0 - beta2) * grad * grad
    m_hat = m1 / (1.0 - beta1**t)
    v_hat = m2 / (1.0 - beta2**t)
    param -= lr * m_hat / (np.sqrt(v_hat) + epsilon)
