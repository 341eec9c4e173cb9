"""The registry of engines: named sets of kernels with one common interface.

An engine maps every name in :data:`KERNEL_NAMES` to a function with the
signature documented in :mod:`nbmlp.kernels`.  The network code calls kernels
only through an engine, so ``MLP(engine=...)`` swaps the implementation of every
formula at once; tests and ``bench/`` iterate over the same registry, so every
implementation that is timed is also tested.

* ``"loops"``          -- literal loop kernels; serial or parallel by the amount of work
  (:func:`kernel_work`), chosen by :func:`nbmlp.parallel.pick`.  The default.
* ``"loops-serial"``   -- literal loop kernels, always the serial compilation.
* ``"loops-parallel"`` -- literal loop kernels, always the ``prange`` compilation.
* ``"numpy"``          -- :mod:`nbmlp.reference`, vectorized NumPy.
* ``"tuned"``          -- :mod:`nbmlp.kernels_tuned`, the loops rearranged for speed.

Which kernels exist is read from the table of operations (:mod:`nbmlp.ops`);
other engines can be added with :func:`register_engine`.
"""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace

from . import kernels, kernels_tuned, ops, reference
from .parallel import pick

#: Every engine provides exactly these functions (derived from :mod:`nbmlp.ops`).
KERNEL_NAMES = ops.kernel_names()


def kernel_work(name, args):
    """Amount of work of one kernel call: multiply-adds for the linear kernels, elements otherwise."""
    if name == "linear_forward":  # z, h_prev, W, b
        return args[1].size * args[2].shape[1]
    if name in ("linear_backward_weight", "linear_backward_input"):  # out, dz, (h_prev | W)
        return args[1].size * args[2].shape[0 if name == "linear_backward_input" else 1]
    return args[0].size


def _auto(name):
    parallel = getattr(kernels, name)

    def dispatch(*args):
        return pick(parallel, kernel_work(name, args))(*args)

    dispatch.__name__ = name
    dispatch.__doc__ = parallel.__doc__
    dispatch.parallel = parallel
    dispatch.serial = parallel.serial
    return dispatch


_ENGINES: dict[str, SimpleNamespace] = {}


def register_engine(name: str, functions: dict) -> None:
    """Add an engine; ``functions`` must provide every name in :data:`KERNEL_NAMES`."""
    missing = [k for k in KERNEL_NAMES if k not in functions]
    if missing:
        raise ValueError(f"engine {name!r} lacks kernels: {', '.join(missing)}")
    _ENGINES[name] = SimpleNamespace(name=name, **{k: functions[k] for k in KERNEL_NAMES})


register_engine("loops", {k: _auto(k) for k in KERNEL_NAMES})
register_engine("loops-serial", {k: getattr(kernels, k).serial for k in KERNEL_NAMES})
register_engine("loops-parallel", {k: getattr(kernels, k) for k in KERNEL_NAMES})
register_engine("numpy", {k: getattr(reference, k) for k in KERNEL_NAMES})
register_engine("tuned", {k: getattr(kernels_tuned, k) for k in KERNEL_NAMES})

#: Read-only view of the registry: name -> namespace of kernels.
ENGINE_REGISTRY = MappingProxyType(_ENGINES)


def engine_names() -> tuple:
    return tuple(_ENGINES)


def get_engine(name: str) -> SimpleNamespace:
    if not isinstance(name, str) or name not in _ENGINES:
        raise ValueError(f"engine must be one of {engine_names()}, got {name!r}")
    return _ENGINES[name]
