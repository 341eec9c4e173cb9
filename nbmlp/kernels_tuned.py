r"""The tuned loop tier: the formulas of :mod:`nbmlp.kernels`, with loops rearranged for speed.

Same kernel names, same signatures, same formulas as the literal tier; the
tests hold both against :mod:`nbmlp.reference` with the same tolerances.  It is
registered by :mod:`nbmlp.engines` as the engine ``"tuned"`` (``MLP(engine="tuned")``).  Everything is
still an explicit Numba loop: no BLAS call, no NumPy array expression in a
kernel.  What changes, and why:

1. **Matrix products are packed and register-blocked** (:mod:`nbmlp.products`).
   The literal ``linear_forward`` runs ``for i: for k: for j: acc += h[i, j] W[j, k]``:
   the innermost j walks *down a column* of W (stride d_out), and one
   accumulator is a serial chain of dependent adds, so nothing vectorizes.
   Here the three products of a layer are :func:`nbmlp.products.matmul_nn`
   (z = h @ W, then + b), :func:`~nbmlp.products.matmul_tn` (∂L/∂W = h_prevᵀ @ ∂L/∂z)
   and :func:`~nbmlp.products.matmul_nt` (∂L/∂h_prev = ∂L/∂z @ Wᵀ): panels of both
   operands packed into a per-thread scratch buffer (transposes are read by
   the packing, nothing is copied whole), an 8-row register tile of C updated
   by 512-bit fused multiply-adds, blocks sized for the caches.  Each Σ runs
   over its index in ascending order, the bias is added after it.
2. :func:`tile_product`, the earlier 8 x 8 register tile, stays for nbmlp.fused's
   compiled loop.
3. **Element-wise kernels run on the flattened n·d array** in chunks of
   :data:`CHUNK` elements, so short rows (d = 3) still fill SIMD lanes.
4. **exp is a vectorizable polynomial** (:func:`exp_nonpositive`).  Numba's
   ``math.exp`` is a scalar libm call (~4 ns; numba 0.62 dropped SVML), which
   makes the sigmoids the biggest cost of a small network.  Every exp in the
   sigmoid, softmax and cross-entropy has an argument <= 0 (the stable forms
   use exp(-|z|) and exp(z - max z)), so one routine valid on (-inf, 0] with a
   relative error of about 2 ulp suffices; it is plain arithmetic plus a
   bit-cast, which LLVM vectorizes.  softplus uses the same series for
   e^x - 1 (:func:`expm1_nonpositive`) and a series in atanh for log(1 + e),
   0 <= e <= 1 (:func:`log1p_unit`).
5. **Sums over a whole array** (the losses) add fixed chunks of
   :data:`CHUNK` elements, then the chunk totals in order: the result does
   not depend on the number of threads.
6. **Helpers for nbmlp.fused's compiled loop** (not used by the kernels
   below): :func:`lane_dot` / :func:`lane_sum`, sums over samples in 16
   interleaved partial sums written as explicit LLVM vector code (fixed order,
   vectorized without ``reassoc``).
7. **float32 arrays accumulate in float32** (as BLAS does) so the vector
   loops run 8 lanes wide instead of converting to float64; the literal tier
   accumulates in float64.  The float32 tolerance (1e-5) covers both.
8. **float32 arrays get a float32 sigmoid**: :func:`sigmoid_same_type` is
   :func:`sigmoid_fast_f32` (:func:`exp_nonpositive_f32` and the division in
   float32, 8 lanes per 256-bit vector) for float32 z and :func:`sigmoid_fast`
   otherwise.  ``sigmoid_forward`` here, :mod:`nbmlp.compiled` and
   :mod:`nbmlp.fused` all compute σ with it.

Flags (:data:`TUNED_FLAGS`): ``fastmath={"contract"}`` only, which lets LLVM
fuse ``a * b + c`` into one FMA (one rounding instead of two).  No ``reassoc``
(every sum keeps the order written), no ``nnan``/``ninf`` (NaN and inf are
real inputs: a diverging run must be detected).  ``error_model="numpy"``: a
division does not test its divisor for zero first (that test is a branch that
keeps the sigmoid's 1/(1 + e) from vectorizing); no divisor here can be zero.

Parallelism follows the literal tier's rule: ``prange`` runs over tiles or
chunks whose output slots only that iteration writes, every sum stays inside
one iteration, so results are bit-identical for any thread count.  Each
kernel has a serial compilation at ``.serial``; the public functions below
pick serial or parallel by the amount of work through :func:`nbmlp.parallel.call`.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic, overload

from . import kernels as literal
from . import products
from ._jit import compile_twice
from .parallel import call

#: Compile flags of the tuned tier, in one place.  "contract" allows fused
#: multiply-add; nothing else (no reassociation, NaN/inf stay meaningful).
#: error_model="numpy": a float division by zero gives inf/NaN as in NumPy instead
#: of raising ZeroDivisionError; the Python model's zero test before every
#: division is a branch that stops LLVM from vectorizing the sigmoid's 1/(1 + e).
TUNED_FLAGS = {"cache": True, "fastmath": {"contract"}, "nogil": True, "error_model": "numpy"}

#: Elements per chunk of the flat element-wise kernels and the loss sums.
CHUNK = 4096

#: Columns per panel of :func:`tile_product` (the register-tiled product of nbmlp.fused)
#: and per prange iteration of :func:`_column_sums`.
TILE_COLS = 256



def tuned_kernel(py_func):
    """Compile ``py_func`` with :data:`TUNED_FLAGS`: parallel, and serial at ``.serial``."""
    return compile_twice(py_func, TUNED_FLAGS)


def tuned_helper(py_func):
    return njit(inline="always", **TUNED_FLAGS)(py_func)


# ---------------------------------------------------------------------------
# exp on (-inf, 0], vectorizable
# ---------------------------------------------------------------------------


@intrinsic
def _bits_as_float64(typingctx, bits):
    """Reinterpret the 64 bits of an int64 as a float64 (no conversion)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LOG2E = 1.4426950408889634
