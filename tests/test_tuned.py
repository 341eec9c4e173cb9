"""The tuned loop tier (engine "tuned") against the NumPy reference, and against itself across threads.

The lead's suite (tests/test_core_kernels.py) already runs every engine in
``nbmlp.ENGINES`` -- "tuned" included -- over edge shapes; here the tuned tier's
own code paths are aimed at: shapes that cross the products' blocks (the 8-row
register tile, the 24 / 48-column tile, KC = 256 terms; nbmlp.products, tested
on its own in tests/test_products.py), narrow outputs (computed as Cᵀ), the
plain loops below products.SMALL_WORK, its 4096-element chunks, serial and
parallel compilations, and the vectorized exp.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from conftest import DTYPES, assert_close
from test_core_kernels import check_kernel

from nbmlp import kernels_tuned as kt
from nbmlp import ops, parallel, reference
from nbmlp.engines import KERNEL_NAMES, get_engine

#: Largest accepted relative error of exp_nonpositive against NumPy's exp, where
#: the result is a normal float: a few ulp (it is about 1 ulp, measured).
EXP_REL_TOL = 4 * np.finfo(np.float64).eps

#: (n, d_in, d_out): below products.SMALL_WORK multiply-adds (plain loops: 1x1x1, 7x8x9, ...);
#: packed, across the 8-row tile and the 24 / 48-column tile (65, 257, 49), more than KC = 256
#: terms (d_in = 300, n = 300), narrow outputs (d_out = 3, 10: computed as Cᵀ), width-1 layers, n = 1.
TILE_SHAPES = [(1, 1, 1), (1, 9, 17), (7, 8, 9), (9, 17, 8), (65, 9, 257), (70, 300, 3), (16, 1, 40),
               (3, 33, 1), (129, 16, 16), (8, 8, 8), (300, 49, 10), (1, 300, 49)]


@pytest.fixture(params=["serial", "parallel"])
def forced(request, monkeypatch):
    """Run every tuned kernel in its serial, or its parallel, compilation whatever the size."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN_WORK", 1 << 62 if request.param == "serial" else 0)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_tuned_kernel_matches_reference_across_tiles(name, dtype, forced, rng):
    for n, d_in, d_out in TILE_SHAPES:
        check_kernel("tuned", name, rng, n, d_in, d_out, dtype)


