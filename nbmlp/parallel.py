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
   for a thread that the kernel has descheduled for a whole time slice
   (milliseconds), so one busy neighbour made a 36 µs call take 7.8 ms.
   "Free" is measured from ``/proc/stat`` (idle time of the cores this process
   may run on, plus this process's own CPU time) over the last
   :data:`LOAD_SAMPLE_S` seconds; the check is a clock read between samples;
3. in a child forked from a process that started GNU OpenMP, every call runs
   serially (GNU OpenMP terminates a forked child that enters a parallel region);
4. the user's own ``numba.set_num_threads(1)`` is respected.

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

#: Below this much work (multiply-adds for products, elements otherwise) a call
#: runs the serial compilation: starting a parallel region costs microseconds.
PARALLEL_MIN_WORK = 1 << 15

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
    if "NUMBA_THREADING_LAYER" not in os.environ or os.environ["NUMBA_THREADING_LAYER"] in ("tbb", "default", "safe",
                                                                                           "threadsafe", "forksafe"):
        _preload_tbb()
    if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
        numba.config.THREADING_LAYER_PRIORITY = list(LAYER_PRIORITY)


_configure_layer()


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


def use_parallel(work: int) -> bool:
    """True when a call of ``work`` multiply-adds (or elements) should run in parallel now."""
    if work < PARALLEL_MIN_WORK or _disabled_reason is not None:
        return False
    return _load.free_cores() >= 1.5 and numba.get_num_threads() > 1


def pick(compiled, work: int):
    """``compiled`` (parallel) or ``compiled.serial`` for a call of ``work``."""
    return compiled if use_parallel(work) else compiled.serial


_lock = threading.RLock()
_needs_lock = None


def region():
    """Context for a call of parallel compiled code: a lock where the threading layer needs one."""
    global _needs_lock
    if _needs_lock is None:
        _needs_lock = threading_layer() not in THREAD_SAFE_LAYERS
    return _lock if _needs_lock else contextlib.nullcontext()


__all__ = [
    "LAYER_PRIORITY",
    "LOAD_SAMPLE_S",
    "PARALLEL_MIN_WORK",
    "THREAD_SAFE_LAYERS",
    "free_cores",
    "parallel_disabled_reason",
    "pick",
    "region",
    "threading_layer",
    "use_parallel",
]