# ln 2 split in two (Cody & Waite): LN2_HI has trailing zero bits, so n * LN2_HI is exact for |n| < 2^11.
_LN2_HI = 0.693147180369123816490
_LN2_LO = 1.90821492927058770002e-10


@intrinsic
def _float64_bits(typingctx, x):
    """Reinterpret the 64 bits of a float64 as an int64 (no conversion)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


#: 1.5 * 2^52: adding it to |y| < 2^51 rounds y to an integer held in the low bits of the sum.
_ROUND_SHIFT = 6755399441055744.0


@tuned_helper
def exp_series_tail(r):
    r"""H(r) = Σ_{k=2}^{13} r^(k-2) / k!, so that e^r = 1 + (r + r^2 H(r)) for |r| <= ln2 / 2.

    The remainder of the series is below 5e-18 relative there.  Estrin's scheme:
    pairs in r, then r^2, then r^4 (5 dependent steps instead of 12 for Horner).
    """
    r2 = r * r
    a0 = (1.0 / 6.0) * r + 0.5
    a1 = (1.0 / 120.0) * r + 1.0 / 24.0
    a2 = (1.0 / 5040.0) * r + 1.0 / 720.0
    a3 = (1.0 / 362880.0) * r + 1.0 / 40320.0
    a4 = (1.0 / 39916800.0) * r + 1.0 / 3628800.0
    a5 = (1.0 / 6227020800.0) * r + 1.0 / 479001600.0
    b0 = a1 * r2 + a0
    b1 = a3 * r2 + a2
    b2 = a5 * r2 + a4
    r4 = r2 * r2
    return (b2 * r4 + b1) * r4 + b0


@tuned_helper
def exp_nonpositive(x):
    r"""e^x for x <= 0 (and NaN), in float64 arithmetic, without a libm call.

    x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2; e^r by its Taylor
    series to r^13 (remainder < 5e-18 relative), and 2^n built from its bits
    as 2^(n - n//2) 2^(n//2) so that subnormal results (x < -708) come out
    right.  Arguments below -746 give 0 (as e^x underflows there).  Not for
    x > 0: 2^n would overflow at n > 1023.

    Written for a short dependency chain (changed after measuring: the
    vectorized loop ran one vector per iteration and waited on this chain,
    ~21 cycles per 4 values, half the cost of a 4-5-3 epoch):

    - n by the "shifter" trick, t = x/ln2 + 1.5·2^52 (the addition rounds to
      an integer, n's bits are the low bits of t) instead of floor + two
      conversions (~16 cycles of latency saved);
    - e^r = 1 + (r + r^2 H(r)), H(r) = Σ_{k=2}^{13} r^(k-2)/k! evaluated by
      Estrin's scheme (pairs in r, then r^2, then r^4: 5 dependent steps
      instead of 12 for Horner).  The 1 + r + r^2 H form keeps the rounding
      of the small terms away from the result; the tests hold it to 4 ulp of
      NumPy's exp (it is about 1 ulp).
    """
    if x < -746.0:  # written this way round so that NaN passes through
        x = -746.0
    t = x * _LOG2E + _ROUND_SHIFT
    nf = t - _ROUND_SHIFT  # exact: n as a float
    n = _float64_bits(t) - _float64_bits(_ROUND_SHIFT)
    r = (x - nf * _LN2_HI) - nf * _LN2_LO
    r2 = r * r
    h = exp_series_tail(r)
    p = 1.0 + (h * r2 + r)
    n1 = n >> 1
    n2 = n - n1
    return p * _bits_as_float64((n1 + 1023) << 52) * _bits_as_float64((n2 + 1023) << 52)


@tuned_helper
def sigmoid_fast(z):
    r"""sigma(z) with e = exp(-|z|) <= 1: 1/(1+e) for z >= 0, e/(1+e) for z < 0 (never overflows)."""
    e = exp_nonpositive(-abs(z))
    s = 1.0 / (1.0 + e)
    return s if z >= 0.0 else e * s


#: ln 2 / 2: below it in magnitude, e^x - 1 is summed from its series (no cancellation).
_HALF_LN2 = 0.34657359027997264


@tuned_helper
def expm1_nonpositive(x):
    r"""e^x - 1 for x <= 0 (and NaN), without a libm call and without cancellation near 0.

    For -ln2/2 <= x <= 0: x + x^2 H(x), the series of :func:`exp_nonpositive` without
    its leading 1; below that, e^x - 1 <= -0.29, so exp_nonpositive(x) - 1 loses nothing.
    """
    if x >= -_HALF_LN2:  # NaN takes the other branch and stays NaN
        return exp_series_tail(x) * (x * x) + x
    return exp_nonpositive(x) - 1.0


@tuned_helper
def log1p_unit(e):
    r"""log(1 + e) for 0 <= e <= 1 (and NaN), without a libm call.

    log(1 + e) = 2 atanh(s) with s = e / (2 + e) in [0, 1/3] (formed without
    cancellation), = 2 s Σ_{k=0}^{15} s^(2k) / (2k + 1).  Every term is positive;
    the first one left out is below (1/9)^16 / 33 < 2e-17 relative.  Estrin's
    scheme in w = s^2.  Used by softplus on e = exp(-|z|).
    """
    s = e / (2.0 + e)
    w = s * s
    c0 = (1.0 / 3.0) * w + 1.0
    c1 = (1.0 / 7.0) * w + 1.0 / 5.0
    c2 = (1.0 / 11.0) * w + 1.0 / 9.0
    c3 = (1.0 / 15.0) * w + 1.0 / 13.0
    c4 = (1.0 / 19.0) * w + 1.0 / 17.0
    c5 = (1.0 / 23.0) * w + 1.0 / 21.0
    c6 = (1.0 / 27.0) * w + 1.0 / 25.0
    c7 = (1.0 / 31.0) * w + 1.0 / 29.0
    w2 = w * w
    d0 = c1 * w2 + c0
    d1 = c3 * w2 + c2
    d2 = c5 * w2 + c4
    d3 = c7 * w2 + c6
    w4 = w2 * w2
    f0 = d1 * w4 + d0
    f1 = d3 * w4 + d2
    return 2.0 * s * (f1 * (w4 * w4) + f0)


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret the 32 bits of an int32 as a float32 (no conversion)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


# float32 constants of exp_nonpositive_f32 (Cephes expf): ln 2 = _LN2_HI_F32 + _LN2_LO_F32, the high
# part with 9 significant bits, so n * _LN2_HI_F32 is exact in float32 for |n| < 2^15.
_LOG2E_F32 = np.float32(1.44269504088896341)
_LN2_HI_F32 = np.float32(0.693359375)
_LN2_LO_F32 = np.float32(-2.12194440e-4)
_EXPF_P0 = np.float32(1.9875691500e-4)
_EXPF_P1 = np.float32(1.3981999507e-3)
_EXPF_P2 = np.float32(8.3334519073e-3)
_EXPF_P3 = np.float32(4.1665795894e-2)
_EXPF_P4 = np.float32(1.6666665459e-1)
_EXPF_P5 = np.float32(5.0000001201e-1)
_F32_ONE = np.float32(1.0)
_F32_HALF = np.float32(0.5)
_F32_MIN_ARG = np.float32(-104.0)


@intrinsic
def _float32_bits(typingctx, x):
    """Reinterpret the 32 bits of a float32 as an int32 (no conversion)."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


_ROUND_SHIFT_F32 = np.float32(12582912.0)  # 1.5 * 2^23


@tuned_helper
def exp_nonpositive_f32(x):
    r"""e^x for float32 x <= 0 (and NaN), in float32 arithmetic: the float32 twin of :func:`exp_nonpositive`.

    For float32 arrays (:func:`sigmoid_same_type`): computing the sigmoid in
    float32 runs 8 lanes per 256-bit vector instead of 4 and replaces the
    float64 division by a float32 one.  Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2,
    e^r = 1 + (r + r^2 P(r)) with a degree-5 minimax P (relative error about
    1e-7, i.e. 1 float32 ulp; the float32 tolerance against the reference is
    1e-5), 2^n from its bits in two halves so that subnormal results come out
    right.  Arguments below -104 give 0.  As in :func:`exp_nonpositive`, n
    comes from the shifter trick and P is evaluated by Estrin's scheme, for a
    short dependency chain.
    """
    if x < _F32_MIN_ARG:  # written this way round so that NaN passes through
        x = _F32_MIN_ARG
    t = x * _LOG2E_F32 + _ROUND_SHIFT_F32
    nf = t - _ROUND_SHIFT_F32  # exact: n as a float32
    n = _float32_bits(t) - _float32_bits(_ROUND_SHIFT_F32)
    r = (x - nf * _LN2_HI_F32) - nf * _LN2_LO_F32
    r2 = r * r
    a0 = _EXPF_P4 * r + _EXPF_P5
    a1 = _EXPF_P2 * r + _EXPF_P3
    a2 = _EXPF_P0 * r + _EXPF_P1
    p = (a2 * r2 + a1) * r2 + a0
    p = _F32_ONE + (p * r2 + r)
    n1 = n >> np.int32(1)
    n2 = n - n1
    return (p * _bits_as_float32((n1 + np.int32(127)) << np.int32(23))) * _bits_as_float32(
        (n2 + np.int32(127)) << np.int32(23))


@tuned_helper
def sigmoid_fast_f32(z):
    r"""sigma(z) for a float32 z in float32 arithmetic (see :func:`sigmoid_fast`, :func:`exp_nonpositive_f32`)."""
    e = exp_nonpositive_f32(-abs(z))
    s = _F32_ONE / (_F32_ONE + e)
    return s if z >= np.float32(0.0) else e * s


def sigmoid_same_type(z):
    r"""σ(z) in z's own float type: :func:`sigmoid_fast_f32` for a float32 z, else :func:`sigmoid_fast` in float64.

    For compiled code, where the overload below picks the version by z's type
    when the caller is compiled (float32 arrays get float32 arithmetic, about
    2 float32 ulp, inside the float32 tolerance of 1e-5).  Called from Python
    it makes the same choice on the scalar's type.
    """
    if isinstance(z, np.float32):
        return np.float32(sigmoid_fast_f32(z))
    return sigmoid_fast(np.float64(z))


@overload(sigmoid_same_type, jit_options={k: v for k, v in TUNED_FLAGS.items() if k != "cache"})
def _sigmoid_same_type_overload(z):
    if z == types.float32:
        return lambda z: sigmoid_fast_f32(z)
    return lambda z: sigmoid_fast(np.float64(z))


# ---------------------------------------------------------------------------
# Sums over samples in LANES interleaved partial sums, as explicit vector code
# ---------------------------------------------------------------------------

#: Lanes of :func:`lane_dot` / :func:`lane_sum`: term i goes to partial sum i mod LANES.
LANES = 16


def _lane_codegen(context, builder, operands, nchunks):
    """LLVM IR for Σ over the first LANES*nchunks elements, LANES interleaved partial sums (see lane_dot).

    operands: one or two (array type, array value, row index or None); with a
    row index the array is 2-D C-contiguous and its row ``row`` is summed over.
    The LANES partial sums are held as 256-bit vectors (4 x float64 or 8 x float32),
    LANES / width of them; written as one <16 x double> LLVM picked 512-bit
    instructions, which on the development Xeon cost more than they gained.
    """
    from numba.core import cgutils

    i32 = ir.IntType(32)
    ftype = context.get_value_type(operands[0][0].dtype)
    size = context.get_abi_sizeof(ftype)
    width = 32 // size
    vtype = ir.VectorType(ftype, width)
    parts = LANES // width
    bases = []
    for aty, aval, row in operands:
        arr = context.make_array(aty)(context, builder, aval)
        if row is None:
            bases.append(arr.data)
        else:
            row_len = cgutils.unpack_tuple(builder, arr.shape, 2)[1]
            bases.append(builder.gep(arr.data, [builder.mul(row, row_len)], inbounds=True))
    zero = ir.Constant(vtype, [ir.Constant(ftype, 0.0)] * width)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(parts)]
    with cgutils.for_range(builder, nchunks) as loop:
        base = builder.mul(loop.index, ir.Constant(loop.index.type, LANES))
        for q in range(parts):
            offset = builder.add(base, ir.Constant(loop.index.type, q * width))
            vectors = []
            for data in bases:
                ptr = builder.bitcast(builder.gep(data, [offset], inbounds=True), vtype.as_pointer())
                vectors.append(builder.load(ptr, align=size, typ=vtype))
            term = builder.fmul(vectors[0], vectors[1], flags=("contract",)) if len(vectors) == 2 else vectors[0]
            builder.store(builder.fadd(builder.load(accs[q]), term, flags=("contract",)), accs[q])
    # the LANES partial sums as one vector (lane r = partial sum r), then the fixed pairwise
    # combination: lanes r and r + half, half = 8, 4, 2, 1
    vs = [builder.load(a) for a in accs]
    while len(vs) > 1:
        w = vs[0].type.count
        mask = ir.Constant(ir.VectorType(i32, 2 * w), list(range(2 * w)))
        vs = [builder.shuffle_vector(vs[t], vs[t + 1], mask) for t in range(0, len(vs), 2)]
    v = vs[0]
    half = LANES // 2
    while half >= 1:
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, half), list(range(half))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, half), list(range(half, 2 * half))))
        v = builder.fadd(lo, hi)
        half //= 2
    return builder.extract_element(v, ir.Constant(i32, 0))


