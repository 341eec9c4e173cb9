"""nbmlp.products: the three packed, register-blocked products against NumPy, and against themselves.

Shapes aim at the blocking (:data:`nbmlp.products.BLOCKING`): the MR = 8 row
tile, the NR = 24 (float64) / 48 (float32) column tile, KC = 256 terms per
pass, NB = 480 / 960 packed columns and MC = 1024 packed rows, plus 1 x 1 x 1,
n = 1, width 1 and the plain loops below SMALL_WORK.  The reference is the
float64 product of the same operands; the error of each entry is held to a
tolerance relative to Σ_p |a_rp b_pc| (the magnitude of its sum's terms).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import DTYPES
from numba import njit

from nbmlp import products

#: Per-entry error bound relative to Σ|terms|: float64 sums of up to ~1000 terms
#: err by at most ~p·eps (1e-13); float32 ones by ~p·eps32 in the worst case.
TOL = {np.dtype("float64"): 1e-12, np.dtype("float32"): 1e-5}

#: (m, n, p): C is m x n, each entry a sum of p terms.
SHAPES = [
    (1, 1, 1), (1, 7, 5), (7, 1, 5), (5, 7, 1),          # plain loops (below SMALL_WORK), width 1
    (1, 300, 40), (300, 1, 40), (40, 300, 1),            # packed: one row, one column, one term
    (8, 24, 64), (8, 48, 64),                            # exactly one register tile
    (9, 25, 257), (17, 49, 513), (15, 23, 255),          # one past / one short of every tile and KC
    (33, 500, 70), (21, 1000, 30),                       # more than NB packed columns
    (1030, 20, 20),                                      # more than MC packed rows
    (64, 10, 300), (10, 64, 300),                        # the narrow output layer of 784-1024-10
    (1030, 60, 20), (64, 10, 2000),                      # above PARALLEL_MIN_MACS: one block per thread
    (1003, 9, 300), (77, 16, 100), (77, 17, 100),        # narrow C (A read unpacked): 1, 2, 3 vectors ...
    (501, 23, 600), (2050, 10, 70),                      # ... a last row tile cut short, and in parallel
]

NAMES = ("nn", "tn", "nt")


def operands(rng, kind, m, n, p, dtype):
    """A, B laid out as ``matmul_<kind>`` reads them, and the float64 reference C with Σ|terms|."""
    a = rng.standard_normal((m, p))
    b = rng.standard_normal((p, n))
    ref, mag = a @ b, np.abs(a) @ np.abs(b)
    A = a.T if kind == "tn" else a
    B = b.T if kind == "nt" else b
    return np.ascontiguousarray(A, dtype), np.ascontiguousarray(B, dtype), ref, mag


def check(C, ref, mag, dtype, what):
    tol = TOL[np.dtype(dtype)]
    err = np.abs(C.astype(np.float64) - ref)
    bound = tol * mag + np.finfo(np.float64).tiny
    bad = err > bound
    assert not bad.any(), f"{what}: {bad.sum()} entries off, worst {np.max(err / (mag + 1e-300)):.3g} relative"


def product(kind):
    return getattr(products, f"matmul_{kind}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("kind", NAMES)
def test_matches_numpy_serial_and_parallel_bit_identical(kind, dtype, rng):
    f = product(kind)
    for m, n, p in SHAPES:
        A, B, ref, mag = operands(rng, kind, m, n, p, dtype)
        ws = products.workspace(m, n, p, dtype)
        C = np.full((m, n), np.nan, dtype)
        f(C, A, B, ws)
        check(C, ref, mag, dtype, f"matmul_{kind} {m}x{n}x{p} {np.dtype(dtype).name}")
        C_serial = np.full((m, n), np.nan, dtype)
        f.serial(C_serial, A, B, ws)
        assert np.array_equal(C, C_serial), (kind, m, n, p)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_three_products_sum_in_the_same_order(dtype, rng):
    """Packed path: C_rc = fma chain over p ascending, whatever the operands' layout, so all three agree bit for bit."""
    for m, n, p in [(9, 25, 257), (33, 500, 70), (64, 10, 300), (1003, 9, 300)]:
        assert m * n * p >= products.SMALL_WORK
        a = rng.standard_normal((m, p)).astype(dtype)
        b = rng.standard_normal((p, n)).astype(dtype)
        ws = products.workspace(m, n, p, dtype)
        out = {}
        for kind in NAMES:
            A = np.ascontiguousarray(a.T) if kind == "tn" else a
            B = np.ascontiguousarray(b.T) if kind == "nt" else b
            out[kind] = np.empty((m, n), dtype)
            product(kind)(out[kind], A, B, ws)
        assert np.array_equal(out["nn"], out["tn"]) and np.array_equal(out["nn"], out["nt"])


