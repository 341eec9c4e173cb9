"""How nbmlp compiles its loop kernels: the Numba flags, the on-disk cache and the compile notices.

Every loop kernel is written once, as a Python function whose outer loop is
``numba.prange`` over an index that the kernel *writes* (an output row i or an
output unit k).  :func:`loop_kernel` compiles that one source twice:

* ``f``        -- ``@njit(parallel=True)``: the prange loop is split over threads;
* ``f.serial`` -- ``@njit``: the same source, where ``prange`` is a plain ``range``.

The serial twin exists because starting a parallel region costs microseconds,
which dominates at the note's 4-5-3 size; :mod:`nbmlp.parallel` chooses between
the two.  Because every prange body writes only its own output slots and keeps
its sums in a private local, both compilations give bit-identical results for
any thread count.

Flags: no ``fastmath`` in the literal tier, so each Σ is summed in the order the
loop states it; ``cache=True`` so a second process loads machine code from disk.
Numba's on-disk cache keys entries by the function's qualified name and
signature but *not* by the compile flags (``numba/core/caching.py``,
``_index_key``), so the serial twin is compiled from a renamed copy of the
function; otherwise the two would overwrite each other's cache entries.

The cache, made safe for a package whose compiled functions inline each other:

* **never stale**: Numba stamps a function's cache entries with a hash of the
  function's *own* file, so a compiled loop that inlines a helper from another
  module kept the old helper after an edit.  Here every function of nbmlp is
  stamped with one hash of *all* of nbmlp's sources (:func:`package_stamp`), so
  editing any module recompiles every nbmlp function on next use (and nothing
  else: functions outside nbmlp keep Numba's own stamps);
* **never fatal**: a truncated or corrupt cache file (``.nbi`` / ``.nbc``) of a
  function compiled through :func:`jit` is dropped and the function recompiled,
  instead of an ``UnpicklingError`` reaching the caller.

Compile notices: any compile of an nbmlp function that lasts over
:data:`NOTICE_AFTER_S` prints ``nbmlp: compiling <what> (first use; cached
afterwards) ...`` on stderr, a "still compiling" line every
:data:`NOTICE_EVERY_S` seconds, and ``nbmlp: compiled <what> in X s`` at the
end; :func:`compiling` names a larger block ("the training loop ...").
``NBMLP_QUIET=1`` or :func:`set_quiet` silences them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import threading
import time
import types

from numba import njit
from numba.core import caching
from numba.core import event as numba_event
from numba.core.caching import FunctionCache

from . import parallel  # noqa: F401  (chooses the threading layer before anything is compiled)

#: Flags shared by every kernel of the literal tier.
JIT_FLAGS = {"cache": True, "fastmath": False, "nogil": True}

#: :data:`JIT_FLAGS` with NumPy's error model: a float division by zero gives inf/NaN
#: instead of raising, so a division carries no zero test, a branch that stops LLVM
#: from vectorizing the loop (the packed products' helpers, the update rules).
VECTOR_FLAGS = dict(JIT_FLAGS, error_model="numpy")

#: A compile that has run this long gets a notice on stderr.
NOTICE_AFTER_S = 1.0

#: While a compile runs on, a "still compiling" line every this many seconds.
NOTICE_EVERY_S = 10.0

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


# --- serial twins -------------------------------------------------------------


def renamed_code(code: types.CodeType, suffix: str, has_qualname: bool) -> types.CodeType:
    """``code`` with ``suffix`` appended to its name (and to its qualified name where code objects have one).

    ``co_qualname`` exists from Python 3.11 on; ``has_qualname`` says whether to set it.
    """
    changes = {"co_name": code.co_name + suffix}
    if has_qualname:
        changes["co_qualname"] = code.co_qualname + suffix
    return code.replace(**changes)


def _renamed_copy(py_func: types.FunctionType, suffix: str) -> types.FunctionType:
    return variant_copy(py_func, suffix, py_func.__globals__)


def variant_copy(py_func: types.FunctionType, suffix: str, namespace: dict) -> types.FunctionType:
    """A copy of ``py_func`` named ``<name><suffix>`` whose global names are looked up in ``namespace``.

    One source compiled for several sets of callees (the compiled training loop's serial and
    parallel drivers): each copy has its own name, so its own on-disk cache entries, and calls the
    functions ``namespace`` binds.  (Passing the callees as arguments instead would keep the caller
    out of Numba's on-disk cache: it cannot cache a function that takes functions.)
    """
    code = renamed_code(py_func.__code__, suffix, sys.version_info >= (3, 11))
    copy = types.FunctionType(code, namespace, py_func.__name__ + suffix, py_func.__defaults__, py_func.__closure__)
    copy.__qualname__ = py_func.__qualname__ + suffix
    copy.__module__ = py_func.__module__
    copy.__doc__ = py_func.__doc__
    return copy


# --- the cache ----------------------------------------------------------------


def package_sources():
    """Every ``.py`` file of nbmlp, in a fixed order."""
    for folder, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


@functools.cache
def package_stamp() -> str:
    """SHA-256 of every ``.py`` file of nbmlp (paths and contents), computed once per process."""
    digest = hashlib.sha256()
    for path in package_sources():
        digest.update(os.path.relpath(path, PACKAGE_DIR).encode())
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def in_package(py_file: str) -> bool:
    """True when ``py_file`` is one of nbmlp's own source files."""
    try:
        return os.path.commonpath([os.path.abspath(py_file), PACKAGE_DIR]) == PACKAGE_DIR
    except ValueError:  # different drives
        return False


class _PackageStamp:
    """Locator mixin: only for nbmlp's files, stamped with the hash of the whole package."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if not in_package(py_file):
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return package_stamp()


class PackageUserProvidedLocator(_PackageStamp, caching.UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR``, for nbmlp's files."""


class PackageInTreeLocator(_PackageStamp, caching.InTreeCacheLocator):
    """``nbmlp/__pycache__``, for nbmlp's files."""


class PackageUserWideLocator(_PackageStamp, caching.UserWideCacheLocator):
    """The user's cache directory (read-only installs), for nbmlp's files."""


PACKAGE_LOCATORS = (PackageUserProvidedLocator, PackageInTreeLocator, PackageUserWideLocator)


def _install_locators():
    """Put nbmlp's locators first in Numba's list; they decline every file outside nbmlp."""
    classes = caching.CacheImpl._locator_classes
    for cls in reversed(PACKAGE_LOCATORS):
        if cls not in classes:
            classes.insert(0, cls)


_install_locators()


class RecoveringCache(FunctionCache):
    """Numba's per-function cache, where an unreadable cache file means "recompile", never an error."""

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:  # truncated or corrupt .nbi/.nbc: pickle, EOF, LLVM errors
            notice(f"cached code of {self._py_func.__qualname__} is unreadable ({type(exc).__name__}); "
                   "recompiling")
            self._reset()
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception:  # the index is unreadable: start it afresh, then save once more
            self._reset()
            with contextlib.suppress(Exception):
                super().save_overload(sig, data)

    def _reset(self):
        with contextlib.suppress(Exception):
            self.flush()  # writes an empty index (atomically), so the bad entries are forgotten


def jit(**flags):
    """``numba.njit(**flags)`` with :class:`RecoveringCache` when ``flags`` ask for ``cache=True``."""

    def decorate(py_func):
        dispatcher = njit(**flags)(py_func)
        if flags.get("cache"):
            dispatcher._cache = RecoveringCache(dispatcher.py_func)
        return dispatcher

    return decorate


def compile_twice(py_func, flags):
    """Compile ``py_func`` with ``flags`` as a parallel kernel, with a serial twin at ``.serial``."""
    compiled = jit(parallel=True, **flags)(py_func)
    compiled.serial = jit(parallel=False, **flags)(_renamed_copy(py_func, "_serial"))
    return compiled


def serial_twins(callers, kernels, namespace: dict, flags) -> dict:
    """Serial copies of the compiled functions ``callers`` of ``namespace``, by name.

    Each copy (``<name>_serial``, compiled with ``flags``) calls the ``.serial`` twin of every function
    named in ``kernels`` and the serial copies of the other ``callers``, where the original calls the
    parallel compilations: one source for a caller that runs parallel kernels and for its serial twin.
    """
    bound = dict(namespace)
    bound.update({name: bound[name].serial for name in kernels})
    for name in callers:
        bound[name] = jit(**flags)(variant_copy(bound[name].py_func, "_serial", bound))
    return {name: bound[name] for name in callers}


def loop_kernel(py_func):
    """Compile ``py_func`` with :data:`JIT_FLAGS` as a parallel kernel with a serial twin at ``.serial``."""
    return compile_twice(py_func, JIT_FLAGS)


def scalar_helper(py_func):
    """Compile a small scalar function that kernels call element by element."""
    return jit(inline="always", **JIT_FLAGS)(py_func)


# --- compile notices ------------------------------------------------------------

_quiet = None  # None: follow NBMLP_QUIET


def set_quiet(quiet: bool | None = True) -> None:
    """Silence (True) or allow (False) compile notices; None follows ``NBMLP_QUIET`` again."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    if _quiet is not None:
        return _quiet
    return os.environ.get("NBMLP_QUIET", "").strip() not in ("", "0")


def notice(message: str) -> None:
    """One line ``nbmlp: <message>`` on stderr, unless quiet."""
    if not is_quiet():
        with contextlib.suppress(Exception):  # a closed stderr must not break a computation
            print(f"nbmlp: {message}", file=sys.stderr, flush=True)


class _Watch:
    """Prints the notices of one named block while it runs (a daemon timer thread)."""

    def __init__(self, what, after, every):
        self.what, self.after, self.every = what, after, every
        self.start = time.perf_counter()
        self.done = threading.Event()
        self.announced = False
        self.thread = threading.Thread(target=self._run, name="nbmlp-compile-notice", daemon=True)
        self.thread.start()

    def _run(self):
        if self.done.wait(self.after):
            return
        self.announced = True
        notice(f"compiling {self.what} (first use; cached afterwards) ...")
        while not self.done.wait(self.every):
            notice(f"still compiling {self.what} ({time.perf_counter() - self.start:.0f} s) ...")

    def stop(self):
        self.done.set()
        self.thread.join()
        if self.announced:
            notice(f"compiled {self.what} in {time.perf_counter() - self.start:.1f} s")


_local = threading.local()


@contextlib.contextmanager
def compiling(what: str, after: float | None = None, every: float | None = None):
    """Say on stderr what is compiling when the block runs longer than ``after`` seconds.

    Wrap a block whose first run compiles (a call of a compiled function that
    may not be cached yet); when it is fast (cached) nothing is printed.
    Inside the block, compiles of single functions print nothing of their own.
    """
    if is_quiet() or getattr(_local, "depth", 0):
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            yield
        finally:
            _local.depth -= 1
        return
    watch = _Watch(what, NOTICE_AFTER_S if after is None else after, NOTICE_EVERY_S if every is None else every)
    _local.depth = 1
    try:
        yield
    finally:
        _local.depth = 0
        watch.stop()


class _CompileListener(numba_event.Listener):
    """Announces each outermost compile of an nbmlp function that lasts over NOTICE_AFTER_S."""

    def on_start(self, event):
        if getattr(_local, "depth", 0) or is_quiet():
            _local.depth = getattr(_local, "depth", 0) + 1
            _local.nested = getattr(_local, "nested", 0) + 1
            return
        dispatcher = event.data.get("dispatcher")
        py_func = getattr(dispatcher, "py_func", None)
        module = getattr(py_func, "__module__", "") or ""
        if module != "nbmlp" and not module.startswith("nbmlp."):
            return
        _local.watch = _Watch(py_func.__qualname__, NOTICE_AFTER_S, NOTICE_EVERY_S)
        _local.depth = 1

    def on_end(self, event):
        if getattr(_local, "nested", 0):
            _local.nested -= 1
            _local.depth -= 1
            return
        watch = getattr(_local, "watch", None)
        if watch is not None:
            _local.watch = None
            _local.depth = 0
            watch.stop()


numba_event.register("numba:compile", _CompileListener())


__all__ = [
    "JIT_FLAGS",
    "VECTOR_FLAGS",
    "NOTICE_AFTER_S",
    "NOTICE_EVERY_S",
    "PACKAGE_LOCATORS",
    "RecoveringCache",
    "compile_twice",
    "compiling",
    "in_package",
    "is_quiet",
    "jit",
    "loop_kernel",
    "notice",
    "package_sources",
    "package_stamp",
    "renamed_code",
    "scalar_helper",
    "serial_twins",
    "set_quiet",
    "variant_copy",
]
