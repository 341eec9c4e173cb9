r"""The three matrix products of a layer, behind one small interface.

Every layer of the network needs three products (indices as in
:mod:`nbmlp.kernels`: i = sample, j = input unit, k = output unit):

* forward          z = h @ W            z_ik   = Σ_j h_ij w_jk          :func:`matmul_nn`
* weight gradient  ∂L/∂W = hᵀ @ δ       dW_jk  = Σ_i h_ij δ_ik          :func:`matmul_tn`
* input gradient   ∂L/∂h = δ @ Wᵀ       dh_ij  = Σ_k δ_ik w_jk          :func:`matmul_nt`

In general form, with C (m x n) written in full (never accumulated into):

* ``matmul_nn(C, A, B, ws)``: C = A @ B,    A: (m, p), B: (p, n)
* ``matmul_tn(C, A, B, ws)``: C = Aᵀ @ B,   A: (p, m), B: (p, n)
* ``matmul_nt(C, A, B, ws)``: C = A @ Bᵀ,   A: (m, p), B: (n, p)

``ws`` is a 1-D scratch buffer of the operands' dtype, at least
:func:`workspace_size` (m, n, p) long, allocated once by the caller (per fit,
not per call) and passed to every call.  Each function is compiled twice
(:func:`nbmlp._jit.compile_twice`): parallel over blocks of C that one
iteration writes, and serial at ``.serial``; both are callable from other
compiled code and give bit-identical results for any thread count.

These are plain loop nests, the Σ over p ascending in every entry.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import JIT_FLAGS, compile_twice


def workspace_size(m: int, n: int, p: int) -> int:
    """Length of the scratch buffer the products need for C (m x n) with p terms per sum."""
    return 1


def workspace(m: int, n: int, p: int, dtype) -> np.ndarray:
    """A scratch buffer for products up to C (m x n) with p terms per sum, in ``dtype``."""
    return np.empty(workspace_size(m, n, p), dtype=dtype)


def _matmul_nn(C, A, B, ws):
    r"""C_rc = Σ_p A_rp B_pc  (C = A @ B); C: (m, n), A: (m, P), B: (P, n).  prange over rows r of C."""
    m, n = C.shape
    P = A.shape[1]
    for r in prange(m):
        for c in range(n):
            C[r, c] = 0.0
        for p in range(P):
            a = A[r, p]
            for c in range(n):
                C[r, c] += a * B[p, c]


def _matmul_tn(C, A, B, ws):
    r"""C_rc = Σ_p A_pr B_pc  (C = Aᵀ @ B); C: (m, n), A: (P, m), B: (P, n).  prange over rows r of C."""
    m, n = C.shape
    P = A.shape[0]
    for r in prange(m):
        for c in range(n):
            C[r, c] = 0.0
        for p in range(P):
            a = A[p, r]
            for c in range(n):
                C[r, c] += a * B[p, c]


def _matmul_nt(C, A, B, ws):
    r"""C_rc = Σ_p A_rp B_cp  (C = A @ Bᵀ); C: (m, n), A: (m, P), B: (n, P).  prange over rows r of C."""
    m, n = C.shape
    P = A.shape[1]
    for r in prange(m):
        for c in range(n):
            acc = 0.0
            for p in range(P):
                acc += A[r, p] * B[c, p]
            C[r, c] = acc


matmul_nn = compile_twice(_matmul_nn, JIT_FLAGS)
matmul_tn = compile_twice(_matmul_tn, JIT_FLAGS)
matmul_nt = compile_twice(_matmul_nt, JIT_FLAGS)

__all__ = ["matmul_nn", "matmul_nt", "matmul_tn", "workspace", "workspace_size"]