#: Every kernel of the table but the linear layer's: activations, losses, the update.
ELEMENTWISE = [name for name, (role, _) in ops.kernel_roles().items() if not role.startswith("linear")]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_elementwise_kernels_cross_chunk_boundaries(dtype, forced, rng):
    for name in ELEMENTWISE:
        check_kernel("tuned", name, rng, 3 * kt.CHUNK // 7 + 5, 1, 7, dtype)  # 7 columns: chunks split rows


def test_exp_nonpositive_against_numpy():
    @numba.njit
    def evaluate(out, x):
        for m in range(x.shape[0]):
            out[m] = kt.exp_nonpositive(x[m])

    x = -np.concatenate([np.linspace(0.0, 708.0, 200_001), np.random.default_rng(1).exponential(3.0, 10_000)])
    out = np.empty_like(x)
    evaluate(out, x)
    np.testing.assert_allclose(out, np.exp(x), rtol=EXP_REL_TOL, atol=0.0)
    # subnormal results, underflow to 0, and the special values
    x = np.array([-720.0, -745.0, -746.0, -1000.0, -np.inf, 0.0, -0.0, np.nan])
    evaluate(out[:8], x)
    np.testing.assert_allclose(out[:4], np.exp(x[:4]), rtol=1e-3, atol=0.0)
    assert out[3] == 0.0 and out[4] == 0.0 and out[5] == 1.0 and out[6] == 1.0 and np.isnan(out[7])


def test_expm1_and_log1p_against_numpy():
    """The vectorizable e^x - 1 (x <= 0) and log(1 + e) (0 <= e <= 1) of the tuned softplus, to a few ulp."""
    @numba.njit
    def evaluate(out_expm1, out_log1p, x, e):
        for m in range(x.shape[0]):
            out_expm1[m] = kt.expm1_nonpositive(x[m])
            out_log1p[m] = kt.log1p_unit(e[m])

    rng = np.random.default_rng(2)
    # both sides of the switch at -ln2/2, tiny arguments (no cancellation allowed), down to underflow
    x = -np.concatenate([np.linspace(0.0, 2.0, 100_001), 10.0 ** rng.uniform(-300, 2.8, 10_000), [0.3465735902799726]])
    e = np.concatenate([np.linspace(0.0, 1.0, 100_001), 10.0 ** rng.uniform(-300, 0, 10_001)])
    out_expm1, out_log1p = np.empty_like(x), np.empty_like(e)
    evaluate(out_expm1, out_log1p, x, e)
    np.testing.assert_allclose(out_expm1, np.expm1(x), rtol=EXP_REL_TOL, atol=0.0)
    np.testing.assert_allclose(out_log1p, np.log1p(e), rtol=EXP_REL_TOL, atol=0.0)
    special = np.array([np.nan, -np.inf, 0.0])
    evaluate(out_expm1[:3], out_log1p[:3], special, np.array([np.nan, 0.0, 1.0]))
    assert np.isnan(out_expm1[0]) and out_expm1[1] == -1.0 and out_expm1[2] == 0.0
    assert np.isnan(out_log1p[0]) and out_log1p[1] == 0.0 and out_log1p[2] == pytest.approx(np.log(2.0), rel=1e-16)


def test_sigmoid_propagates_nan_and_saturates():
    z = np.array([[np.nan, np.inf, -np.inf, 745.0, -745.0]])
    h = np.empty_like(z)
    kt.sigmoid_forward(h, z)
    assert np.isnan(h[0, 0])
    np.testing.assert_array_equal(h[0, 1:4], [1.0, 0.0, 1.0])
    assert 0.0 < h[0, 4] < 1e-300


def test_non_contiguous_arguments_fall_back_to_the_literal_loops(rng):
    z = rng.normal(size=(6, 8))[:, ::2]
    h = np.empty((6, 4))
    expected = np.empty_like(h)
    get_engine("tuned").sigmoid_forward(h, z)
    reference.sigmoid_forward(expected, z)
    assert_close(h, expected, np.float64, "sigmoid_forward on a strided view")


def test_parallel_and_serial_compilations_are_bit_identical(rng):
    X = rng.normal(size=(300, 70))
    W = rng.normal(size=(70, 260))
    dz = rng.normal(size=(300, 260))
    b = rng.normal(size=260)
    outs = {}
    for label, threshold in (("serial", 1 << 62), ("parallel", 0)):
        saved = parallel.PARALLEL_MIN_WORK
        parallel.PARALLEL_MIN_WORK = threshold
        try:
            z = np.empty((300, 260))
            kt.linear_forward(z, X, W, b)
            dW = np.empty((70, 260))
            kt.linear_backward_weight(dW, dz, X)
            dh = np.empty((300, 70))
            kt.linear_backward_input(dh, dz, W)
            loss = kt.half_sse_loss(z, dz)
            outs[label] = (z, dW, dh, np.array(loss))
        finally:
            parallel.PARALLEL_MIN_WORK = saved
    for a, b_ in zip(outs["serial"], outs["parallel"], strict=True):
        assert np.array_equal(a, b_)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, numba
    from nbmlp import MLP
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 70))
    T = rng.random((300, 10))
    g = MLP((70, 260, 10), seed=3, engine="tuned").gradients(X, T)
    np.savez(sys.argv[1], threads=numba.get_num_threads(), loss=g.loss, *(g.W + g.b + g.dL_dz))
