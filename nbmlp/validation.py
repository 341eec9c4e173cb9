"""Input checks that run before any kernel: clear errors instead of segfaults or NaN.

Kernels index arrays without bounds checks, so every public entry point passes
its arrays through here first.  Accepted arrays are returned as fresh or
read-only-safe C-contiguous copies in the network's dtype, so a caller's array is
never written to and any layout (Fortran order, strided views) gives the same
answers.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import ops

#: The floating dtypes a network may compute in.
DTYPES = ("float32", "float64")


def check_dtype(dtype) -> np.dtype:
    """Return the NumPy dtype for ``dtype`` if it is float32 or float64."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be one of {DTYPES}, got {dtype!r}") from exc
    if resolved.name not in DTYPES:
        raise TypeError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return resolved


def check_sizes(sizes) -> tuple:
    """``sizes`` = (d0, d1, ..., dL): at least two positive integers."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a sequence of positive integers like (4, 5, 3), got {sizes!r}")
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, got {sizes!r}")
    for d in sizes:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"sizes must hold integers, got {d!r} in {sizes!r}")
        if d < 1:
            raise ValueError(f"every layer width in sizes must be >= 1, got {sizes!r}")
    return tuple(int(d) for d in sizes)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def check_nonnegative_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a non-negative real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return value


def check_loss(loss) -> ops.Loss:
    """The entry of the table of operations for the loss named ``loss``."""
    if not isinstance(loss, str) or loss not in ops.LOSSES:
        raise ValueError(f"loss must be one of {tuple(ops.LOSSES)}, got {loss!r}")
    return ops.LOSSES[loss]


def check_activations(activation, output_activation, n_layers: int, loss: ops.Loss) -> tuple:
    """The activation of each of the n_layers layers, from one name or a list, checked against the table."""
    if isinstance(activation, str):
        names = [activation] * n_layers
    elif hasattr(activation, "__iter__"):
        names = list(activation)
        if len(names) != n_layers:
            raise ValueError(f"activation lists one name per layer: expected {n_layers}, got {len(names)}")
    else:
        raise TypeError(f"activation must be a name or a list of names, got {activation!r}")
    if output_activation is not None:
        names[-1] = output_activation
    elif loss.output_activation is not None:
        names[-1] = loss.output_activation
    for l, name in enumerate(names, start=1):
        if not isinstance(name, str) or name not in ops.ACTIVATIONS:
            raise ValueError(f"activation of layer {l} must be one of {tuple(ops.ACTIVATIONS)}, got {name!r}")
        op = ops.ACTIVATIONS[name]
        if (l != n_layers and not op.hidden) or (op.only_with_loss not in (None, loss.name)):
            raise ValueError(f"{name} is only available as the output activation with loss={op.only_with_loss!r}")
    if loss.output_activation not in (None, names[-1]):
        raise ValueError(f"loss={loss.name!r} needs output_activation={loss.output_activation!r}, "
                         f"got {names[-1]!r}")
    return tuple(names)


def check_matrix(a, name: str, width: int | None, dtype: np.dtype, rows: int | None = None) -> np.ndarray:
    """Check a batch matrix and return it as a C-contiguous array of ``dtype``.

    ``a`` must be 2-D, real-valued (integer or floating; bool, complex, object
    and strings are refused), finite, non-empty, with ``width`` columns and, if
    given, ``rows`` rows.  The result never shares memory with ``a``.
    """
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like with a numeric dtype: {exc}") from exc
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise TypeError(
            f"{name} must have a real numeric dtype (integer or floating point), got dtype {arr.dtype}"
        )
    if arr.ndim != 2:
        expected = f"(n, {width})" if width is not None else "(n, d)"
        raise ValueError(f"{name} must be 2-D with shape {expected}, got an array of shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: shape {arr.shape}; at least one sample (row) is needed")
    if width is not None and arr.shape[1] != width:
        raise ValueError(f"{name} must have {width} columns (shape (n, {width})), got shape {arr.shape}")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"{name} must have n = {rows} rows to match X, got shape {arr.shape}")
    if kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    with np.errstate(over="ignore", invalid="ignore"):  # reported just below, in words
        out = np.array(arr, dtype=dtype, order="C", copy=True)
    if not np.isfinite(out).all():  # e.g. 1e300 or a huge integer cast to float32
        raise ValueError(f"{name} holds values too large to represent in {dtype}")
    return out


def check_parameters(net) -> None:
    """Check ``net.W`` / ``net.b`` against ``net.sizes`` and ``net.dtype`` before any kernel reads them.

    Raises ValueError / TypeError naming the parameter and the expected shape.
    """
