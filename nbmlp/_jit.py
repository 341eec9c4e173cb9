"""How nbmlp compiles its loop kernels: one place for the Numba flags.

Every loop kernel is written once, as a Python function whose outer loop is
``numba.prange`` over an index that the kernel *writes* (an output row i or an
output unit k).  :func:`loop_kernel` compiles that one source twice:

* ``f``        -- ``@njit(parallel=True)``: the prange loop is split over threads;
* ``f.serial`` -- ``@njit``: the same source, where ``prange`` is a plain ``range``.

The serial twin exists because starting a parallel region costs microseconds,
which dominates at the note's 4-5-3 size (see ``nbmlp.engines`` for the choice).
Because every prange body writes only its own output slots and keeps its sums
in a private local, both compilations give bit-identical results for any
thread count.

Flags: no ``fastmath`` in the literal tier, so each Σ is summed in the order the
loop states it; ``cache=True`` so a second process loads machine code from disk.
Numba's on-disk cache keys entries by the function's qualified name and
signature but *not* by the compile flags (``numba/core/caching.py``,
``_index_key``), so the serial twin is compiled from a renamed copy of the
function; otherwise the two would overwrite each other's cache entries.
"""

from __future__ import annotations

import types

from numba import njit

#: Flags shared by every kernel of the literal tier.
JIT_FLAGS = {"cache": True, "fastmath": False, "nogil": True}


def _renamed_copy(py_func: types.FunctionType, suffix: str) -> types.FunctionType:
    code = py_func.__code__.replace(
        co_name=py_func.__code__.co_name + suffix,
        co_qualname=py_func.__code__.co_qualname + suffix,
    )
    copy = types.FunctionType(
        code, py_func.__globals__, py_func.__name__ + suffix, py_func.__defaults__, py_func.__closure__
    )
    copy.__qualname__ = py_func.__qualname__ + suffix
    copy.__module__ = py_func.__module__
    copy.__doc__ = py_func.__doc__
    return copy


def compile_twice(py_func, flags):
    """Compile ``py_func`` with ``flags`` as a parallel kernel, with a serial twin at ``.serial``."""
    parallel = njit(parallel=True, **flags)(py_func)
    parallel.serial = njit(parallel=False, **flags)(_renamed_copy(py_func, "_serial"))
    return parallel


def loop_kernel(py_func):
    """Compile ``py_func`` with :data:`JIT_FLAGS` as a parallel kernel with a serial twin at ``.serial``."""
    return compile_twice(py_func, JIT_FLAGS)


def scalar_helper(py_func):
    """Compile a small scalar function that kernels call element by element."""
    return njit(inline="always", **JIT_FLAGS)(py_func)
