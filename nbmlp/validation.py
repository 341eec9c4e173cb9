"""Input checks that run before any kernel: clear errors instead of segfaults or NaN.

Kernels index arrays without bounds checks, so every public entry point passes
its arrays through here first.  Accepted arrays are returned as fresh or
read-only-safe C-contiguous copies in the network's dtype, so a caller's array is
never written to and any layout (Fortran order, strided views) gives the same
answers.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from . import ops

#: The floating dtypes a network may compute in.
DTYPES = ("float32", "float64")


def check_dtype(dtype) -> np.dtype:
    """Return the NumPy dtype for ``dtype`` if it is float32 or float64 (``None`` is refused, not float64)."""
    if dtype is None:
        raise TypeError(f"dtype must be one of {DTYPES}, got None")
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


def check_seed(seed, name: str = "seed"):
    """``None`` or an integer in [0, 2**128): what ``np.random.default_rng`` accepts as a seed."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer or None, got {seed!r}")
    if not 0 <= seed < 2**128:
        raise ValueError(f"{name} must be a non-negative integer below 2**128, got {seed!r}")
    return int(seed)


def masked_to_array(a, name: str) -> np.ndarray:
    """The data of a masked array that masks nothing; a masked array that hides entries is refused.

    nbmlp has no notion of missing values, so silently computing on the hidden entries would be a wrong answer.
    """
    hidden = int(np.ma.count_masked(a))
    if hidden:
        raise ValueError(f"{name} is a masked array with {hidden} masked entries; nbmlp does not handle missing "
                         f"values: fill them ({name}.filled(value)) or drop those rows first")
    return np.ma.getdata(a)


def check_path(path, name: str = "path") -> str:
    """A file path given as str or os.PathLike, as a str."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {path!r}")
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"{name} must be a non-empty file path, got {path!r}")
    return path


def check_output_path(path, name: str = "path") -> str:
    """A path a file can be written to: its directory exists and it is not itself a directory.

    Call it before long work (training) whose result is to be saved there.
    """
    path = check_path(path, name)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {name} {path!r}: the directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {name} {path!r}: it is a directory")
    return path


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


def all_finite(a: np.ndarray) -> bool:
    """True when every element of the floating-point array ``a`` is finite.

    One summing pass without temporaries: NaN and infinities propagate through a sum, so a finite
    total proves every element finite.  Only a non-finite total (a non-finite element, or finite
    ones whose sum overflows) pays for the exact element-wise test.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(a, axis=None)):
            return True
    return bool(np.isfinite(a).all())


def usable_in_place(a, dtype) -> bool:
    """True when ``a`` is a plain ndarray of ``dtype``, C-contiguous, aligned and writable: the type the
    compiled code was compiled for, which a reader may take as it is instead of copying."""
    if type(a) is not np.ndarray or a.dtype != dtype:
        return False
    flags = a.flags
    return flags.c_contiguous and flags.aligned and flags.writeable


def check_matrix(a, name: str, width: int | None, dtype: np.dtype, rows: int | None = None, *,
                 copy: bool = True) -> np.ndarray:
    """Check a batch matrix and return it as a C-contiguous array of ``dtype``.

    ``a`` must be 2-D, real-valued (integer or floating; bool, complex, object
    and strings are refused), finite, non-empty, with ``width`` columns and, if
    given, ``rows`` rows.  The result never shares memory with ``a``, unless
    ``copy=False`` and ``a`` is already a plain ndarray of ``dtype``, C-contiguous,
    aligned and writable (the type compiled code was compiled for): then it is ``a``.
    """
    if isinstance(a, np.ma.MaskedArray):
        a = masked_to_array(a, name)
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
    if kind == "f" and not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinite values")
    if not copy and usable_in_place(arr, dtype):
        return arr
    with np.errstate(over="ignore", invalid="ignore"):  # reported just below, in words
        out = np.array(arr, dtype=dtype, order="C", copy=True)
    if arr.dtype != dtype and not all_finite(out):  # e.g. 1e300 or a huge integer cast to float32
        raise ValueError(f"{name} holds values too large to represent in {dtype}")
    return out


