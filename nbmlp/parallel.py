"""Serial or parallel: the one threshold and the one dispatcher of nbmlp's compiled code.

Every loop kernel is compiled twice (:func:`nbmlp._jit.compile_twice`): ``f``
runs its ``prange`` loop on Numba's threads, ``f.serial`` on the caller's thread.
:func:`pick` chooses between the two for an amount of work; :func:`region`
wraps a call of parallel code where the threading layer needs it.
"""

from __future__ import annotations

import contextlib

#: Below this much work (multiply-adds for products, elements otherwise) a call
#: runs the serial compilation: starting a parallel region costs microseconds.
PARALLEL_MIN_WORK = 1 << 15


def use_parallel(work: int) -> bool:
    """True when a call of ``work`` multiply-adds (or elements) should run in parallel."""
    return work >= PARALLEL_MIN_WORK


def pick(compiled, work: int):
    """``compiled`` (parallel) or ``compiled.serial`` for a call of ``work``."""
    return compiled if use_parallel(work) else compiled.serial


def region():
    """Context for a call of parallel compiled code (a lock where the threading layer needs one)."""
    return contextlib.nullcontext()


__all__ = ["PARALLEL_MIN_WORK", "pick", "region", "use_parallel"]
