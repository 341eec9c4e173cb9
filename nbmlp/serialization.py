"""Save and load networks as ``.npz`` files: plain arrays, no pickle, a format version, the architecture.

A file written by :func:`save` holds, as separate NumPy arrays:

=================  ===========================================================
``nbmlp_format``   the string ``"nbmlp.MLP"`` (what the file is)
``format_version`` an integer, :data:`FORMAT_VERSION`
``sizes``          ``(d0, d1, ..., dL)``
``activations``    the L activation names, as a unicode array
``loss``           the loss name
``input_sigmoid``  whether ``h0 = sigma(X)`` (the note) or ``h0 = X``
``dtype``          ``"float64"`` or ``"float32"``
``engine``         the engine the net used
``W1`` ... ``WL``  the weights, ``W_l`` of shape ``(d_{l-1}, d_l)``
``b1`` ... ``bL``  the biases
``loss_history``   the recorded training losses (float64)
``meta.<key>``     optional user metadata (numbers, strings, numeric or string arrays)
=================  ===========================================================

:func:`load` reads the file with ``allow_pickle=False`` and checks every entry
against the architecture before it builds the network, so an empty, truncated
or foreign file raises ``ValueError`` and never returns a half-loaded model.
The round trip is exact: arrays are stored bit for bit.
"""

from __future__ import annotations

import os

import numpy as np

#: Written into every file; :func:`load` refuses files of a newer version.
FORMAT_VERSION = 1
FORMAT_NAME = "nbmlp.MLP"
_META = "meta."


def _check_path(path, name="path"):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {path!r}")
    return os.fspath(path)


