"""Serial or parallel: the one threshold, the one dispatcher and the threading layer of nbmlp.

Every loop kernel is compiled twice (:func:`nbmlp._jit.compile_twice`): ``f``
runs its ``prange`` loop on Numba's threads, ``f.serial`` on the caller's
thread.  :func:`pick` chooses between the two for one call; :func:`region`
wraps every call of parallel code.  Why the policy is what it is, with the
measurements behind it: ``docs/parallel.md`` (``python bench/threads.py``).

The policy, in order:

1. below :data:`PARALLEL_MIN_WORK` multiply-adds (or elements) a call runs
   serially: starting a parallel region costs microseconds;
2. a call runs serially when fewer than two cores are free for this process:
   beside a CPU-bound process a parallel region waits, at its closing barrier,
   for a thread that the operating system has descheduled for a time slice
   (milliseconds): under GNU OpenMP one busy neighbour made a 36 µs call take
   7.8 ms.
   "Free" is measured from ``/proc/stat`` (idle time of the cores this process
   may run on, plus this process's own CPU time) over the last
   :data:`LOAD_SAMPLE_S` seconds; the check is a clock read between samples;
3. inside :func:`region`, Numba's thread count is lowered to the number of
   free cores (on a machine with more than two cores, a busy neighbour takes one
   core, not the whole parallel path);
4. in a child forked from a process that started GNU OpenMP, every call runs
   serially (GNU OpenMP terminates a forked child that enters a parallel region);
5. the user's own ``numba.set_num_threads(1)`` is respected.

``NBMLP_PARALLEL=serial|parallel|auto`` or :func:`set_mode` overrides 1-2 (tests
and benchmarks use it to time each path).

The threading layer is chosen here, once, before anything is compiled:
TBB when its library is installed (``pip install tbb``; fork-safe and
thread-safe), else Numba's default order (OpenMP, then workqueue).  A user's
``NUMBA_THREADING_LAYER`` / ``NUMBA_THREADING_LAYER_PRIORITY`` always wins.
:func:`region` is a lock where the active layer is not thread-safe (workqueue:
concurrent parallel calls from two threads abort the process) and a no-op
otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import site
import sys
import sysconfig
import threading
import time

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

#: Below this much work (multiply-adds for products, elements otherwise) a call
#: runs the serial compilation: starting a parallel region costs microseconds
#: (tens of them under TBB, which creates a task arena per region).  Provisional:
#: measured on a shared 2-core machine; ``python bench/threads.py`` shows the
#: serial/parallel crossover (docs/parallel.md).
PARALLEL_MIN_WORK = 1 << 18

#: Work of one element of a kernel that evaluates exp, tanh or log, counted in
#: multiply-adds: pass ``elements * EXP_WORK`` for such kernels.  Measured on the
#: serial literal kernels (256 x 256, float64): sigmoid_forward 18 ns and
#: tanh_forward 31 ns per element, linear_forward 1.5 ns per multiply-add;
#: relu and the backward kernels (0.4-0.9 ns per element) count 1 per element.
EXP_WORK = 16

#: Work of one element whose formula divides and takes a square root (Adam's slot,
#: :func:`nbmlp.optim.adam_slot`: 1.5 ns serial, float64, 200k slots; relu 0.4 ns).
#: At 16 (as exp) a 16k-slot Adam update went parallel and the digits (256,) batch-32
#: run took 8.5-8.9 ms per epoch against 8.2-8.3 ms serial.
DIV_WORK = 4

#: Multiply-adds of the packed products (:mod:`nbmlp.products`) that count as one
#: unit of work: they run ~50 GF/s where the literal kernels run ~1.3.  Measured
#: on the 2-core machine, TBB, float64, min of 7 (``m x p x n``: serial / parallel
#: µs): 32x64x256 24 / 25, 64x64x256 42 / 34, 64x256x256 161 / 100, 64x784x256
#: 523 / 320 -- the crossover lies near 2^19-2^20 multiply-adds, four times
#: :data:`PARALLEL_MIN_WORK`.
PACKED_MACS_PER_WORK = 4

#: Seconds between two readings of the cores' idle time (the busy check).
LOAD_SAMPLE_S = 0.5

#: Threading layers in the order nbmlp prefers them (see docs/parallel.md).
LAYER_PRIORITY = ("tbb", "omp", "workqueue")

#: Layers under which concurrent parallel calls from several threads are safe.
THREAD_SAFE_LAYERS = frozenset({"tbb", "omp"})


def _tbb_library_names():
    if sys.platform.startswith("linux"):
        return ("libtbb.so.12",)
    if sys.platform == "darwin":
        return ("libtbb.12.dylib",)
    return ()


def _preload_tbb() -> bool:
    """Make a pip-installed TBB visible to Numba; True when libtbb is loaded.

    ``pip install tbb`` puts ``libtbb.so.12`` in ``<prefix>/lib``, which the
    dynamic loader does not search, so Numba reports TBB missing
    (numba/numba#6108).  Loading it once by path, with ``RTLD_GLOBAL``, lets
    Numba's own ``dlopen("libtbb.so.12")`` find the loaded copy by its soname.
    """
    names = _tbb_library_names()
    for name in names:
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            pass
    dirs = {os.path.join(sysconfig.get_paths()["data"], "lib"), os.path.join(sys.prefix, "lib")}
    with contextlib.suppress(Exception):
        dirs.add(os.path.join(site.getuserbase(), "lib"))
    for directory in sorted(dirs):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.exists(path):
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                    return True
                except OSError:
                    pass
    return False


def _layer_initialised() -> bool:
    try:
        numba.threading_layer()
    except ValueError:
        return False
    return True


def _configure_layer() -> None:
    """Choose the threading layer before the first parallel compile (a user's env vars win)."""
    if _layer_initialised():
        return
    requested = os.environ.get("NUMBA_THREADING_LAYER", "default").strip().lower()
    if requested in ("default", "tbb", "safe", "threadsafe", "forksafe"):
        _preload_tbb()
    if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
        numba.config.THREADING_LAYER_PRIORITY = list(LAYER_PRIORITY)


_configure_layer()


@intrinsic
def num_threads(typingctx):
    """``numba.get_num_threads()`` for compiled code, as a call of the threading layer's C function.

    (Numba's own overload calls it through a ctypes pointer, which keeps the
    calling function out of the on-disk cache.)  The symbol exists once the
    threading layer is running, which :mod:`nbmlp.products` makes sure of at import.
    """
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(cgutils.intp_t, []), "get_num_threads")
        return builder.call(fn, [])

    return types.intp(), codegen


def threading_layer() -> str:
    """The active Numba threading layer, starting Numba's threads if needed."""
    numba.get_num_threads()  # launches the layer on first use
    return numba.threading_layer()


# --- the busy check -----------------------------------------------------------

try:
    _CPUS = sorted(os.sched_getaffinity(0))
except (AttributeError, OSError):
    _CPUS = list(range(os.cpu_count() or 1))
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _idle_seconds():
    """Idle + iowait seconds summed over the cores this process may use, or None off Linux."""
    try:
        with open("/proc/stat", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return None
    wanted = {b"cpu%d" % c for c in _CPUS}
    idle = 0
    found = 0
    for line in lines:
        if not line.startswith(b"cpu"):
            break
        fields = line.split()
        if fields[0] in wanted:
            idle += int(fields[4]) + int(fields[5])
            found += 1
    return idle / _TICKS if found else None


class _Load:
    """Cores free for this process, re-measured at most every LOAD_SAMPLE_S seconds."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sample = (time.monotonic(), _idle_seconds(), time.process_time())
        self.free = float(len(_CPUS))

    def free_cores(self) -> float:
        t0, idle0, own0 = self.sample
        now = time.monotonic()
        if now - t0 < LOAD_SAMPLE_S or idle0 is None:
            return self.free
        idle, own = _idle_seconds(), time.process_time()
        self.sample = (now, idle, own)
        if idle is not None:
            elapsed = now - t0
            free = ((idle - idle0) + (own - own0)) / elapsed
            self.free = min(float(len(_CPUS)), max(0.0, free))
        return self.free


_load = _Load()


def free_cores() -> float:
    """Cores this process could use now: idle time plus its own CPU time, over the last ~0.5 s."""
    return _load.free_cores()


# --- fork ---------------------------------------------------------------------

#: Why parallel code is off in this process (None when it is allowed).
_disabled_reason = None


def _after_fork_in_child():
    global _disabled_reason, _lock
    _lock = threading.RLock()
    _load.reset()
    if _layer_initialised() and numba.threading_layer() == "omp":
        _disabled_reason = "forked from a process that started GNU OpenMP"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def parallel_disabled_reason():
    """Why this process runs every kernel serially, or None."""
    return _disabled_reason


# --- the dispatcher -----------------------------------------------------------


MODES = ("auto", "serial", "parallel")


def _mode_from_env():
    mode = os.environ.get("NBMLP_PARALLEL", "auto").strip().lower() or "auto"
    if mode not in MODES:
        print(f"nbmlp: NBMLP_PARALLEL must be one of {', '.join(MODES)}, got {mode!r}; using auto", file=sys.stderr)
        return "auto"
    return mode


_mode = _mode_from_env()


def set_mode(mode: str) -> str:
    """Set the policy and return the previous one.

    ``"auto"`` (the default, or ``NBMLP_PARALLEL``): the rules above;
    ``"serial"``: every call serial; ``"parallel"``: every call parallel, whatever
    its size and the machine's load (for tests and benchmarks of the parallel
    code; a child forked from GNU OpenMP still runs serially).
    """
    global _mode
    if mode not in MODES:
        raise ValueError(f"parallel mode must be one of {', '.join(MODES)}, got {mode!r}")
    previous, _mode = _mode, mode
    return previous


def use_parallel(work: int) -> bool:
    """True when a call of ``work`` multiply-adds (or elements) should run in parallel now."""
    if _disabled_reason is not None:
        return False
    if _mode != "auto":
        return _mode == "parallel"
    if work < PARALLEL_MIN_WORK:
        return False
    return _load.free_cores() >= 1.5 and numba.get_num_threads() > 1


def pick(compiled, work: int):
    """``compiled`` (parallel) or ``compiled.serial`` for a call of ``work``."""
    return compiled if use_parallel(work) else compiled.serial


_lock = threading.RLock()
_needs_lock = None


class _Region:
    """Lock (where the layer needs one) and cap Numba's threads at the free cores, for one parallel call."""

    __slots__ = ("locked", "restore")

    def __init__(self, locked):
        self.locked = locked
        self.restore = 0

    def __enter__(self):
        if self.locked:
            _lock.acquire()
        free = int(_load.free_cores() + 0.5)
        threads = numba.get_num_threads()
        if 2 <= free < threads:  # a thread beyond the free cores would hold up every region's barrier
            numba.set_num_threads(free)
            self.restore = threads
        return self

    def __exit__(self, *exc):
        if self.restore:
            numba.set_num_threads(self.restore)
        if self.locked:
            _lock.release()
        return False


def region():
    """Context for one call of parallel compiled code.

    A lock where the threading layer is not thread-safe (workqueue); and, when
    some cores are busy with other work, Numba's thread count lowered to the
    cores that are free (restored on exit).
    """
    global _needs_lock
    if _needs_lock is None:
        _needs_lock = threading_layer() not in THREAD_SAFE_LAYERS
    return _Region(_needs_lock)


def call(compiled, work: int, *args):
    """Run ``compiled(*args)`` in parallel inside :func:`region`, or ``compiled.serial(*args)``, as :func:`pick` says.

    The one-line form for Python callers; a serial call pays only the decision (~1 µs), not the region.
    """
    if use_parallel(work):
        with region():
            return compiled(*args)
    return compiled.serial(*args)


__all__ = [
    "LAYER_PRIORITY",
    "LOAD_SAMPLE_S",
    "MODES",
    "PARALLEL_MIN_WORK",
    "THREAD_SAFE_LAYERS",
    "DIV_WORK",
    "EXP_WORK",
    "PACKED_MACS_PER_WORK",
    "call",
    "free_cores",
    "num_threads",
    "parallel_disabled_reason",
    "pick",
    "region",
    "set_mode",
    "threading_layer",
    "use_parallel",
]