@njit
def _layer_products(z, dW, dh, h, W, dz, ws):
    products.matmul_nn(z, h, W, ws)
    products.matmul_tn(dW, h, dz, ws)
    products.matmul_nt_serial(dh, dz, W, ws)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_callable_from_compiled_code(dtype, rng):
    n, d_in, d_out = 70, 33, 50
    h = rng.standard_normal((n, d_in)).astype(dtype)
    W = rng.standard_normal((d_in, d_out)).astype(dtype)
    dz = rng.standard_normal((n, d_out)).astype(dtype)
    z, dW, dh = np.empty((n, d_out), dtype), np.empty((d_in, d_out), dtype), np.empty((n, d_in), dtype)
    ws = products.workspace(max(n, d_in), max(d_out, d_in), max(n, d_in, d_out), dtype)
    _layer_products(z, dW, dh, h, W, dz, ws)
    h64, W64, dz64 = h.astype(np.float64), W.astype(np.float64), dz.astype(np.float64)
    check(z, h64 @ W64, np.abs(h64) @ np.abs(W64), dtype, "z")
    check(dW, h64.T @ dz64, np.abs(h64).T @ np.abs(dz64), dtype, "dW")
    check(dh, dz64 @ W64.T, np.abs(dz64) @ np.abs(W64).T, dtype, "dh")


def test_strided_operands_are_read_through_the_packing(rng):
    big_a = rng.standard_normal((40, 600))
    big_b = rng.standard_normal((300, 90))
    A, B = big_a[::2, ::2], big_b[:, ::3]  # (20, 300), (300, 30): neither C-contiguous
    C = np.empty((20, 30))
    products.matmul_nn(C, A, B, products.workspace(20, 30, 300, np.float64))
    check(C, A @ B, np.abs(A) @ np.abs(B), np.float64, "strided operands")


@pytest.mark.parametrize("kind", NAMES)
def test_narrow_c_reads_a_with_any_strides(kind, rng):
    """A narrow C reads A unpacked when its rows (Aᵀ's for tn) have stride 1, from a view with a longer row
    stride too, and packs it when they do not."""
    m, n, p = 203, 10, 300
    a = rng.standard_normal((m, p))
    b = rng.standard_normal((p, n))
    B = np.ascontiguousarray(b.T) if kind == "nt" else b
    big = rng.standard_normal((2 * m + 5, 2 * p + 5)) if kind != "tn" else rng.standard_normal((2 * p + 5, 2 * m + 5))
    views = {"rows stride 1, longer rows": lambda x: big[:x.shape[0], :x.shape[1]],
             "every other element": lambda x: big[:2 * x.shape[0]:2, :2 * x.shape[1]:2]}
    for what, view in views.items():
        A = view(a.T if kind == "tn" else a)
        A[...] = a.T if kind == "tn" else a
        C = np.full((m, n), np.nan)
        product(kind)(C, A, B, products.workspace(m, n, p, np.float64))
        check(C, a @ b, np.abs(a) @ np.abs(b), np.float64, f"matmul_{kind}, A {what}")