#: The share of this machine's physical memory that a network's parameters may take: the rest is left for
#: their gradients (same size), optimizer state and the batch.  Used by MLP(...) and by load, so a model
#: that could never be trained here is refused with a ValueError before anything is allocated.
PARAMETER_MEMORY_FRACTION = 0.5
#: Used where the physical memory cannot be read (no ``os.sysconf``).
FALLBACK_MEMORY_BYTES = 16 * 2**30


def physical_memory_bytes() -> int:
    """This machine's physical memory (``FALLBACK_MEMORY_BYTES`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY_BYTES


def parameter_count(sizes) -> int:
    """Number of weights and biases of a network with layer widths ``sizes``: Σ_l (d_{l-1} + 1) d_l."""
    return sum((d_in + 1) * d_out for d_in, d_out in zip(sizes[:-1], sizes[1:]))


def _bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def check_parameter_budget(sizes, dtype) -> int:
    """Refuse sizes whose parameters would not fit in memory; returns their byte count.

    The cap is :data:`PARAMETER_MEMORY_FRACTION` of the physical memory, so
    ``MLP(sizes=(10**6, 10**6))`` is a ValueError naming sizes and the bytes, not numpy's MemoryError.
    """
    count = parameter_count(sizes)
    nbytes = count * np.dtype(dtype).itemsize
    limit = int(PARAMETER_MEMORY_FRACTION * physical_memory_bytes())
    if nbytes > limit:
        raise ValueError(f"sizes={tuple(sizes)} needs {count:,} parameters = {_bytes(nbytes)} in {np.dtype(dtype)}; "
                         f"the cap is {_bytes(limit)} ({PARAMETER_MEMORY_FRACTION:g} of this machine's memory, "
                         f"leaving room for gradients)")
    return nbytes


def _parameter_name(kind: str, l: int) -> str:
    return f"net.{kind}[{l}] ({kind}{l + 1})"


def _check_parameter(a, kind: str, l: int, shape: tuple, dtype: np.dtype) -> None:
    """One parameter's type, shape, dtype and layout (messages are formatted only on failure)."""
    if type(a) is not np.ndarray:  # lists, masked arrays, matrices, tensors: the kernels take plain arrays
        raise TypeError(f"{_parameter_name(kind, l)} must be a numpy.ndarray of {dtype} with shape {shape}, "
                        f"got {type(a).__name__}")
    if a.shape != shape:
        formula = f"(sizes[{l}], sizes[{l + 1}])" if kind == "W" else f"(sizes[{l + 1}],)"
        hint = " — (in, out), not PyTorch's (out, in)" if len(shape) == 2 and a.shape == shape[::-1] else ""
        raise ValueError(f"{_parameter_name(kind, l)} has shape {a.shape}; expected {shape} = {formula}{hint}")
    if a.dtype != dtype:
        raise TypeError(f"{_parameter_name(kind, l)} has dtype {a.dtype}; the net computes in {dtype} (net.dtype): "
                        f"assign net.{kind}[{l}].astype({dtype.name!r})")
    flags = a.flags
    if not (flags.c_contiguous and flags.writeable and flags.aligned):
        if not flags.c_contiguous:
            why = "is not C-contiguous (a transposed or sliced view?); assign np.ascontiguousarray(...) of it"
        elif not flags.writeable:
            why = ("is read-only; the kernels write parameters in place (training): "
                   "assign a writable copy (np.array(...))")
        else:
            why = "is not aligned in memory; assign a copy (np.array(...))"
        raise ValueError(f"{_parameter_name(kind, l)} {why}")