""")


def test_bit_identical_with_numba_num_threads_1_and_2(tmp_path):
    results = {}
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}.npz"
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, check=True, timeout=600)
        results[threads] = np.load(out)
    assert int(results[1]["threads"]) == 1 and int(results[2]["threads"]) == 2
    for key in results[1].files:
        if key != "threads":
            assert np.array_equal(results[1][key], results[2][key]), key


#: float32 exp / sigmoid of the fused loop's float32 path: a few float32 ulp where the result is normal.
EXP_F32_REL_TOL = 4 * np.finfo(np.float32).eps


def test_exp_nonpositive_f32_against_numpy():
    @numba.njit
    def evaluate(out, x):
        for m in range(x.shape[0]):
            out[m] = kt.exp_nonpositive_f32(x[m])

    x = -np.concatenate([np.linspace(0.0, 87.0, 200_001), np.random.default_rng(2).exponential(3.0, 10_000)])
    x = x.astype(np.float32)
    out = np.empty_like(x)
    evaluate(out, x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.exp(x.astype(np.float64)), rtol=EXP_F32_REL_TOL, atol=0.0)
    x = np.array([-95.0, -103.0, -104.0, -200.0, -np.inf, 0.0, -0.0, np.nan], np.float32)
    evaluate(out[:8], x)
    np.testing.assert_allclose(out[:3], np.exp(x[:3].astype(np.float64)), rtol=1e-2, atol=2e-45)
    assert out[3] == 0.0 and out[4] == 0.0 and out[5] == 1.0 and out[6] == 1.0 and np.isnan(out[7])


def test_sigmoid_fast_f32_against_float64():
    @numba.njit
    def evaluate(out, z):
        for m in range(z.shape[0]):
            out[m] = kt.sigmoid_fast_f32(z[m])

    z = np.concatenate([np.linspace(-80.0, 80.0, 100_001), [np.inf, -np.inf, np.nan]]).astype(np.float32)
    out = np.empty_like(z)
    evaluate(out, z)
    expected = 1.0 / (1.0 + np.exp(-z[:-3].astype(np.float64)))
    np.testing.assert_allclose(out[:-3], expected, rtol=EXP_F32_REL_TOL, atol=0.0)
    assert out[-3] == 1.0 and out[-2] == 0.0 and np.isnan(out[-1])


#: The tuned tier's flags without the disk cache: its helpers are inlined into the caller and take the
#: caller's flags (with "contract" LLVM may fuse a * b + c, which changes the last bit).
TUNED_FLAGS_UNCACHED = {k: v for k, v in kt.TUNED_FLAGS.items() if k != "cache"}


@numba.njit(**TUNED_FLAGS_UNCACHED)
def _sigmoid_f32_loop(out, z):
    for m in range(z.shape[0]):
        out[m] = kt.sigmoid_fast_f32(z[m])


@numba.njit(**TUNED_FLAGS_UNCACHED)
def _sigmoid_f64_loop(out, z):
    for m in range(z.shape[0]):
        out[m] = kt.sigmoid_fast(z[m])


def sigmoid_elementwise(z):
    """σ of every element by the scalar helper of z's dtype (sigmoid_fast_f32 / sigmoid_fast), one at a time."""
    flat = np.ascontiguousarray(z).reshape(-1)
    out = np.empty_like(flat)
    (_sigmoid_f32_loop if z.dtype == np.float32 else _sigmoid_f64_loop)(out, flat)
    return out.reshape(z.shape)


def sigmoid_exact(z):
    """σ(z) in long double (80-bit on x86), independent of the kernels."""
    return 1.0 / (1.0 + np.exp(-z.astype(np.longdouble)))


#: Largest relative error of the float64 sigmoid_fast against sigmoid_exact: exp's 4 ulp, the rounding
#: of 1 + e, of the division and of e * s.
SIGMOID_REL_TOL = 8 * np.finfo(np.float64).eps