def test_micro_kernel_rate_is_a_rate_and_checks_its_dtype():
    for dtype in DTYPES:
        rate = products.micro_kernel_rate(dtype, seconds=0.01)
        assert np.isfinite(rate) and rate > 0.0
    with pytest.raises(TypeError, match="micro_kernel_rate: dtype"):
        products.micro_kernel_rate(np.int64)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="micro_kernel_rate: seconds"):
            products.micro_kernel_rate(np.float64, seconds=bad)


@pytest.mark.parametrize("kind", NAMES)
def test_operands_of_another_dtype_are_converted_and_c_must_match_ws(kind, rng):
    """A or B in float32 beside a float64 C are converted by the packing (never read in place as
    float64); a C whose dtype is not ws's is refused."""
    for m, n, p in [(64, 10, 300), (64, 200, 300), (40, 300, 60)]:
        A, B, ref, mag = operands(rng, kind, m, n, p, np.float32)
        ref = (A.T if kind == "tn" else A).astype(np.float64) @ (B.T if kind == "nt" else B).astype(np.float64)
        ws = products.workspace(m, n, p, np.float64)
        for a, b in ((A, B.astype(np.float64)), (A.astype(np.float64), B), (A, B)):
            C = np.full((m, n), np.nan)
            product(kind)(C, a, b, ws)
            check(C, ref, mag, np.float64, f"matmul_{kind} {m}x{n}x{p}, A {a.dtype}, B {b.dtype}")
        with pytest.raises(TypeError, match="C and ws must have one dtype"):
            product(kind)(np.zeros((m, n), np.float32), A, B, ws)


def test_writes_only_inside_c(rng):
    """C a block of rows inside a larger array (C-contiguous): the edge tiles touch nothing around it."""
    outer = np.full((12, 50), 7.0)
    C = outer[3:10]
    A, B = rng.standard_normal((7, 260)), rng.standard_normal((260, 50))
    products.matmul_nn(C, A, B, products.workspace(7, 50, 260, np.float64))
    check(C, A @ B, np.abs(A) @ np.abs(B), np.float64, "C inside a larger array")
    assert np.all(outer[:3] == 7.0) and np.all(outer[10:] == 7.0)


def test_non_contiguous_c_uses_the_plain_loops(rng):
    outer = np.zeros((30, 80))
    C = outer[:, ::2]
    A, B = rng.standard_normal((30, 100)), rng.standard_normal((100, 40))
    products.matmul_nn(C, A, B, products.workspace(30, 40, 100, np.float64))
    check(C, A @ B, np.abs(A) @ np.abs(B), np.float64, "strided C")
    assert np.all(outer[:, 1::2] == 0.0)


def test_empty_sum_gives_zeros_and_nan_propagates():
    ws = products.workspace(5, 6, 0, np.float64)
    C = np.full((5, 6), np.nan)
    products.matmul_nn(C, np.empty((5, 0)), np.empty((0, 6)), ws)
    assert np.all(C == 0.0)
    A, B = np.ones((40, 300)), np.ones((300, 30))
    A[3, 200] = np.nan
    C = np.empty((40, 30))
    products.matmul_nn(C, A, B, products.workspace(40, 30, 300, np.float64))
    assert np.all(np.isnan(C[3])) and not np.isnan(np.delete(C, 3, axis=0)).any()


