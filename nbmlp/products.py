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
not per call; :func:`workspace` makes one) and passed to every call.  A call
uses all of it as scratch: two calls running at the same time (from two
Python threads) need two buffers.  C must not overlap A or B.  The three
are one body (``_matmul``, with the transposes as literal flags) compiled
twice (:func:`nbmlp._jit.compile_twice`): each product is parallel over blocks
of C, and serial at ``.serial`` (also named ``matmul_nn_serial`` etc., the
spelling compiled code can call); both are callable from other compiled code.

How a product is computed (the structure of Goto & van de Geijn, "Anatomy of
High-Performance Matrix Multiplication", 2008, and of BLIS):

1. C is cut into one block of rows x columns per thread ("units", split at
   multiples of MR rows and NR columns).  Each unit has its own slice of ``ws``
   (a "slot"), so threads share nothing but the read-only operands.  A product
   of fewer than :data:`PARALLEL_MIN_MACS` multiply-adds is one unit, run on the
   calling thread without a parallel region, even in the parallel compilation.
2. Inside a unit: for each block of MC rows and each block of KC terms of the
   sum, the MC x KC block of A is *packed* into the slot -- MR rows at a time,
   stored term by term (``[p][i]``), so the micro-kernel reads it as one
   contiguous stream; then for each block of NB columns the KC x NB block of B is
   packed the same way, NR columns at a time (``[p][j]``).  Transposed operands
   (Aᵀ in ``matmul_tn``, Bᵀ in ``matmul_nt``) are read transposed by the packing:
   no whole-matrix copy.  Packed panels past the edge of C are zero.  When a
   unit has at most :data:`DIRECT_B_MAX_ROWS` rows and B is C-contiguous and
   not transposed (a mini-batch's forward product), B's full NR-column panels
   are read from B itself instead (BLIS's "gemmsup" case: packing B would be a
   pass over all of it for a few row tiles), and its tiles run column by column.
   When a unit is at most NR columns wide (a narrow C: the output layer's
   z = h·W and ∂L/∂W = hᵀ·δ), its A panels would each be read once, so A is
   read from A itself wherever its rows (Aᵀ's, in ``matmul_tn``) have stride 1.
3. The micro-kernel (:func:`_micro_kernel`, LLVM vector code) keeps an MR x NR
   tile of C in MR·NR/W vector registers (W lanes: 8 float64 or 16 float32 with
   AVX-512) for the whole KC loop: per term p it loads NR/W vectors of packed B,
   broadcasts MR values of packed A and issues MR·NR/W fused multiply-adds.  The
   vector width and the tile follow the CPU Numba compiles for (:data:`VECTOR_BYTES`,
   :data:`VECTOR_REGISTERS`): 8 x 3 vectors with 32 registers, 6 x 2 with 16 (AVX2),
   so the accumulators never spill; the sums, and so the results, are the same.
   A tile cut by C's last columns computes only the vectors that hold them.
   Tiles cut by the edge of C run on a scratch tile in the slot and are copied.
4. Block sizes follow the caches (:data:`BLOCKING`): a KC x MR panel of packed A
   stays in L1 while the KC x NB block of packed B streams from L2.  They were
   measured on a core with a 2 MiB L2; on one with less (:func:`l2_bytes`, from
   sysfs) NB shrinks in proportion.

The order of every sum: C_rc = fma(a_{r,p-1}, b_{p-1,c}, ... fma(a_{r,0}, b_{0,c}, 0)),
p ascending, every step one fused multiply-add (``llvm.fma``: one rounding, the
same on every machine).  Between KC blocks the partial sum is stored in C and
loaded back unchanged, so neither the blocking nor the split into units, nor
so the number of threads, changes a bit of the result.  Products below
:data:`SMALL_WORK` multiply-adds (the note's 4-5-3), and any C that is not
C-contiguous, run the plain loop nests instead (multiply then add, p
ascending: a different rounding, also independent of threads).
"""

from __future__ import annotations

import time
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic
from numba.core.registry import cpu_target

from ._jit import JIT_FLAGS, VECTOR_FLAGS, compile_twice, jit, serial_twins
from .parallel import PACKED_MACS_PER_WORK, PARALLEL_MIN_WORK, num_threads


def _target_vectors() -> tuple:
    """(bytes per vector register, vector registers) of the CPU Numba compiles for.

    Read from the features in Numba's code-generation key (``magic_tuple``: the host's, or
    ``NUMBA_CPU_FEATURES``), so the tile always fits the registers of the code it runs in:
    AVX-512 (32 x 64 bytes), AVX / AVX2 (16 x 32 bytes), AArch64 NEON (32 x 16 bytes),
    otherwise SSE2's 16 x 16 bytes.
    """
    triple, _, features = cpu_target.target_context.codegen().magic_tuple()
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    if "avx512f" in enabled:
        return 64, 32
    if "avx" in enabled:
        return 32, 16
    return 16, (32 if triple.startswith(("aarch64", "arm64")) else 16)


#: Bytes per vector register of the micro-kernel, and how many registers the target has.
VECTOR_BYTES, VECTOR_REGISTERS = _target_vectors()

#: The start of ws, and so of every slot region, is aligned to this many bytes (a cache line).
ALIGN_BYTES = 64


#: The L2 cache per core that the block sizes were measured with.  On a core with less, NB shrinks in
#: proportion, so that the KC x NB block of packed B still fits its L2.
MEASURED_L2_BYTES = 2 << 20


def l2_bytes(cache_dir="/sys/devices/system/cpu/cpu0/cache"):
    """Bytes of L2 cache of the first core, from Linux's sysfs; None where it does not say."""
    for index in sorted(Path(cache_dir).glob("index*")):
        try:
            if (index / "level").read_text().strip() != "2" or (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip()  # e.g. "2048K"
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            size = int(text.rstrip("KM")) * scale
        except (OSError, ValueError):
            continue
        return size if size > 0 else None
    return None


def blocking_for(dtype, vector_bytes, registers, l2) -> tuple:
    """(MR, NR, KC, MC, NB) for ``dtype`` on a target with ``registers`` vectors of ``vector_bytes``.

    The register tile holds MR x NV accumulator vectors, plus NV vectors of B and one
    broadcast: 8 x 3 (28 registers) with 32 registers, 6 x 2 (15) with 16, as in BLIS's
    Skylake-X and Haswell kernels.  A tile larger than the register file would spill
    its accumulators on every term.  NB: 1 MiB of packed B with KC = 256, half of the
    measured 2 MiB L2, and less in proportion to a smaller ``l2`` (bytes; None: unknown).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"blocking_for: dtype must be float32 or float64, got {dtype}")
    if not (dtype.itemsize <= vector_bytes <= 256 and vector_bytes & (vector_bytes - 1) == 0):
        raise ValueError(f"blocking_for: vector_bytes must be a power of two from {dtype.itemsize} to 256, "
                         f"got {vector_bytes}")
    lanes = vector_bytes // dtype.itemsize
    MR, NV = (8, 3) if registers >= 32 else (6, 2)
    NR = NV * lanes
    KC = 256
    MC = 1024 // MR * MR
    NB = 480 * 8 // dtype.itemsize
    if l2 is not None and l2 < MEASURED_L2_BYTES:
        NB = NB * l2 // MEASURED_L2_BYTES
    NB = max(NR, NB // NR * NR)
    return MR, NR, KC, MC, NB


#: Block sizes per dtype: (MR, NR, KC, MC, NB), for the target's vectors and this core's L2 (:func:`blocking_for`).
#: MR x NR: the register tile of C (MR broadcast rows x NR / W vectors of W lanes; with
#: AVX-512 8 x 24 float64 and 8 x 48 float32: 24 of the 32 zmm registers, plus 3 for B and
#: one broadcast).  KC: terms per pass, so that a packed KC x MR panel of A (16 KiB float64)
#: fits the 48 KiB L1 and a KC x NB block of packed B (1 MiB) half of the 2 MiB L2
#: (Sapphire Rapids-class Xeon, lscpu; measured there).  MC: rows of A packed at once (L3).
BLOCKING = {dtype: blocking_for(dtype, VECTOR_BYTES, VECTOR_REGISTERS, l2_bytes())
            for dtype in (np.dtype(np.float64), np.dtype(np.float32))}

#: Products with fewer multiply-adds than this run the plain loop nests.
SMALL_WORK = 1 << 12

#: The parallel compilations run products with fewer multiply-adds than this on the
#: calling thread, without starting a parallel region (:mod:`nbmlp.parallel`'s
#: threshold, read once at import: compiled code keeps the value it was compiled with).
PARALLEL_MIN_MACS = PARALLEL_MIN_WORK * PACKED_MACS_PER_WORK

#: A unit with at most this many rows of C reads B's full NR-column panels from B itself, unpacked
#: (B C-contiguous and not transposed: the forward product h @ W of a mini-batch).  Packing B costs
#: a pass over it that only m / MR row tiles share (the "skinny" case of BLIS's gemmsup); the
#: sums, and so the results, are the same either way.  Measured, float64, x 784 x 256, one thread
#: (µs, packed / unpacked): m = 8 168 / 77, 32 316 / 224, 64 485 / 417, 128 861 / 783; but
#: 512 x 784 x 256 3180 / 3867 and 1024 x 784 x 1024 21.5 / 33.2 ms.
DIRECT_B_MAX_ROWS = 128

#: Each region of a slot starts at a multiple of this many elements (64 bytes or more).
_ALIGN = 16


def _round_up(x, q):
    return -(-x // q) * q


def _slot_parts(m, n, P, MR, NR, KC, MC, NB):
    """Lengths of the three regions of one slot: packed A (MC x KC), packed B (KC x NB), one MR x NR tile."""
    kc = min(KC, P)
    mc = min(MC, -(-m // MR) * MR)
    nb = min(NB, -(-n // NR) * NR)
    a = -(-(mc * kc) // _ALIGN) * _ALIGN
    b = -(-(kc * nb) // _ALIGN) * _ALIGN
    t = -(-(MR * NR) // _ALIGN) * _ALIGN
    return a, b, t


_slot_parts_compiled = njit(cache=True)(_slot_parts)


def workspace_size(m: int, n: int, p: int) -> int:
    """Length of the scratch buffer the products need for C (m x n) with p terms per sum.

    Enough for either dtype and for the most threads Numba can run
    (``numba.config.NUMBA_NUM_THREADS``), plus room to align it.
    """
    for name, v in (("m", m), ("n", n), ("p", p)):
        if int(v) != v or v < 0:
            raise ValueError(f"workspace_size: {name} must be a non-negative integer, got {v!r}")
    per_slot = max(sum(_slot_parts(rows, cols, max(p, 1), *b)) for b in BLOCKING.values()
                   for rows, cols in ((max(m, 1), max(n, 1)), (max(n, 1), max(m, 1))))
    return numba.config.NUMBA_NUM_THREADS * per_slot + ALIGN_BYTES


def workspace(m: int, n: int, p: int, dtype) -> np.ndarray:
    """A scratch buffer for products up to C (m x n) with p terms per sum, in ``dtype``, 64-byte aligned."""
    dtype = np.dtype(dtype)
    if dtype not in BLOCKING:
        raise TypeError(f"workspace: dtype must be float32 or float64, got {dtype}")
    size = workspace_size(m, n, p)
    raw = np.zeros(size + ALIGN_BYTES // dtype.itemsize, dtype=dtype)
    start = (-raw.ctypes.data % ALIGN_BYTES) // dtype.itemsize
    return raw[start:start + size]


# ---------------------------------------------------------------------------
# The micro-kernel and the block sizes, as LLVM code
# ---------------------------------------------------------------------------


def _float_1d(x):
    return isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" and isinstance(x.dtype, types.Float)


@intrinsic
def _blocking(typingctx, ws):
    """(MR, NR, KC, MC, NB) of :data:`BLOCKING` for ws's dtype, as compile-time constants."""
    if not _float_1d(ws):
        return None
    values = BLOCKING[np.dtype(ws.dtype.name)]
    sig = types.UniTuple(types.intp, 5)(ws)

    def codegen(context, builder, signature, args):
        return context.make_tuple(builder, signature.return_type,
                                  [context.get_constant(types.intp, v) for v in values])

    return sig, codegen


numba.get_num_threads()  # starts the threading layer: defines the symbol parallel.num_threads calls


@intrinsic
def _address(typingctx, a):
    """The address of array a's data, as an integer (for :func:`_micro_kernel`)."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(a)(context, builder, args[0]).data
        return builder.ptrtoint(data, context.get_value_type(types.intp))

    return types.intp(a), codegen


@intrinsic
def _same_dtype(typingctx, x, y):
    """Whether arrays x and y have one dtype (a compile-time constant)."""
    if not (isinstance(x, types.Array) and isinstance(y, types.Array)):
        return None
    same = x.dtype == y.dtype

    def codegen(context, builder, signature, args):
        return context.get_constant(types.boolean, same)

    return types.boolean(x, y), codegen


@intrinsic
def _micro_kernel(typingctx, ws, a_at, a_step, a_by_rows, b_at, ldb, c_at, ldc, kc, first, pf_at, nvec):
    r"""Tile of C: C_ij = (first ? 0 : C_ij) + Σ_{p<kc} A_ip B_pj for i < MR, j < nvec·W.

    Operands are addressed by the byte addresses ``*_at`` of their first
    element (arrays of ws's dtype, from :func:`_address`) and element strides:
    C_ij at c_at[i*ldc + j], B_pj at b_at[p*ldb + j] (a packed panel, ldb = NR,
    or rows of B itself), and A_ip at a_at[p*a_step + i] (a packed panel,
    a_step = MR, or Aᵀ's rows unpacked) or, with ``a_by_rows``, at
    a_at[i*a_step + p] (rows of A unpacked).  ``nvec`` (1 to NR/W): vectors of
    W lanes per row of the tile, so a narrow C computes only the lanes it
    keeps.  Each (a_by_rows, nvec) pair is its own loop, chosen on entry: per
    term p, ``llvm.fma`` on MR x nvec accumulators kept in registers.  Unless
    ``first`` or pf_at == 0, the MR rows of the tile at pf_at (the next one,
    same ldc) are prefetched first, so that the next call finds them in cache
    (a hint only: it changes no value and cannot fault).
    """
    if not _float_1d(ws):
        return None
    MR, NR = BLOCKING[np.dtype(ws.dtype.name)][:2]
    intp_t = types.intp
    sig = types.void(ws, intp_t, intp_t, types.boolean, intp_t, intp_t, intp_t, intp_t, intp_t, types.boolean,
                     intp_t, intp_t)

    def codegen(context, builder, signature, args):
        _, a_atv, a_stepv, by_rowsv, b_atv, ldbv, c_atv, ldcv, kcv, firstv, pf_atv, nvecv = args
        ftype = context.get_value_type(ws.dtype)
        size = context.get_abi_sizeof(ftype)
        W = VECTOR_BYTES // size
        NV_MAX = NR // W
        vtype = ir.VectorType(ftype, W)
        vptr = vtype.as_pointer()
        fptr = ftype.as_pointer()
        intp = context.get_value_type(types.intp)
        i32 = ir.IntType(32)
        i8p = ir.IntType(8).as_pointer()

        def const(v):
            return ir.Constant(intp, v)

        a_base = builder.inttoptr(a_atv, fptr)
        b_base = builder.inttoptr(b_atv, fptr)
        c_base = builder.inttoptr(c_atv, fptr)
        zero = ir.Constant(vtype, [ir.Constant(ftype, 0.0)] * W)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3),
                                             f"llvm.fma.v{W}f{8 * size}")
        splat_mask = ir.Constant(ir.VectorType(i32, W), [0] * W)
        undef = ir.Constant(vtype, ir.Undefined)
        want = builder.and_(builder.not_(firstv), builder.icmp_signed("!=", pf_atv, const(0)))
        with builder.if_then(want):
            pf_base = builder.inttoptr(pf_atv, fptr)
            for i in range(MR):
                row = builder.gep(pf_base, [builder.mul(ldcv, const(i))])
                for start in range(0, NR * size, ALIGN_BYTES):  # each cache line of the tile's row
                    line = builder.bitcast(builder.gep(row, [const(start // size)]), i8p)
                    builder.call(prefetch, [line, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])

        def tile(by_rows, NV):
            """The tile's loop for A by rows or not and NV vectors per row (all compile-time here)."""
            a_rows = [builder.gep(a_base, [builder.mul(a_stepv, const(i))], inbounds=True) for i in range(MR)] \
                if by_rows else None
            c_ptrs = []
            for i in range(MR):
                row = builder.gep(c_base, [builder.mul(ldcv, const(i))], inbounds=True)
                for v in range(NV):
                    c_ptrs.append(builder.bitcast(builder.gep(row, [const(v * W)], inbounds=True), vptr))
            accs = [cgutils.alloca_once_value(builder, zero) for _ in c_ptrs]
            with builder.if_then(builder.not_(firstv)):  # C is read only when a pass continues a sum
                for acc, ptr in zip(accs, c_ptrs):
                    builder.store(builder.load(ptr, align=size), acc)
            with cgutils.for_range(builder, kcv) as loop:
                p = loop.index
                b_row = builder.gep(b_base, [builder.mul(p, ldbv)], inbounds=True)
                bs = [builder.load(builder.bitcast(builder.gep(b_row, [const(v * W)], inbounds=True), vptr),
                                   align=size) for v in range(NV)]
                if not by_rows:
                    a_row = builder.gep(a_base, [builder.mul(p, a_stepv)], inbounds=True)
                for i in range(MR):
                    where = builder.gep(a_rows[i], [p], inbounds=True) if by_rows else \
                        builder.gep(a_row, [const(i)], inbounds=True)
                    a = builder.load(where, align=size)
                    splat = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(i32, 0)), undef,
                                                   splat_mask)
                    for v in range(NV):
                        acc = accs[i * NV + v]
                        builder.store(builder.call(fma, [splat, bs[v], builder.load(acc)]), acc)
            for acc, ptr in zip(accs, c_ptrs):
                builder.store(builder.load(acc), ptr, align=size)

        def vectors_from(by_rows, NV):
            """nvec <= NV: the NV-vector loop; else the next one (NV_MAX takes the rest)."""
            if NV == NV_MAX:
                tile(by_rows, NV)
                return
            with builder.if_else(builder.icmp_signed("<=", nvecv, const(NV))) as (fits, wider):
                with fits:
                    tile(by_rows, NV)
                with wider:
                    vectors_from(by_rows, NV + 1)

        with builder.if_else(by_rowsv) as (rows, panel):
            with rows:
                vectors_from(True, 1)
            with panel:
                vectors_from(False, 1)
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------------------
# Packing and the work of one slot
# ---------------------------------------------------------------------------

@njit(inline="always", **VECTOR_FLAGS)
def _pack(ws, off, X, lanes_in_rows, l0, count, p0, kc, width):
    r"""Pack ``count`` lanes x kc terms of X into panels of ``width`` lanes.

    ws[off + q*kc + p*width + l] = X(p0 + p, l0 + q + l) for q = 0, width, 2 width, ...,
    where X(p, l) is X[l, p] when ``lanes_in_rows`` else X[p, l]; lanes past
    ``count`` are zero.  A is packed with lanes = rows of C (width MR),
    B with lanes = columns of C (width NR).  Inlined where ``width`` is a
    compile-time constant, so whole panels copy without a test per element;
    unsigned indices skip Numba's negative-index wraparound.
    """
    zero = ws.dtype.type(0)
    for q in range(0, count, width):
        base = off + q * kc
        w = min(width, count - q)
        if w == width:
            if lanes_in_rows:
                for p in range(kc):
                    for lane in range(width):
                        ws[np.uintp(base + p * width + lane)] = X[np.uintp(l0 + q + lane), np.uintp(p0 + p)]
            else:
                for p in range(kc):
                    for lane in range(width):
                        ws[np.uintp(base + p * width + lane)] = X[np.uintp(p0 + p), np.uintp(l0 + q + lane)]
        else:
            for p in range(kc):
                for lane in range(width):
                    if lane >= w:
                        ws[base + p * width + lane] = zero
                    elif lanes_in_rows:
                        ws[base + p * width + lane] = X[l0 + q + lane, p0 + p]
                    else:
                        ws[base + p * width + lane] = X[p0 + p, l0 + q + lane]


@njit(inline="always", **VECTOR_FLAGS)
def _tile_at(tile, by_column, n_ti, n_tj, MR, NR):
    """(first row, first column) of the tile-th register tile of a block: row-major, or column-major."""
    if by_column:
        return (tile % n_ti) * MR, (tile // n_ti) * NR
    return (tile // n_tj) * MR, (tile % n_tj) * NR


@njit(inline="always", **VECTOR_FLAGS)
def _unit_stride(X, axis):
    """True when X's elements are adjacent along ``axis`` (a read with stride 1 there)."""
    return X.shape[axis] <= 1 or X.strides[axis] == X.itemsize


@njit(**VECTOR_FLAGS)
def _run_slot(C, A, a_trans, B, b_trans, P, ws, slot, n_slots, units_r, units_c, per_slot):
    r"""Every unit u = slot, slot + n_slots, ... of the units_r x units_c grid of C, with slot ``slot`` of ws.

    A unit whose columns fit one register tile (a narrow C: an output layer's
    z = h·W or ∂L/∂W = hᵀ·δ) reads A unpacked when A's rows (or Aᵀ's) have
    stride 1: its A panels would be packed to be read once.  Its tiles
    compute only the vectors that hold C's columns.
    """
    MR, NR, KC, MC, NB = _blocking(ws)
    M, N = C.shape
    isz = C.itemsize
    W = VECTOR_BYTES // isz
    a_len, b_len, _ = _slot_parts_compiled(M, N, P, MR, NR, KC, MC, NB)
    a_off = slot * per_slot
    b_off = a_off + a_len
    t_off = b_off + b_len
    ws_at = _address(ws)
    c_at = _address(C)
    row_panels = -(-M // MR)
    col_panels = -(-N // NR)
    n_passes = -(-P // KC)
    # B or A read in place only in ws's dtype (packing converts another one)
    b_rows = _same_dtype(B, ws) and not b_trans and _unit_stride(B, 1) and (B.shape[0] <= 1 or
                                                                           B.strides[0] == N * isz)
    # A unpacked: element (i, p) at A_at + (i * a_step + p) * isz (rows of A), or (p * a_step + i) * isz (of Aᵀ)
    a_by_rows = not a_trans
    a_direct_ok = _same_dtype(A, ws) and _unit_stride(A, 1)
    a_step = A.strides[0] // isz
    for u in range(slot, units_r * units_c, n_slots):
        ur, uc = u // units_c, u % units_c
        r_lo = min(M, (ur * row_panels // units_r) * MR)
        r_hi = min(M, ((ur + 1) * row_panels // units_r) * MR)
        direct = b_rows and r_hi - r_lo <= DIRECT_B_MAX_ROWS
        c_lo = min(N, (uc * col_panels // units_c) * NR)
        c_hi = min(N, ((uc + 1) * col_panels // units_c) * NR)
        a_direct = a_direct_ok and c_hi - c_lo <= NR
        for ic in range(r_lo, r_hi, MC):
            rows = min(MC, r_hi - ic)
            for k_pass in range(n_passes):  # passes of equal length (<= KC terms), not KC + a short rest
                pc = k_pass * P // n_passes
                kc = (k_pass + 1) * P // n_passes - pc
                first = k_pass == 0
                if not a_direct:
                    _pack(ws, a_off, A, not a_trans, ic, rows, pc, kc, MR)
                for jc in range(c_lo, c_hi, NB):
                    cols = min(NB, c_hi - jc)
                    full = (cols // NR) * NR if direct else 0  # columns read from B itself, unpacked
                    if full < cols:
                        _pack(ws, b_off + full * kc, B, b_trans, jc + full, cols - full, pc, kc, NR)
                    n_ti = -(-rows // MR)
                    n_tj = -(-cols // NR)
                    n_tiles = n_ti * n_tj
                    for tile in range(n_tiles):  # row by row; column by column when B is read unpacked
                        ti, tj = _tile_at(tile, direct, n_ti, n_tj, MR, NR)
                        r, c = ic + ti, jc + tj
                        mv = min(MR, rows - ti)
                        nv = min(NR, cols - tj)
                        if tj < full:
                            b_at, ldb = _address(B) + (pc * N + c) * isz, N
                        else:
                            b_at, ldb = ws_at + (b_off + tj * kc) * isz, NR
                        if not a_direct:
                            a_at, step, by_rows = ws_at + (a_off + ti * kc) * isz, MR, False
                        elif mv < MR:  # past the last row of A: pack this one panel, zero-padded
                            _pack(ws, a_off, A, not a_trans, r, mv, pc, kc, MR)
                            a_at, step, by_rows = ws_at + a_off * isz, MR, False
                        elif a_by_rows:
                            a_at, step, by_rows = _address(A) + (r * a_step + pc) * isz, a_step, True
                        else:
                            a_at, step, by_rows = _address(A) + (pc * a_step + r) * isz, a_step, False
                        nvec = -(-nv // W)
                        if mv == MR and nv == NR:
                            pf = 0  # where the next tile of C starts, to prefetch it
                            if tile + 1 < n_tiles:
                                ni, nj = _tile_at(tile + 1, direct, n_ti, n_tj, MR, NR)
                                pf = c_at + ((ic + ni) * N + jc + nj) * isz
                            c_tile = c_at + (r * N + c) * isz
                            _micro_kernel(ws, a_at, step, by_rows, b_at, ldb, c_tile, N, kc, first, pf, nvec)
                            continue
                        # a tile cut by the edge of C: through the scratch tile
                        if not first:
                            for i in range(mv):
                                for j in range(nv):
                                    ws[t_off + i * NR + j] = C[r + i, c + j]
                        _micro_kernel(ws, a_at, step, by_rows, b_at, ldb, ws_at + t_off * isz, NR, kc, first, 0, nvec)
                        for i in range(mv):
                            for j in range(nv):
                                C[r + i, c + j] = ws[t_off + i * NR + j]


@njit(**VECTOR_FLAGS)
def _plan(C, P, ws):
    """(packed?, n_slots, units_r, units_c, per_slot) for C = (...) with P terms and workspace ws."""
    MR, NR, KC, MC, NB = _blocking(ws)
    m, n = C.shape
    isz = C.itemsize
    contiguous = C.strides[1] == isz and (m <= 1 or C.strides[0] == n * isz)
    if m * n * P < SMALL_WORK or not contiguous:
        return False, 0, 0, 0, 0
    a_len, b_len, t_len = _slot_parts_compiled(m, n, P, MR, NR, KC, MC, NB)
    per_slot = a_len + b_len + t_len
    capacity = ws.shape[0] // per_slot
    if capacity < 1:
        raise ValueError("products: ws is shorter than products.workspace_size(m, n, p)")
    threads = num_threads() if m * n * P >= PARALLEL_MIN_MACS else 1
    units_c = min(threads, -(-n // NR))
    units_r = min(-(-threads // units_c), -(-m // MR))
    n_slots = min(threads, capacity, units_r * units_c)
    return True, n_slots, units_r, units_c, per_slot


# ---------------------------------------------------------------------------
# The three products
# ---------------------------------------------------------------------------


def _matmul(C, A, a_trans, B, b_trans, ws):
    r"""C_rc = Σ_p A(r, p) B(p, c): A(r, p) = A[p, r] if a_trans else A[r, p], B(p, c) likewise with b_trans.

    The one body of the three products (each passes its own literal a_trans, b_trans).
    """
    m, n = C.shape
    a_rows, P = (A.shape[1], A.shape[0]) if a_trans else (A.shape[0], A.shape[1])
    b_rows, b_cols = (B.shape[1], B.shape[0]) if b_trans else (B.shape[0], B.shape[1])
    if a_rows != m or b_cols != n or b_rows != P:
        raise ValueError("products: shapes of C, A, B do not match")
    if not _same_dtype(C, ws):
        raise TypeError("products: C and ws must have one dtype")
    packed, n_slots, units_r, units_c, per_slot = _plan(C, P, ws)
    if packed and n_slots == 1:
        # (slot and count as run-time integers: literal 0, 1 would compile a second _run_slot)
        _run_slot(C, A, a_trans, B, b_trans, P, ws, n_slots - 1, n_slots, units_r, units_c, per_slot)
        return
    if packed:
        for s in prange(n_slots):
            _run_slot(C, A, a_trans, B, b_trans, P, ws, s, n_slots, units_r, units_c, per_slot)
        return
    for r in prange(m):  # the plain loops: multiply, then add, p ascending
        for c in range(n):
            C[r, c] = 0.0
        for p in range(P):
            a = A[p, r] if a_trans else A[r, p]
            if b_trans:
                for c in range(n):
                    C[r, c] += a * B[c, p]
            else:
                for c in range(n):
                    C[r, c] += a * B[p, c]


_product = compile_twice(_matmul, JIT_FLAGS)


def matmul_nn(C, A, B, ws):
    r"""C_rc = Σ_p A_rp B_pc  (C = A @ B); C: (m, n), A: (m, P), B: (P, n)."""
    _product(C, A, False, B, False, ws)


def matmul_tn(C, A, B, ws):
    r"""C_rc = Σ_p A_pr B_pc  (C = Aᵀ @ B); C: (m, n), A: (P, m), B: (P, n)."""
    _product(C, A, True, B, False, ws)


def matmul_nt(C, A, B, ws):
    r"""C_rc = Σ_p A_rp B_cp  (C = A @ Bᵀ); C: (m, n), A: (m, P), B: (n, P)."""
    _product(C, A, False, B, True, ws)


matmul_nn = jit(**JIT_FLAGS)(matmul_nn)
matmul_tn = jit(**JIT_FLAGS)(matmul_tn)
matmul_nt = jit(**JIT_FLAGS)(matmul_nt)

#: The serial twins (calling ``_product.serial``) under their own names, for compiled code (which
#: cannot read ``matmul_nn.serial``), and at ``.serial`` for :func:`nbmlp.parallel.call`.
_SERIAL = serial_twins(("matmul_nn", "matmul_tn", "matmul_nt"), ("_product",), globals(), JIT_FLAGS)
matmul_nn.serial = matmul_nn_serial = _SERIAL["matmul_nn"]
matmul_tn.serial = matmul_tn_serial = _SERIAL["matmul_tn"]
matmul_nt.serial = matmul_nt_serial = _SERIAL["matmul_nt"]


@njit(**VECTOR_FLAGS)
def _kernel_loop(ws, kc, calls):
    """The micro-kernel ``calls`` times on the same packed panels (A, then B, then the tile) at the start of ws."""
    MR, NR = _blocking(ws)[:2]
    at = _address(ws)
    b_at = at + MR * kc * ws.itemsize
    c_at = b_at + NR * kc * ws.itemsize
    for _ in range(calls):
        _micro_kernel(ws, at, MR, False, b_at, NR, c_at, NR, kc, False, 0, NR * ws.itemsize // VECTOR_BYTES)


def micro_kernel_rate(dtype, seconds: float = 0.2) -> float:
    """GF/s of one thread running the micro-kernel on panels that stay in L1 (KC = 128): this design's ceiling.

    Nothing but the tile's fused multiply-adds and its operand loads, so it measures what
    one core sustains (its FMA units at its actual clock), the rate a product reaches
    only if packing, the caches and C's loads and stores cost nothing.
    """
    dtype = np.dtype(dtype)
    if dtype not in BLOCKING:
        raise TypeError(f"micro_kernel_rate: dtype must be float32 or float64, got {dtype}")
    if not 0.0 < seconds < float("inf"):
        raise ValueError(f"micro_kernel_rate: seconds must be a positive number, got {seconds!r}")
    MR, NR = BLOCKING[dtype][:2]
    kc = 128
    ws = workspace(MR + 1, NR, kc, dtype)
    ws[:] = 1e-3
    calls = 64
    _kernel_loop(ws, kc, 1)
    while True:
        t = time.perf_counter()
        _kernel_loop(ws, kc, calls)
        elapsed = time.perf_counter() - t
        if elapsed >= seconds / 4:
            break
        calls *= 4
    best = elapsed
    for _ in range(3):
        t = time.perf_counter()
        _kernel_loop(ws, kc, calls)
        best = min(best, time.perf_counter() - t)
    return 2 * MR * NR * kc * calls / best / 1e9


__all__ = ["ALIGN_BYTES", "BLOCKING", "DIRECT_B_MAX_ROWS", "MEASURED_L2_BYTES", "PARALLEL_MIN_MACS",
           "SMALL_WORK", "VECTOR_BYTES", "VECTOR_REGISTERS", "blocking_for", "l2_bytes", "matmul_nn",
           "matmul_nn_serial", "matmul_nt", "matmul_nt_serial", "matmul_tn", "matmul_tn_serial",
           "micro_kernel_rate", "workspace", "workspace_size"]