def _float_array(x, ndim):
    return isinstance(x, types.Array) and x.ndim == ndim and x.layout == "C" and isinstance(x.dtype, types.Float)


@intrinsic
def _lane_dot_chunks(typingctx, x, y, nchunks):
    if not (_float_array(x, 1) and x == y):
        return None
    sig = x.dtype(x, y, types.intp)

    def codegen(context, builder, signature, args):
        return _lane_codegen(context, builder, [(x, args[0], None), (y, args[1], None)], args[2])

    return sig, codegen


@intrinsic
def _lane_sum_chunks(typingctx, x, nchunks):
    if not _float_array(x, 1):
        return None
    sig = x.dtype(x, types.intp)

    def codegen(context, builder, signature, args):
        return _lane_codegen(context, builder, [(x, args[0], None)], args[1])

    return sig, codegen


@intrinsic
def _lane_dot_rows_chunks(typingctx, a, i, b, j, nchunks):
    if not (_float_array(a, 2) and a == b):
        return None
    sig = a.dtype(a, types.intp, b, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        return _lane_codegen(context, builder, [(a, args[0], args[1]), (b, args[2], args[3])], args[4])

    return sig, codegen


@intrinsic
def _lane_sum_row_chunks(typingctx, a, i, nchunks):
    if not _float_array(a, 2):
        return None
    sig = a.dtype(a, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        return _lane_codegen(context, builder, [(a, args[0], args[1])], args[2])

    return sig, codegen


@tuned_helper
def lane_dot(x, y):
    r"""Σ_i x_i y_i in a fixed order that vectorizes: LANES interleaved partial sums.

    Partial sum r (r < LANES) adds the terms i ≡ r (mod LANES) of the first
    LANES·⌊n/LANES⌋ in ascending i; the LANES partial sums are then combined
    pairwise (r with r + 8, then + 4, + 2, + 1); the remaining n mod LANES
    terms are added to that, in ascending i.  Accumulates in the arrays' dtype.

    Why explicit vector IR: no ``reassoc`` means LLVM's loop vectorizer will
    not vectorize a floating-point reduction, and Numba runs LLVM without the
    SLP vectorizer, so even eight hand-written scalar accumulators stay scalar
    (one FMA per term).  Here the LANES partial sums are LLVM vector values,
    so the order is the one written above on every machine and for any
    thread count, and each vector FMA does 4 (float64) or 8 (float32) terms on
    a 256-bit machine.  x, y: 1-D C-contiguous arrays of one float dtype, same length.
    """
    n = x.shape[0]
    full = n // LANES
    s = _lane_dot_chunks(x, y, full)
    for i in range(full * LANES, n):
        s += x[i] * y[i]
    return s


@tuned_helper
def lane_sum(x):
    r"""Σ_i x_i in the order of :func:`lane_dot` (LANES interleaved partial sums, then the tail)."""
    n = x.shape[0]
    full = n // LANES
    s = _lane_sum_chunks(x, full)
    for i in range(full * LANES, n):
        s += x[i]
    return s


@tuned_helper
def lane_dot_rows(a, i, b, j):
    r"""``lane_dot(a[i], b[j])`` for 2-D C-contiguous a, b with rows of one length, without making the row views.

    (A row view holds a reference to its array: Numba increments and
    decrements the array's reference count, atomically, for every view made
    in a loop; in the 4-5-3 epoch that was a fifth of the time.)
    """
    n = a.shape[1]
    full = n // LANES
    s = _lane_dot_rows_chunks(a, i, b, j, full)
    for t in range(full * LANES, n):
        s += a[i, t] * b[j, t]
    return s


@tuned_helper
def lane_sum_row(a, i):
    r"""``lane_sum(a[i])`` for a 2-D C-contiguous a, without making the row view (see :func:`lane_dot_rows`)."""
    n = a.shape[1]
    full = n // LANES
    s = _lane_sum_row_chunks(a, i, full)
    for t in range(full * LANES, n):
        s += a[i, t]
    return s


# ---------------------------------------------------------------------------
# Element-wise kernels on flat arrays (n·d elements), chunked
# ---------------------------------------------------------------------------


@tuned_kernel
def _sigmoid_forward_flat(h, z):
    m_total = z.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        hc = h[c * CHUNK:min(m_total, (c + 1) * CHUNK)]
        zc = z[c * CHUNK:min(m_total, (c + 1) * CHUNK)]
        for m in range(zc.shape[0]):
            hc[m] = sigmoid_same_type(zc[m])


@tuned_kernel
def _sigmoid_backward_flat(dz, dh, h):
    m_total = h.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        dzc, dhc, hc = dz[lo:hi], dh[lo:hi], h[lo:hi]
        for m in range(hc.shape[0]):
            dzc[m] = dhc[m] * hc[m] * (1.0 - hc[m])


@tuned_kernel
def _tanh_forward_flat(h, z):
    # tanh stays a libm call: nothing in the sigmoid network needs it fast.
    m_total = z.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        hc, zc = h[lo:hi], z[lo:hi]
        for m in range(zc.shape[0]):
            hc[m] = math.tanh(zc[m])


@tuned_kernel
def _tanh_backward_flat(dz, dh, h):
    m_total = h.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        dzc, dhc, hc = dz[lo:hi], dh[lo:hi], h[lo:hi]
        for m in range(hc.shape[0]):
            dzc[m] = dhc[m] * (1.0 - hc[m] * hc[m])


@tuned_kernel
def _relu_forward_flat(h, z):
    m_total = z.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        hc, zc = h[lo:hi], z[lo:hi]
        for m in range(zc.shape[0]):
            hc[m] = 0.0 if zc[m] < 0.0 else zc[m]  # NaN stays NaN


@tuned_kernel
def _relu_backward_flat(dz, dh, h):
    m_total = h.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        dzc, dhc, hc = dz[lo:hi], dh[lo:hi], h[lo:hi]
        for m in range(hc.shape[0]):
            dzc[m] = dhc[m] if hc[m] > 0.0 else 0.0


@tuned_kernel
def _leaky_relu_forward_flat(h, z, slope):
    m_total = z.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        hc, zc = h[lo:hi], z[lo:hi]
        for m in range(zc.shape[0]):
            hc[m] = zc[m] if zc[m] > 0.0 else slope * zc[m]


@tuned_kernel
def _leaky_relu_backward_flat(dz, dh, h, slope):
    m_total = h.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        dzc, dhc, hc = dz[lo:hi], dh[lo:hi], h[lo:hi]
        for m in range(hc.shape[0]):
            dzc[m] = dhc[m] if hc[m] > 0.0 else slope * dhc[m]


@tuned_kernel
def _softplus_forward_flat(h, z):
    # max(z, 0) + log1p(exp(-|z|)) with the vectorizable exp and log1p (no libm call).
    m_total = z.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        hc, zc = h[lo:hi], z[lo:hi]
        for m in range(zc.shape[0]):
            zm = np.float64(zc[m])
            hc[m] = max(zm, 0.0) + log1p_unit(exp_nonpositive(-abs(zm)))


@tuned_kernel
def _softplus_backward_flat(dz, dh, h):
    # -expm1(-h), not 1 - exp(-h): h -> 0 (z very negative) would cancel to nothing.
    m_total = h.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        dzc, dhc, hc = dz[lo:hi], dh[lo:hi], h[lo:hi]
        for m in range(hc.shape[0]):
            dzc[m] = dhc[m] * -expm1_nonpositive(-np.float64(hc[m]))


@tuned_kernel
def _copy_flat(out, src):
    # identity_forward (h = z) and identity_backward (dz = dh)
    m_total = src.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        oc, sc = out[lo:hi], src[lo:hi]
        for m in range(sc.shape[0]):
            oc[m] = sc[m]


@tuned_kernel
def _scaled_difference_flat(out, a, t, scale):
    # out = scale (a - t): half_sse_backward (scale 1), mse_backward (2/(n d)),
    # softmax_cross_entropy_backward (1/n, written as a division like the literal loop).
    m_total = a.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        oc, ac, tc = out[lo:hi], a[lo:hi], t[lo:hi]
        for m in range(ac.shape[0]):
            oc[m] = scale * (ac[m] - tc[m])


@tuned_kernel
def _divided_difference_flat(out, a, t, divisor):
    m_total = a.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        oc, ac, tc = out[lo:hi], a[lo:hi], t[lo:hi]
        for m in range(ac.shape[0]):
            oc[m] = (ac[m] - tc[m]) / divisor


@tuned_kernel
def _squared_error_sum_flat(h, t):
    # Σ_m (t_m - h_m)^2 in float64: each chunk's sum, then the chunk sums in order.
    m_total = h.shape[0]
    n_chunks = (m_total + CHUNK - 1) // CHUNK
    part = np.empty(n_chunks, dtype=np.float64)
    for c in prange(n_chunks):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        hc, tc = h[lo:hi], t[lo:hi]
        acc = 0.0
        for m in range(hc.shape[0]):
            diff = np.float64(tc[m]) - np.float64(hc[m])
            acc += diff * diff
        part[c] = acc
    total = 0.0
    for c in range(n_chunks):
        total += part[c]
    return total


@tuned_kernel
def _sgd_update_flat(param, grad, lr):
    m_total = param.shape[0]
    for c in prange((m_total + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(m_total, (c + 1) * CHUNK)
        pc, gc = param[lo:hi], grad[lo:hi]
        for m in range(pc.shape[0]):
            pc[m] = pc[m] - lr * gc[m]


# ---------------------------------------------------------------------------
# Row-wise kernels (softmax, cross-entropy): rows in chunks, exp vectorized
# ---------------------------------------------------------------------------

_ROWS_PER_CHUNK = 64


@tuned_kernel
def _softmax_forward(p, z):
    n, d = z.shape
    for c in prange((n + _ROWS_PER_CHUNK - 1) // _ROWS_PER_CHUNK):
        for i in range(c * _ROWS_PER_CHUNK, min(n, (c + 1) * _ROWS_PER_CHUNK)):
            zi, pi = z[i], p[i]
            m = zi[0]
            for k in range(1, d):
                if zi[k] > m:
                    m = zi[k]
            s = 0.0
            for k in range(d):  # exp(z - m) <= 1, kept in p (the literal loop computes it twice)
                e = exp_nonpositive(np.float64(zi[k]) - m)
                pi[k] = e
                s += e
            for k in range(d):
                pi[k] = pi[k] / s


@tuned_kernel
def _softmax_cross_entropy_loss(z, t):
    n, d = z.shape
    n_chunks = (n + _ROWS_PER_CHUNK - 1) // _ROWS_PER_CHUNK
    part = np.empty(n_chunks, dtype=np.float64)
    for c in prange(n_chunks):
        acc = 0.0
        for i in range(c * _ROWS_PER_CHUNK, min(n, (c + 1) * _ROWS_PER_CHUNK)):
            zi, ti = z[i], t[i]
            m = np.float64(zi[0])
            for k in range(1, d):
                if zi[k] > m:
                    m = np.float64(zi[k])
            s = 0.0
            for k in range(d):
                s += exp_nonpositive(np.float64(zi[k]) - m)
            lse = m + math.log(s)
            for k in range(d):
                acc += ti[k] * (lse - zi[k])
        part[c] = acc
    total = 0.0
    for c in range(n_chunks):
        total += part[c]
    return total / n


# ---------------------------------------------------------------------------
# Matrix products: the 8 x 8 register tile of nbmlp.fused (the engine's products are nbmlp.products)
# ---------------------------------------------------------------------------


@tuned_helper
def tile_product(C, A, a_transposed, B, bias, r0, r1, c0, c1):
    r"""C[r, c] = Σ_p A(r, p) B[p, c] (+ bias[c]) for r0 <= r < r1, c0 <= c < c1.

    A(r, p) is A[r, p], or A[p, r] when ``a_transposed``.  The Σ over p runs in
    ascending order from 0, the bias is added last.  Eight rows r at a time and
    eight terms p per pass: the 64 values A(r, p) sit in registers while the
    innermost loop runs along row c of B and C (unit stride: SIMD FMAs); the
    eight rows of B are loaded once for eight rows of C.
    """
    P = B.shape[0]
    r = r0
    while r + 8 <= r1:
        C0, C1, C2, C3 = C[r, c0:c1], C[r + 1, c0:c1], C[r + 2, c0:c1], C[r + 3, c0:c1]
        C4, C5, C6, C7 = C[r + 4, c0:c1], C[r + 5, c0:c1], C[r + 6, c0:c1], C[r + 7, c0:c1]
        for c in range(C0.shape[0]):
            C0[c] = 0.0
            C1[c] = 0.0
            C2[c] = 0.0
            C3[c] = 0.0
            C4[c] = 0.0
            C5[c] = 0.0
            C6[c] = 0.0
            C7[c] = 0.0
        p = 0
        while p + 8 <= P:
            if a_transposed:  # A(r, p) = A[p, r]: eight short contiguous runs of A's rows
                a00, a01, a02, a03, a04, a05, a06, a07 = (A[p, r], A[p + 1, r], A[p + 2, r], A[p + 3, r],
                                                          A[p + 4, r], A[p + 5, r], A[p + 6, r], A[p + 7, r])
                a10, a11, a12, a13, a14, a15, a16, a17 = (A[p, r + 1], A[p + 1, r + 1], A[p + 2, r + 1],
                                                          A[p + 3, r + 1], A[p + 4, r + 1], A[p + 5, r + 1],
                                                          A[p + 6, r + 1], A[p + 7, r + 1])
                a20, a21, a22, a23, a24, a25, a26, a27 = (A[p, r + 2], A[p + 1, r + 2], A[p + 2, r + 2],
                                                          A[p + 3, r + 2], A[p + 4, r + 2], A[p + 5, r + 2],
                                                          A[p + 6, r + 2], A[p + 7, r + 2])
                a30, a31, a32, a33, a34, a35, a36, a37 = (A[p, r + 3], A[p + 1, r + 3], A[p + 2, r + 3],
                                                          A[p + 3, r + 3], A[p + 4, r + 3], A[p + 5, r + 3],
                                                          A[p + 6, r + 3], A[p + 7, r + 3])
                a40, a41, a42, a43, a44, a45, a46, a47 = (A[p, r + 4], A[p + 1, r + 4], A[p + 2, r + 4],
                                                          A[p + 3, r + 4], A[p + 4, r + 4], A[p + 5, r + 4],
                                                          A[p + 6, r + 4], A[p + 7, r + 4])
                a50, a51, a52, a53, a54, a55, a56, a57 = (A[p, r + 5], A[p + 1, r + 5], A[p + 2, r + 5],
                                                          A[p + 3, r + 5], A[p + 4, r + 5], A[p + 5, r + 5],
                                                          A[p + 6, r + 5], A[p + 7, r + 5])
                a60, a61, a62, a63, a64, a65, a66, a67 = (A[p, r + 6], A[p + 1, r + 6], A[p + 2, r + 6],
                                                          A[p + 3, r + 6], A[p + 4, r + 6], A[p + 5, r + 6],
                                                          A[p + 6, r + 6], A[p + 7, r + 6])
                a70, a71, a72, a73, a74, a75, a76, a77 = (A[p, r + 7], A[p + 1, r + 7], A[p + 2, r + 7],
                                                          A[p + 3, r + 7], A[p + 4, r + 7], A[p + 5, r + 7],
                                                          A[p + 6, r + 7], A[p + 7, r + 7])
            else:  # A(r, p) = A[r, p]: eight contiguous values of each of eight rows
                a00, a01, a02, a03, a04, a05, a06, a07 = A[r, p:p + 8]
                a10, a11, a12, a13, a14, a15, a16, a17 = A[r + 1, p:p + 8]
                a20, a21, a22, a23, a24, a25, a26, a27 = A[r + 2, p:p + 8]
                a30, a31, a32, a33, a34, a35, a36, a37 = A[r + 3, p:p + 8]
                a40, a41, a42, a43, a44, a45, a46, a47 = A[r + 4, p:p + 8]
                a50, a51, a52, a53, a54, a55, a56, a57 = A[r + 5, p:p + 8]
                a60, a61, a62, a63, a64, a65, a66, a67 = A[r + 6, p:p + 8]
                a70, a71, a72, a73, a74, a75, a76, a77 = A[r + 7, p:p + 8]
            B0, B1, B2, B3 = B[p, c0:c1], B[p + 1, c0:c1], B[p + 2, c0:c1], B[p + 3, c0:c1]
            B4, B5, B6, B7 = B[p + 4, c0:c1], B[p + 5, c0:c1], B[p + 6, c0:c1], B[p + 7, c0:c1]
            for c in range(C0.shape[0]):
                b0, b1, b2, b3, b4, b5, b6, b7 = B0[c], B1[c], B2[c], B3[c], B4[c], B5[c], B6[c], B7[c]
                C0[c] = (((((((C0[c] + a00 * b0) + a01 * b1) + a02 * b2) + a03 * b3) + a04 * b4) + a05 * b5)
                         + a06 * b6) + a07 * b7
                C1[c] = (((((((C1[c] + a10 * b0) + a11 * b1) + a12 * b2) + a13 * b3) + a14 * b4) + a15 * b5)
                         + a16 * b6) + a17 * b7
                C2[c] = (((((((C2[c] + a20 * b0) + a21 * b1) + a22 * b2) + a23 * b3) + a24 * b4) + a25 * b5)
                         + a26 * b6) + a27 * b7
                C3[c] = (((((((C3[c] + a30 * b0) + a31 * b1) + a32 * b2) + a33 * b3) + a34 * b4) + a35 * b5)
                         + a36 * b6) + a37 * b7
                C4[c] = (((((((C4[c] + a40 * b0) + a41 * b1) + a42 * b2) + a43 * b3) + a44 * b4) + a45 * b5)
                         + a46 * b6) + a47 * b7
                C5[c] = (((((((C5[c] + a50 * b0) + a51 * b1) + a52 * b2) + a53 * b3) + a54 * b4) + a55 * b5)
                         + a56 * b6) + a57 * b7
                C6[c] = (((((((C6[c] + a60 * b0) + a61 * b1) + a62 * b2) + a63 * b3) + a64 * b4) + a65 * b5)
                         + a66 * b6) + a67 * b7
                C7[c] = (((((((C7[c] + a70 * b0) + a71 * b1) + a72 * b2) + a73 * b3) + a74 * b4) + a75 * b5)
                         + a76 * b6) + a77 * b7
            p += 8
        while p < P:  # the last P mod 8 terms, one at a time (same ascending order)
            if a_transposed:
                a0, a1, a2, a3 = A[p, r], A[p, r + 1], A[p, r + 2], A[p, r + 3]
                a4, a5, a6, a7 = A[p, r + 4], A[p, r + 5], A[p, r + 6], A[p, r + 7]
            else:
                a0, a1, a2, a3 = A[r, p], A[r + 1, p], A[r + 2, p], A[r + 3, p]
                a4, a5, a6, a7 = A[r + 4, p], A[r + 5, p], A[r + 6, p], A[r + 7, p]
            Bp = B[p, c0:c1]
            for c in range(C0.shape[0]):
                b = Bp[c]
                C0[c] += a0 * b
                C1[c] += a1 * b
                C2[c] += a2 * b
                C3[c] += a3 * b
                C4[c] += a4 * b
                C5[c] += a5 * b
                C6[c] += a6 * b
                C7[c] += a7 * b
            p += 1
        if bias.shape[0] > 0:
            bc = bias[c0:c1]
            for c in range(C0.shape[0]):
                C0[c] += bc[c]
                C1[c] += bc[c]
                C2[c] += bc[c]
                C3[c] += bc[c]
                C4[c] += bc[c]
                C5[c] += bc[c]
                C6[c] += bc[c]
                C7[c] += bc[c]
        r += 8
    while r < r1:  # the last r1 - r0 mod 8 rows, one at a time
        Cr = C[r, c0:c1]
        for c in range(Cr.shape[0]):
            Cr[c] = 0.0
        for p in range(P):
            a = A[p, r] if a_transposed else A[r, p]
            Bp = B[p, c0:c1]
            for c in range(Cr.shape[0]):
                Cr[c] += a * Bp[c]
        if bias.shape[0] > 0:
            bc = bias[c0:c1]
            for c in range(Cr.shape[0]):
                Cr[c] += bc[c]
        r += 1


@tuned_kernel
def _column_sums(db, dz):
    r"""db_k = Σ_i dz_ik, i ascending: whole rows of dz are added into db (SIMD over k).

    The literal loop sums down each column (stride d_out); here the loop over
    k is innermost and unit-stride.  Parallel over blocks of k (db's slots).
    """
    n, d = dz.shape
    for c in prange((d + TILE_COLS - 1) // TILE_COLS):
        k0, k1 = c * TILE_COLS, min(d, (c + 1) * TILE_COLS)
        dbc = db[k0:k1]
        for k in range(dbc.shape[0]):
            dbc[k] = 0.0
        for i in range(n):
            dzi = dz[i, k0:k1]
            for k in range(dbc.shape[0]):
                dbc[k] += dzi[k]


# ---------------------------------------------------------------------------
# The public kernels: same names and signatures as nbmlp.kernels
# ---------------------------------------------------------------------------


def _contiguous(*arrays):
    return all(a.flags.c_contiguous for a in arrays)


def _elementwise(flat_kernel, literal_kernel, name, doc_from, *constants):
    """Public kernel f(out, *ins) on the flattened arrays (views), literal loops if not C-contiguous.

    ``constants`` are passed to the flat kernel after the arrays.
    """

    def kernel(out, *ins):
        if not _contiguous(out, *ins):
            return literal_kernel(out, *ins)
        return call(flat_kernel, out.size, out.reshape(-1), *(a.reshape(-1) for a in ins), *constants)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = doc_from.__doc__
    return kernel


sigmoid_forward = _elementwise(_sigmoid_forward_flat, literal.sigmoid_forward, "sigmoid_forward",
                               literal.sigmoid_forward)
sigmoid_backward = _elementwise(_sigmoid_backward_flat, literal.sigmoid_backward, "sigmoid_backward",
                                literal.sigmoid_backward)
tanh_forward = _elementwise(_tanh_forward_flat, literal.tanh_forward, "tanh_forward", literal.tanh_forward)
tanh_backward = _elementwise(_tanh_backward_flat, literal.tanh_backward, "tanh_backward", literal.tanh_backward)
relu_forward = _elementwise(_relu_forward_flat, literal.relu_forward, "relu_forward", literal.relu_forward)
relu_backward = _elementwise(_relu_backward_flat, literal.relu_backward, "relu_backward", literal.relu_backward)
leaky_relu_forward = _elementwise(_leaky_relu_forward_flat, literal.leaky_relu_forward, "leaky_relu_forward",
                                  literal.leaky_relu_forward, literal.LEAKY_RELU_SLOPE)
leaky_relu_backward = _elementwise(_leaky_relu_backward_flat, literal.leaky_relu_backward, "leaky_relu_backward",
                                   literal.leaky_relu_backward, literal.LEAKY_RELU_SLOPE)
softplus_forward = _elementwise(_softplus_forward_flat, literal.softplus_forward, "softplus_forward",
                                literal.softplus_forward)
softplus_backward = _elementwise(_softplus_backward_flat, literal.softplus_backward, "softplus_backward",
                                 literal.softplus_backward)
identity_forward = _elementwise(_copy_flat, literal.identity_forward, "identity_forward",
                                literal.identity_forward)


def identity_backward(dz, dh, h):
    if not _contiguous(dz, dh):
        return literal.identity_backward(dz, dh, h)
    call(_copy_flat, dz.size, dz.reshape(-1), dh.reshape(-1))


identity_backward.__doc__ = literal.identity_backward.__doc__


def softmax_forward(p, z):
    call(_softmax_forward, z.size, p, z)


softmax_forward.__doc__ = literal.softmax_forward.__doc__


def _workspace(m, n, p, dtype):
    """This thread's scratch buffer for :mod:`nbmlp.products`, grown when a product needs more.

    Allocated once per thread and size (not per call); one per thread so that
    two Python threads training at once never share packed panels.
    """
    if m * n * p < products.SMALL_WORK:
        return _NO_SCRATCH[np.dtype(dtype)]  # the plain loops use no scratch
    need = _workspace_size(m, n, p)
    cache = _WORKSPACES.__dict__
    ws = cache.get(dtype)
    if ws is None or ws.shape[0] < need:
        ws = cache[dtype] = products.workspace(m, n, p, dtype)
    return ws


_WORKSPACES = threading.local()
_workspace_size = functools.lru_cache(maxsize=1024)(products.workspace_size)  # a pure function of (m, n, p)


@tuned_kernel
def _add_bias(z, b):
    r"""z_ik += b_k (after the Σ, as in the literal loop), rows in chunks of :data:`_ROWS_PER_CHUNK`."""
    n, d = z.shape
    for c in prange((n + _ROWS_PER_CHUNK - 1) // _ROWS_PER_CHUNK):
        for i in range(c * _ROWS_PER_CHUNK, min(n, (c + 1) * _ROWS_PER_CHUNK)):
            for k in range(d):
                z[i, k] += b[k]


def linear_forward(z, h_prev, W, b):
    n, d_in = h_prev.shape
    d_out = W.shape[1]
    ws = _workspace(n, d_out, d_in, z.dtype)
    call(products.matmul_nn, n * d_in * d_out, z, h_prev, W, ws)
    call(_add_bias, z.size, z, b)


linear_forward.__doc__ = literal.linear_forward.__doc__

_NO_SCRATCH = {np.dtype(np.float64): np.empty(0, np.float64), np.dtype(np.float32): np.empty(0, np.float32)}


def linear_backward_weight(dW, dz, h_prev):
    n, d_in = h_prev.shape
    d_out = dz.shape[1]
    ws = _workspace(d_in, d_out, n, dW.dtype)
    call(products.matmul_tn, n * d_in * d_out, dW, h_prev, dz, ws)


linear_backward_weight.__doc__ = literal.linear_backward_weight.__doc__


def linear_backward_bias(db, dz):
    call(_column_sums, dz.size, db, dz)


linear_backward_bias.__doc__ = literal.linear_backward_bias.__doc__


def linear_backward_input(dh_prev, dz, W):
    d_in, d_out = W.shape
    n = dz.shape[0]
    ws = _workspace(n, d_in, d_out, dh_prev.dtype)
    call(products.matmul_nt, n * d_in * d_out, dh_prev, dz, W, ws)


linear_backward_input.__doc__ = literal.linear_backward_input.__doc__


def half_sse_loss(h, t):
    if not _contiguous(h, t):
        return literal.half_sse_loss(h, t)
    return 0.5 * call(_squared_error_sum_flat, h.size, h.reshape(-1), t.reshape(-1))


half_sse_loss.__doc__ = literal.half_sse_loss.__doc__


def mse_loss(h, t):
    if not _contiguous(h, t):
        return literal.mse_loss(h, t)
    return call(_squared_error_sum_flat, h.size, h.reshape(-1), t.reshape(-1)) / h.size


mse_loss.__doc__ = literal.mse_loss.__doc__


def half_sse_backward(dh, h, t):
    if not _contiguous(dh, h, t):
        return literal.half_sse_backward(dh, h, t)
    call(_scaled_difference_flat, h.size, dh.reshape(-1), h.reshape(-1), t.reshape(-1), 1.0)


half_sse_backward.__doc__ = literal.half_sse_backward.__doc__


def mse_backward(dh, h, t):
    if not _contiguous(dh, h, t):
        return literal.mse_backward(dh, h, t)
    call(_scaled_difference_flat, h.size, dh.reshape(-1), h.reshape(-1), t.reshape(-1), 2.0 / h.size)


mse_backward.__doc__ = literal.mse_backward.__doc__


def softmax_cross_entropy_loss(z, t):
    return call(_softmax_cross_entropy_loss, z.size, z, t)


softmax_cross_entropy_loss.__doc__ = literal.softmax_cross_entropy_loss.__doc__


def softmax_cross_entropy_backward(dz, p, t):
    if not _contiguous(dz, p, t):
        return literal.softmax_cross_entropy_backward(dz, p, t)
    call(_divided_difference_flat, p.size, dz.reshape(-1), p.reshape(-1), t.reshape(-1), float(p.shape[0]))


softmax_cross_entropy_backward.__doc__ = literal.softmax_cross_entropy_backward.__doc__


def sgd_update(param, grad, lr):
    call(_sgd_update_flat, param.size, param, grad, lr)


sgd_update.__doc__ = literal.sgd_update.__doc__