def test_workspace_is_aligned_and_checked():
    ws = products.workspace(100, 200, 300, np.float32)
    assert ws.dtype == np.float32 and ws.ctypes.data % products.VECTOR_BYTES == 0
    assert ws.shape[0] >= products.workspace_size(100, 200, 300)
    with pytest.raises(ValueError, match="ws is shorter"):
        products.matmul_nn(np.empty((100, 200)), np.ones((100, 300)), np.ones((300, 200)), np.empty(10))
    with pytest.raises(ValueError, match="shapes"):
        products.matmul_nn(np.empty((100, 200)), np.ones((100, 300)), np.ones((299, 200)), ws.astype(np.float64))
    with pytest.raises(ValueError, match="non-negative integer"):
        products.workspace_size(-1, 2, 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        products.workspace(1, 2, 3, np.int64)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, numba
    from nbmlp import products
    rng = np.random.default_rng(5)
    if len(sys.argv) > 2:  # the block sizes for another L2 (run with a fresh NUMBA_CACHE_DIR)
        for d in (np.float64, np.float32):
            products.BLOCKING[np.dtype(d)] = products.blocking_for(d, products.VECTOR_BYTES,
                                                                   products.VECTOR_REGISTERS, int(sys.argv[2]))
    out = {"threads": numba.get_num_threads(), "vector_bytes": products.VECTOR_BYTES,
           "tiles": [products.BLOCKING[np.dtype(d)][:2] for d in (np.float64, np.float32)],
           "nb": [products.BLOCKING[np.dtype(d)][4] for d in (np.float64, np.float32)]}
    for dtype in (np.float64, np.float32):
        for m, n, p in [(70, 530, 300), (1030, 10, 120), (17, 49, 513), (13, 35, 77), (6, 8, 300)]:
            a = rng.standard_normal((m, p)).astype(dtype)
            b = rng.standard_normal((p, n)).astype(dtype)
            ws = products.workspace(m, n, p, dtype)
            aT, bT = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
            for kind, A, B in (("nn", a, b), ("tn", aT, b), ("nt", a, bT)):
                C = np.empty((m, n), dtype)
                getattr(products, "matmul_" + kind)(C, A, B, ws)
                out[f"{kind}_{m}_{n}_{p}_{np.dtype(dtype).name}"] = C
    np.savez(sys.argv[1], **out)
""")


#: What SCRIPT reports about its run besides the products' results.
SCRIPT_FACTS = ("threads", "vector_bytes", "tiles", "nb")


def run_script(out, *args, env=None, drop=()):
    """SCRIPT's npz, run in a child with ``os.environ`` less ``drop``, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in drop}
    subprocess.run([sys.executable, "-c", SCRIPT, str(out), *args], env={**base, **(env or {})}, check=True,
                   timeout=900)
    return np.load(out)


def assert_same_products(a, b):
    for key in a.files:
        if key not in SCRIPT_FACTS:
            assert np.array_equal(a[key], b[key]), key


def test_bit_identical_with_numba_num_threads_1_and_2(tmp_path):
    results = {threads: run_script(tmp_path / f"threads{threads}.npz", env={"NUMBA_NUM_THREADS": str(threads)})
               for threads in (1, 2)}
    assert int(results[1]["threads"]) == 1 and int(results[2]["threads"]) == 2
    assert_same_products(results[1], results[2])


#: x86-64 targets without AVX-512 (Numba's NUMBA_CPU_NAME, NUMBA_CPU_FEATURES), compiled and run on this
#: machine where it has their features: (vector bytes, (MR, NR) float64, (MR, NR) float32) expected.
TARGETS = {
    "avx2": ("haswell", "+avx,+avx2,+fma,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+f16c,+bmi,+bmi2,"
             "+lzcnt,+movbe,-avx512f", (32, [6, 8], [6, 16])),
    "sse2": ("x86-64", "+sse,+sse2,-avx,-avx2,-fma,-avx512f", (16, [6, 4], [6, 8])),
}


@pytest.mark.parametrize("target", TARGETS)
def test_tile_fits_the_target_and_the_bits_do_not_change(target, tmp_path):
    """Without AVX-512 the tile shrinks to the target's registers; every sum is the same chain of fmas."""
    import platform

    import llvmlite.binding as ll

    cpu, features, (vector_bytes, tile64, tile32) = TARGETS[target]
    host = ll.get_host_cpu_features()
    needed = [f[1:] for f in features.split(",") if f.startswith("+")]
    if platform.machine().lower() not in ("x86_64", "amd64") or not all(host.get(f, False) for f in needed):
        pytest.skip(f"this machine cannot run {target} code")
    drop = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")
    native = run_script(tmp_path / "native.npz", drop=drop)
    other = run_script(tmp_path / f"{target}.npz", drop=drop,
                       env={"NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features})
    assert int(other["vector_bytes"]) == vector_bytes
    assert other["tiles"].tolist() == [tile64, tile32]
    assert_same_products(native, other)


def test_block_of_b_shrinks_with_the_l2_and_the_bits_do_not_change(tmp_path):
    """NB follows a smaller L2 (a multiple of NR, at least one panel); the sums stay the same chains."""
    vb, regs = products.VECTOR_BYTES, products.VECTOR_REGISTERS
    for dtype in (np.float64, np.float32):
        MR, NR, KC, MC, NB = products.blocking_for(dtype, vb, regs, products.MEASURED_L2_BYTES)
        assert products.blocking_for(dtype, vb, regs, None) == (MR, NR, KC, MC, NB)
        assert products.blocking_for(dtype, vb, regs, 4 * products.MEASURED_L2_BYTES)[4] == NB
        for l2 in (products.MEASURED_L2_BYTES // 2, 512 << 10, 256 << 10, 1 << 10):
            nb = products.blocking_for(dtype, vb, regs, l2)[4]
            assert nb % NR == 0 and NR <= nb <= max(NR, NB * l2 // products.MEASURED_L2_BYTES), (l2, nb)
    assert products.blocking_for(np.float64, 64, 32, 512 << 10)[4] == 120  # 1/4 of the L2: 1/4 of 480
    for width, registers, l2 in itertools.product((8, 16, 32, 64, 128, 256), (16, 32), (None, 1 << 20, 1 << 10)):
        MR, NR, KC, MC, NB = products.blocking_for(np.float32, width, registers, l2)
        assert NR == (3 if registers == 32 else 2) * width // 4 and NB % NR == 0 and NB >= NR
    with pytest.raises(TypeError, match="blocking_for: dtype must be float32 or float64, got int8"):
        products.blocking_for(np.int8, vb, regs, None)
    for bad in (0, 4, 24, 512):
        with pytest.raises(ValueError, match="blocking_for: vector_bytes must be a power of two from 8 to 256"):
            products.blocking_for(np.float64, bad, regs, None)
    native = run_script(tmp_path / "native.npz")
    fresh = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}  # nothing compiled with the native block sizes
    small = run_script(tmp_path / "small.npz", str(256 << 10), env=fresh)
    assert small["nb"].tolist() == [products.blocking_for(d, vb, regs, 256 << 10)[4] for d in (np.float64, np.float32)]
    assert small["nb"].tolist() != native["nb"].tolist()
    assert_same_products(native, small)


def test_l2_size_is_read_from_sysfs(tmp_path):
    def cache(name, level, kind, size):
        d = tmp_path / name
        d.mkdir(parents=True)
        for f, v in (("level", level), ("type", kind), ("size", size)):
            (d / f).write_text(v + "\n")

    assert products.l2_bytes(tmp_path / "none") is None
    cache("a/index0", "1", "Data", "48K")
    cache("a/index1", "1", "Instruction", "64K")
    cache("a/index2", "2", "Unified", "2048K")
    assert products.l2_bytes(tmp_path / "a") == 2 << 20
    cache("b/index0", "2", "Unified", "1M")
    assert products.l2_bytes(tmp_path / "b") == 1 << 20
    cache("c/index0", "2", "Unified", "garbage")
    cache("d/index0", "2", "Instruction", "512K")
    assert products.l2_bytes(tmp_path / "c") is None and products.l2_bytes(tmp_path / "d") is None