#: (n, d) of the sigmoid kernel tests: n = 1, width 1, odd shapes, and one across the 4096-element chunks.
SIGMOID_SHAPES = [(1, 1), (1, 7), (9, 1), (13, 17), (3 * kt.CHUNK // 7 + 5, 7)]


def _sigmoid_inputs(rng, n, d, dtype):
    z = (rng.normal(size=(n, d)) * 4).astype(dtype)
    z.flat[::11] = 0.0
    return z


def test_sigmoid_same_type_picks_the_float_type():
    z32 = np.linspace(-30.0, 30.0, 1001, dtype=np.float32)
    z64 = z32.astype(np.float64)
    from_python = np.array([kt.sigmoid_same_type(x) for x in z32])
    assert from_python.dtype == np.float32
    np.testing.assert_array_equal(from_python, sigmoid_elementwise(z32))
    np.testing.assert_array_equal([kt.sigmoid_same_type(x) for x in z64], sigmoid_elementwise(z64))

    @numba.njit(**TUNED_FLAGS_UNCACHED)
    def compiled(out, z):
        for m in range(z.shape[0]):
            out[m] = kt.sigmoid_same_type(z[m])

    for z in (z32, z64):
        out = np.empty_like(z)
        compiled(out, z)
        np.testing.assert_array_equal(out, sigmoid_elementwise(z))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_sigmoid_forward_computes_in_the_arrays_float_type(dtype, forced, rng):
    """float32: bit for bit sigmoid_fast_f32 (float32 arithmetic), not float64 math rounded to float32;
    float64: bit for bit sigmoid_fast, as before float32 got its own path.  Both near the exact σ."""
    for n, d in SIGMOID_SHAPES:
        z = _sigmoid_inputs(rng, n, d, dtype)
        h = np.full_like(z, np.nan)
        kt.sigmoid_forward(h, z)
        assert h.dtype == dtype
        np.testing.assert_array_equal(h, sigmoid_elementwise(z), err_msg=f"{n}x{d}")
        rtol = EXP_F32_REL_TOL if dtype == np.float32 else SIGMOID_REL_TOL
        np.testing.assert_allclose(h.astype(np.longdouble), sigmoid_exact(z), rtol=rtol, atol=0.0,
                                   err_msg=f"{n}x{d}")
    if dtype == np.float32:
        # the bit-for-bit check above tells the two apart: float64 math rounded to float32 differs
        z64_rounded = sigmoid_elementwise(z.astype(np.float64)).astype(np.float32)
        assert np.count_nonzero(z64_rounded != h) > 0


def test_sigmoid_float32_propagates_nan_and_saturates():
    z = np.array([[np.nan, np.inf, -np.inf, 88.0, -87.0, 0.0]], np.float32)
    h = np.empty_like(z)
    kt.sigmoid_forward(h, z)
    assert np.isnan(h[0, 0])
    np.testing.assert_array_equal(h[0, [1, 2, 3, 5]], np.array([1.0, 0.0, 1.0, 0.5], np.float32))
    assert 0.0 < h[0, 4] < 1e-37


def _lanes_reference(x, y):
    """Σ x_i y_i in lane_dot's documented order, one term at a time (numpy scalars, no FMA)."""
    lanes = [x.dtype.type(0)] * kt.LANES
    full = len(x) // kt.LANES * kt.LANES
    for i in range(full):
        lanes[i % kt.LANES] = lanes[i % kt.LANES] + x[i] * y[i]
    half = kt.LANES // 2
    while half >= 1:
        lanes = [lanes[r] + lanes[r + half] for r in range(half)]
        half //= 2
    total = lanes[0]
    for i in range(full, len(x)):
        total = total + x[i] * y[i]
    return total


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_lane_sums_follow_their_documented_order(dtype, rng):
    @numba.njit(fastmath={"contract"})
    def run(x, y, a, b):
        return (kt.lane_dot(x, y), kt.lane_sum(x), kt.lane_dot_rows(a, 1, b, 2), kt.lane_sum_row(a, 1))

    # integers (exact in any order and with or without FMA) pin the lane assignment and the
    # tail; random values compare against the documented order up to FMA rounding
    for n in (0, 1, 15, 16, 17, 33, 150, 160):
        x = rng.integers(-50, 50, n).astype(dtype)
        y = rng.integers(-50, 50, n).astype(dtype)
        a = np.stack([y, x, y])
        b = np.stack([x, x, y])
        d, s, dr, sr = run(x, y, a, b)
        assert d == _lanes_reference(x, y) == dr
        assert s == _lanes_reference(x, np.ones_like(x)) == sr
        xr = rng.normal(size=n).astype(dtype)
        yr = rng.normal(size=n).astype(dtype)
        d, s, _, _ = run(xr, yr, np.stack([xr] * 3), np.stack([yr] * 3))
        scale = np.abs(xr.astype(np.float64) * yr).sum() + 1e-30
        assert abs(d - _lanes_reference(xr, yr)) <= 4 * np.finfo(dtype).eps * scale
        assert abs(s - xr.astype(np.float64).sum()) <= 4 * np.finfo(dtype).eps * (np.abs(xr).sum() + 1e-30)
