"""Shared tolerances and helpers for the test suite."""

from __future__ import annotations

import numpy as np
import pytest

#: Largest accepted normwise relative difference, max|a - b| / max|b|, between a
#: loop kernel and the NumPy reference.  float64: both sum the same terms in a
#: different order, so they differ by a few ulps times the length of the sum.
#: float32: the reference sums in float32 (BLAS / pairwise), the loops in float64
#: and round once, so the bound is the reference's own rounding error.
REL_TOL = {np.dtype("float64"): 1e-12, np.dtype("float32"): 1e-5}

#: Central finite differences, (L(θ+ε) - L(θ-ε)) / 2ε, in float64: truncation
#: error O(ε²) and cancellation error O(eps/ε) balance near ε = 1e-6; the
#: agreement expected of an exact gradient is then ~1e-8 relative; 1e-6 leaves room.
FD_EPS = 1e-6
FD_REL_TOL = 1e-6

DTYPES = (np.dtype("float64"), np.dtype("float32"))


def rel_err(actual, expected) -> float:
    """Normwise relative difference max|a - b| / max|b| (absolute when b is all zeros)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    diff = np.max(np.abs(actual - expected)) if expected.size else 0.0
    return float(diff / scale) if scale > 0.0 else float(diff)


def assert_close(actual, expected, dtype, what=""):
    """Compare with the per-dtype tolerance; on failure, show the worst pairs (as llm.c's tests do)."""
    tol = REL_TOL[np.dtype(dtype)]
    err = rel_err(actual, expected)
    if not err <= tol:
        a = np.asarray(actual).ravel()
        b = np.asarray(expected).ravel()
        worst = np.argsort(-np.abs(a - b))[:5]
        pairs = ", ".join(f"[{m}] {a[m]!r} vs {b[m]!r}" for m in worst)
        raise AssertionError(f"{what}: relative difference {err:.3e} > {tol:.0e}; worst pairs: {pairs}")


@pytest.fixture
def rng():
    return np.random.default_rng(20190925)  # the note's date