def _metadata_arrays(metadata) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of name -> value, got {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metadata keys must be non-empty strings, got {key!r}")
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufU":
            raise TypeError(f"metadata[{key!r}] must be a number, a string or an array of them "
                            f"(no objects, which would need pickle), got dtype {arr.dtype}")
        out[_META + key] = arr
    return out


def save(net, path, *, metadata=None) -> None:
    """Write ``net`` (an :class:`nbmlp.MLP`) to ``path`` as an ``.npz`` file (the name is used as given).

    ``metadata`` is an optional dict of extra values stored next to the network
    (e.g. the feature scaling and class names the CLI keeps); read it back with
    ``load(path, return_metadata=True)``.
    """
    from .network import MLP

    if not isinstance(net, MLP):
        raise TypeError(f"net must be an nbmlp.MLP, got {type(net).__name__}")
    path = _check_path(path)
    arrays = {
        "nbmlp_format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "sizes": np.array(net.sizes, dtype=np.int64),
        "activations": np.array(net.activations),
        "loss": np.array(net.loss_name),
        "input_sigmoid": np.array(net.input_sigmoid),
        "dtype": np.array(net.dtype.name),
        "engine": np.array(net.engine),
        "loss_history": np.array(net.loss_history, dtype=np.float64),
    }
    for l, (W, b) in enumerate(zip(net.W, net.b, strict=True), start=1):
        arrays[f"W{l}"] = np.ascontiguousarray(W)
        arrays[f"b{l}"] = np.ascontiguousarray(b)
    arrays.update(_metadata_arrays(metadata))
    with open(path, "wb") as f:  # an open file: np.savez would otherwise append ".npz" to the name
        np.savez(f, **arrays)


def _bad(path, why):
    return ValueError(f"{path!r} is not a valid nbmlp model file: {why}")


def _scalar(data, key, kind, path):
    if key not in data:
        raise _bad(path, f"the entry {key!r} is missing")
    arr = data[key]
    if arr.ndim != 0 or arr.dtype.kind not in kind:
        raise _bad(path, f"the entry {key!r} has the wrong type ({arr.dtype}, shape {arr.shape})")
    return arr.item()


def _read_npz(path) -> dict:
    """Every array of the archive at ``path``; ValueError for anything that is not a readable .npz."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # empty (EOFError), foreign (ValueError: pickled), not a zip (BadZipFile), ...
        raise _bad(path, f"not an .npz archive ({type(exc).__name__}: {exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _bad(path, "it is a single .npy array, not an .npz archive")
    try:
        with npz:
            return {key: npz[key] for key in npz.files}
    except Exception as exc:  # a truncated or damaged member: BadZipFile, EOFError, zlib.error, ValueError
        raise _bad(path, f"the archive is truncated or damaged ({type(exc).__name__}: {exc})") from exc


def load(path, *, engine: str | None = None, return_metadata: bool = False):
    """Read a network written by :func:`save` (or ``net.save``); returns the :class:`nbmlp.MLP`.

    ``engine`` overrides the saved engine (the saved one is used if registered,
    otherwise ``"loops"``).  With ``return_metadata=True`` returns
    ``(net, metadata)``.  Raises ``ValueError`` for any file that is not a
    complete nbmlp model, ``FileNotFoundError`` if there is no file.
    """
    from .engines import engine_names
    from .network import MLP

    path = _check_path(path)
    data = _read_npz(path)
    if data.get("nbmlp_format") is None or data["nbmlp_format"].dtype.kind != "U" \
            or data["nbmlp_format"].ndim != 0 or data["nbmlp_format"].item() != FORMAT_NAME:
        raise _bad(path, f"no {FORMAT_NAME!r} format marker (the file was not written by nbmlp.save)")
    version = _scalar(data, "format_version", "iu", path)
    if version > FORMAT_VERSION or version < 1:
        raise _bad(path, f"format version {version}; this nbmlp reads versions 1..{FORMAT_VERSION}")
    sizes = data.get("sizes")
    if sizes is None or sizes.ndim != 1 or sizes.dtype.kind not in "iu" or sizes.size < 2 or (sizes < 1).any():
        raise _bad(path, "'sizes' must list at least two positive layer widths")
    sizes = tuple(int(d) for d in sizes)
    L = len(sizes) - 1
    activations = data.get("activations")
    if activations is None or activations.dtype.kind != "U" or activations.shape != (L,):
        raise _bad(path, f"'activations' must hold {L} names")
    loss = _scalar(data, "loss", "U", path)
    input_sigmoid = _scalar(data, "input_sigmoid", "b", path)
    dtype = _scalar(data, "dtype", "U", path)
    saved_engine = _scalar(data, "engine", "U", path)
    if engine is None:
        engine = saved_engine if saved_engine in engine_names() else "loops"
    history = data.get("loss_history")
    if history is None or history.ndim != 1 or history.dtype != np.float64:
        raise _bad(path, "'loss_history' must be a 1-D float64 array")

    try:
        net = MLP(sizes, dtype=dtype, engine=engine, input_sigmoid=input_sigmoid,
                  activation=[str(a) for a in activations], loss=loss)
    except (TypeError, ValueError) as exc:
        raise _bad(path, f"its architecture is not valid: {exc}") from exc
    W, b = [], []
    for l in range(1, L + 1):
        for name, shape, out in ((f"W{l}", (sizes[l - 1], sizes[l]), W), (f"b{l}", (sizes[l],), b)):
            arr = data.get(name)
            if arr is None:
                raise _bad(path, f"the parameter {name} is missing")
            if arr.shape != shape or arr.dtype != net.dtype:
                raise _bad(path, f"{name} has shape {arr.shape} and dtype {arr.dtype}; "
                                 f"the architecture needs shape {shape} and dtype {net.dtype}")
            if not np.isfinite(arr).all():
                raise _bad(path, f"{name} contains NaN or infinite values")
            out.append(np.ascontiguousarray(arr).copy())
    expected = {"nbmlp_format", "format_version", "sizes", "activations", "loss", "input_sigmoid", "dtype",
                "engine", "loss_history"} | {f"W{l}" for l in range(1, L + 1)} | {f"b{l}" for l in range(1, L + 1)}
    unknown = [k for k in data if k not in expected and not k.startswith(_META)]
    if unknown:
        raise _bad(path, f"unexpected entries {unknown} (a different architecture or format?)")
    net.W, net.b = W, b
    net.loss_history = history.tolist()
    if not return_metadata:
        return net
    metadata = {}
    for key, arr in data.items():
        if key.startswith(_META):
            metadata[key[len(_META):]] = arr.item() if arr.ndim == 0 else arr
    return net, metadata