def check_parameters(net, *, finite: bool = True) -> None:
    """Check ``net.W`` / ``net.b`` against ``net.sizes`` and ``net.dtype`` before any kernel reads them.

    The kernels index without bounds checks, so every public entry point (forward,
    loss, gradients, fit, save, gradcheck) calls this first.  Raises TypeError /
    ValueError naming the parameter (``net.W[0] (W1)``) and the expected shape when
    a parameter is not a list entry of the right type, shape, dtype, C order,
    writability or alignment, when two parameters share memory, or (``finite``)
    when one holds NaN or infinity.

    Cost: O(L) metadata checks (no message is formatted unless one fails) plus, with
    ``finite``, one summing pass over the parameters without temporaries -- a finite
    total proves every entry finite, and only a non-finite total pays for the exact
    test that names the culprit.  The pass is about as long as a forward pass of one
    sample and negligible from a batch of a few dozen (``python bench/safety.py``).
    """
    sizes = net.sizes
    L = len(sizes) - 1
    if len(net.activations) != L:
        raise ValueError(f"net.activations names {len(net.activations)} layers; sizes={sizes} has {L}")
    dtype = net.dtype
    if not isinstance(dtype, np.dtype) or dtype.name not in DTYPES or not dtype.isnative:
        raise TypeError(f"net.dtype must be numpy.dtype('float32') or numpy.dtype('float64'), got {dtype!r}")
    for kind, seq in (("W", net.W), ("b", net.b)):
        if type(seq) is not list:
            raise TypeError(f"net.{kind} must be a list of {L} numpy arrays ({kind}1..{kind}{L}), "
                            f"got {type(seq).__name__}")
        if len(seq) != L:
            raise ValueError(f"net.{kind} holds {len(seq)} arrays; sizes={sizes} needs {L} ({kind}1..{kind}{L})")
    W, b = net.W, net.b
    for l in range(L):
        _check_parameter(W[l], "W", l, (sizes[l], sizes[l + 1]), dtype)
        _check_parameter(b[l], "b", l, (sizes[l + 1],), dtype)
    params = W + b
    if any(a.base is not None for a in params):  # arrays that own their memory cannot overlap
        # Contiguous arrays occupy exactly [start, start + nbytes): sorted by address, neighbours must not overlap.
        names = [_parameter_name(kind, l) for kind in "Wb" for l in range(L)]
        spans = sorted((a.__array_interface__["data"][0], a.nbytes, name) for name, a in zip(names, params))
        for (start, nbytes, name), (next_start, _, next_name) in zip(spans, spans[1:]):
            if start + nbytes > next_start:
                raise ValueError(f"{name} and {next_name} share memory; every parameter needs its own array (.copy())")
    if finite:
        # No np.errstate here (it costs more than the sums of a small net): the sums can only warn when the
        # parameters hold infinities (an error follows) or exceed ~1e308 in total (a RuntimeWarning, accepted).
        total = 0.0
        for a in params:
            total += np.add.reduce(a, axis=None)
        if not np.isfinite(total):  # NaN, inf, or an overflowing sum: the exact test names the culprit
            for i, a in enumerate(params):
                if not np.isfinite(a).all():
                    raise ValueError(f"{_parameter_name('Wb'[i // L], i % L)} contains NaN or infinite values")


def check_sample_weight(sample_weight, n: int) -> np.ndarray | None:
    """``sample_weight``: None, or n finite weights >= 0 with a positive sum; returned as float64 (n,)."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight)
    except Exception as exc:
        raise TypeError(f"sample_weight must be array-like with a numeric dtype: {exc}") from exc
    if w.dtype.kind not in "iuf":
        raise TypeError(f"sample_weight must have a real numeric dtype, got dtype {w.dtype}")
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},) to match X, got shape {w.shape}")
    w = np.array(w, dtype=np.float64, copy=True)
    if not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise ValueError("sample_weight must hold finite values >= 0 with a positive sum")
    return w
