"""Model files: a network's state dict ⇄ an ``.npz`` archive, written atomically and checked before use.

This module knows the file format and nothing of :class:`nbmlp.MLP` (no import of
:mod:`nbmlp.network`): :meth:`MLP.save` hands it ``net.to_state()`` and
:func:`nbmlp.load` builds the network from the checked dict :func:`load_state` returns.

A file holds, as separate plain NumPy arrays (``allow_pickle=False`` reads every one):

=============================  =================================================================
``nbmlp_format``               the string ``"nbmlp.MLP"`` (what the file is)
``format_version``             an integer, :data:`FORMAT_VERSION` (files of version 1 still load)
``sizes``                      ``(d0, d1, ..., dL)``
``activations``                the L activation names, as a unicode array
``loss``                       the loss name
``input_sigmoid``              whether ``h0 = sigma(X)`` (the note) or ``h0 = X``
``dtype``                      ``"float64"`` or ``"float32"``
``engine``                     the engine the net used
``W1`` ... ``WL``              the weights, ``W_l`` of shape ``(d_{l-1}, d_l)``
``b1`` ... ``bL``              the biases, ``b_l`` of shape ``(d_l,)``
``loss_history``               the recorded training losses (float64)
``validation_loss_history``    version 2: per-epoch validation losses (float64)
``validation_score_history``   version 2: per-epoch validation scores (float64)
``optimizer_state``            version 2: True when the net carries optimizer state
``optimizer_state.<key>``      version 2: one entry per key of ``net.optimizer_state`` (arrays or
                               scalars; a key whose last dotted part names a parameter, as in
                               ``"adam.m.W1"``, must have that parameter's shape)
``preprocessing.mean/scale``   version 2, optional: the input scaling ``net.preprocessing``, (d0,)
``classes``                    version 2, optional: the class labels ``net.classes`` (1-D)
``meta.<key>``                 optional user metadata (numbers, strings, numeric or string arrays)
=============================  =================================================================

Writing is atomic: the archive goes to a temporary file in the target's directory,
is flushed and fsynced, then renamed over the target, so a save that fails or is
killed leaves the previous file as it was (a killed save may leave its
``.<name>.*.tmp`` file behind; a failed one removes it).

Reading trusts nothing.  Members must be stored uncompressed (as :func:`save_state`
writes them), lie inside the file without overlapping, and hold exactly the bytes
their NumPy header declares, so nothing read can be larger than the file itself.
The architecture is checked against the memory cap of
:func:`nbmlp.validation.check_parameter_budget` and every parameter's stored shape
and dtype against the architecture *before* any parameter data is read.  Every
problem with the content is a ``ValueError`` naming the file.  The round trip is
bit-exact.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tempfile
import zipfile

import numpy as np

from .validation import DTYPES, check_output_path, check_parameter_budget, check_path, parameter_count

#: Written into every file; :func:`load_state` reads versions 1..FORMAT_VERSION.
FORMAT_VERSION = 2
FORMAT_NAME = "nbmlp.MLP"
META = "meta."
OPTIMIZER = "optimizer_state"
PREPROCESSING = "preprocessing."
HISTORIES = ("loss_history", "validation_loss_history", "validation_score_history")
#: The dtype kinds a stored array may have: bool, integers, floats, unicode strings (never objects).
STORABLE_KINDS = "biufU"
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
#: Member names: a prefix ("optimizer_state.", "meta.") and a key.
_MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,255}")


# -- writing ---------------------------------------------------------------------------------------


def _storable(value, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise TypeError(f"{what} must be a number, a string or an array of them: {exc}") from exc
    if arr.dtype.kind not in STORABLE_KINDS:
        raise TypeError(f"{what} must be a number, a string or an array of them "
                        f"(no objects, which would need pickle), got dtype {arr.dtype}")
    return arr


def _check_key(key, what: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise TypeError(f"{what} keys must be strings of letters, digits, '_', '.', '-' "
                        f"(at most 128 characters), got {key!r}")
    return key


def _optimizer_entry(key: str, arr: np.ndarray, shapes: dict, limit: int, bad) -> None:
    """The shared save/load check of one optimizer-state value (``bad(message)`` builds the error)."""
    if arr.dtype.kind not in STORABLE_KINDS:
        raise bad(f"optimizer_state[{key!r}] has dtype {arr.dtype}; numbers and strings only")
    if arr.size > limit:
        raise bad(f"optimizer_state[{key!r}] holds {arr.size} values, more than the net's {limit} parameters")
    param = key.rsplit(".", 1)[-1]
    if param in shapes and (arr.shape not in (shapes[param], (math.prod(shapes[param]),)) or arr.dtype.kind != "f"):
        raise bad(f"optimizer_state[{key!r}] has shape {arr.shape} and dtype {arr.dtype}; as the state of "
                  f"parameter {param} it needs shape {shapes[param]} (or flat, ({math.prod(shapes[param])},)) "
                  f"and a floating dtype")


def _parameter_shapes(sizes) -> dict:
    shapes = {}
    for l in range(1, len(sizes)):
        shapes[f"W{l}"] = (sizes[l - 1], sizes[l])
        shapes[f"b{l}"] = (sizes[l],)
    return shapes


def state_arrays(state: dict, metadata=None) -> dict:
    """The arrays of the file for a state dict (see :meth:`nbmlp.MLP.to_state`); checks what it stores."""
    sizes = tuple(state["sizes"])
    arrays = {
        "nbmlp_format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "sizes": np.array(sizes, dtype=np.int64),
        "activations": np.array(list(state["activations"]), dtype=str),
        "loss": np.array(state["loss"]),
        "input_sigmoid": np.array(bool(state["input_sigmoid"])),
        "dtype": np.array(state["dtype"]),
        "engine": np.array(state["engine"]),
    }
    for name in HISTORIES:
        history = state.get(name)
        arrays[name] = np.array([] if history is None else history, dtype=np.float64).reshape(-1)
    for l, (W, b) in enumerate(zip(state["W"], state["b"], strict=True), start=1):
        arrays[f"W{l}"] = np.ascontiguousarray(W)
        arrays[f"b{l}"] = np.ascontiguousarray(b)
    shapes = _parameter_shapes(sizes)
    optimizer_state = state.get("optimizer_state")
    arrays[OPTIMIZER] = np.array(optimizer_state is not None)
    if optimizer_state is not None:
        if not isinstance(optimizer_state, dict):
            raise TypeError(f"net.optimizer_state must be None or a dict, got {type(optimizer_state).__name__}")
        for key, value in optimizer_state.items():
            _check_key(key, "net.optimizer_state")
            arr = _storable(value, f"net.optimizer_state[{key!r}]")
            _optimizer_entry(key, arr, shapes, parameter_count(sizes), TypeError)
            arrays[f"{OPTIMIZER}.{key}"] = arr
    preprocessing = state.get("preprocessing")
    if preprocessing is not None:
        if not isinstance(preprocessing, dict) or set(preprocessing) != {"mean", "scale"}:
            raise TypeError("net.preprocessing must be None or a dict with exactly the keys 'mean' and 'scale'")
        for key in ("mean", "scale"):
            arr = np.asarray(preprocessing[key])
            if arr.dtype.kind != "f" or arr.shape != (sizes[0],):
                raise ValueError(f"net.preprocessing[{key!r}] must be a float array of shape ({sizes[0]},), "
                                 f"got dtype {arr.dtype} and shape {arr.shape}")
            arrays[PREPROCESSING + key] = arr
    classes = state.get("classes")
    if classes is not None:
        arr = _storable(classes, "net.classes")
        if arr.ndim != 1:
            raise ValueError(f"net.classes must be a 1-D array, got shape {arr.shape}")
        arrays["classes"] = arr
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict of name -> value, got {type(metadata).__name__}")
        for key, value in metadata.items():
            _check_key(key, "metadata")
            arrays[META + key] = _storable(value, f"metadata[{key!r}]")
    return arrays


def write_npz(path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` (the name is used as given) atomically: temp file, fsync, rename.

    A missing directory is an error before anything is written; on any failure
    (including KeyboardInterrupt) the temporary file is removed and an existing
    file at ``path`` is untouched.
    """
    path = os.path.realpath(check_output_path(path))  # through a symlink to the file it names
    directory = os.path.dirname(path)
    if os.path.exists(path):
        mode = os.stat(path).st_mode & 0o7777
    else:  # what open() would create: 0666 less the umask (which can only be read by setting it)
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600
                os.fchmod(f.fileno(), mode)
            np.savez(f, **arrays)  # an open file: np.savez would otherwise append ".npz" to the name
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; directories cannot be opened on every OS (Windows)
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_state(state: dict, path, *, metadata=None) -> None:
    """Write a network's state dict to ``path`` (see the module docstring for the format)."""
    write_npz(path, state_arrays(state, metadata))


# -- reading ---------------------------------------------------------------------------------------


class ModelFileError(ValueError):
    """A file that is not a complete, consistent nbmlp model; the message names the file."""


class _Archive:
    """The members of an .npz file, checked so that reading any of them allocates at most the file's size."""

    def __init__(self, path: str):
        self.path = path
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or never end
            raise self.bad("it is not a regular file")
        try:
            self.zip = zipfile.ZipFile(path)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as exc:  # empty, text, a single .npy, truncated: BadZipFile, OSError, ...
            raise self.bad(f"not an .npz archive ({type(exc).__name__}: {exc})") from exc
        try:
            self.members = self._check_members(os.fstat(self.zip.fp.fileno()).st_size)
        except BaseException:
            self.zip.close()
            raise

    def bad(self, why: str) -> ModelFileError:
        return ModelFileError(f"{self.path!r} is not a valid nbmlp model file: {why}")

    def _check_members(self, file_size: int) -> dict:
        members = {}
        spans = []
        for info in self.zip.infolist():
            name = info.filename
            if not name.endswith(".npy") or not _MEMBER.fullmatch(name[:-4]):
                raise self.bad(f"unexpected member {name!r} (an nbmlp file holds only .npy arrays)")
            if name[:-4] in members:
                raise self.bad(f"the member {name!r} appears twice")
            if info.flag_bits & 0x1:
                raise self.bad(f"the member {name!r} is encrypted")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise self.bad(f"the member {name!r} is compressed (nbmlp files store arrays uncompressed, so that "
                               f"nothing read can be larger than the file)")
            start = info.header_offset + 30 + len(info.filename.encode())
            if start + info.file_size > file_size:
                raise self.bad(f"the member {name!r} declares {info.file_size} bytes past the end of the "
                               f"{file_size}-byte file (truncated?)")
            members[name[:-4]] = info
            spans.append((info.header_offset, start + info.file_size, name))
        spans.sort()
        for (_, end, name), (next_start, _, next_name) in zip(spans, spans[1:]):
            if end > next_start:
                raise self.bad(f"the members {name!r} and {next_name!r} overlap")
        return members

    def close(self):
        self.zip.close()

    def header(self, key: str):
        """(shape, fortran_order, dtype, open member positioned at its data), all checked against the member size."""
        info = self.members.get(key)
        if info is None:
            raise self.bad(f"the entry {key!r} is missing")
        fp = self.zip.open(info)
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise self.bad(f"the entry {key!r} has .npy format version {version}")
            if dtype.hasobject or dtype.kind not in STORABLE_KINDS or dtype.itemsize == 0:
                raise self.bad(f"the entry {key!r} has dtype {dtype}; numbers and strings only")
            nbytes = math.prod(shape) * dtype.itemsize
            if fp.tell() + nbytes != info.file_size or any(d > info.file_size for d in shape):
                raise self.bad(f"the entry {key!r} declares shape {shape} of {dtype} ({nbytes} bytes) "
                               f"but holds {info.file_size - fp.tell()} bytes")
        except BaseException:
            fp.close()
            raise
        return shape, fortran, dtype, fp

    def read(self, key: str, *, shape=None, dtype=None, kinds=STORABLE_KINDS, ndim=None) -> np.ndarray:
        """The array ``key``, after checking its header against what the caller expects."""
        stored_shape, fortran, stored_dtype, fp = self.header(key)
        with fp:
            if shape is not None and stored_shape != tuple(shape):
                raise self.bad(f"{key} has shape {stored_shape}; the architecture needs shape {tuple(shape)}")
            if dtype is not None and stored_dtype != dtype:
                raise self.bad(f"{key} has shape {stored_shape} and dtype {stored_dtype}; "
                               f"the architecture needs shape {shape} and dtype {dtype}")
            if stored_dtype.kind not in kinds or (ndim is not None and len(stored_shape) != ndim):
                raise self.bad(f"the entry {key!r} has the wrong type ({stored_dtype}, shape {stored_shape})")
            arr = np.empty(stored_shape[::-1] if fortran else stored_shape, dtype=stored_dtype)
            view = memoryview(arr.reshape(-1).view(np.uint8))
            done = 0
            while done < view.nbytes:
                got = fp.readinto(view[done:])
                if not got:
                    raise self.bad(f"the entry {key!r} is truncated")
                done += got
            if fp.read(1):  # also makes zipfile compare the CRC-32 of everything read
                raise self.bad(f"the entry {key!r} holds more bytes than its header declares")
        return np.ascontiguousarray(arr.T) if fortran else arr

    def scalar(self, key: str, kinds: str):
        return self.read(key, kinds=kinds, ndim=0).item()


def load_state(path) -> dict:
    """Read and check the file at ``path``; returns the state dict :meth:`nbmlp.MLP.from_state` takes.

    The dict has the keys of :meth:`nbmlp.MLP.to_state` plus ``"metadata"`` (user
    metadata) and ``"format_version"``.  Raises ``ValueError`` (:class:`ModelFileError`)
    naming the file for anything that is not a complete, consistent nbmlp model,
    ``FileNotFoundError`` if there is no file.
    """
    path = check_path(path)
    archive = _Archive(path)
    try:
        return _read_state(archive)
    except ModelFileError:
        raise
    except Exception as exc:  # damaged bytes anywhere: BadZipFile (CRC), EOFError, zlib.error, header syntax, ...
        raise archive.bad(f"the archive is truncated or damaged ({type(exc).__name__}: {exc})") from exc
    finally:
        archive.close()


def _read_state(archive: _Archive) -> dict:
    bad = archive.bad
    try:
        marker = archive.scalar("nbmlp_format", "U")
    except ModelFileError:
        marker = None
    if marker != FORMAT_NAME:
        raise bad(f"no {FORMAT_NAME!r} format marker (the file was not written by nbmlp.save)")
    version = archive.scalar("format_version", "iu")
    if not 1 <= version <= FORMAT_VERSION:
        raise bad(f"format version {version}; this nbmlp reads versions 1..{FORMAT_VERSION}")
    sizes = archive.read("sizes", kinds="iu", ndim=1)
    if sizes.size < 2 or (sizes < 1).any():
        raise bad("'sizes' must list at least two positive layer widths")
    sizes = tuple(int(d) for d in sizes)
    L = len(sizes) - 1
    for l in range(1, L + 1):  # before anything is sized from the architecture
        for name in (f"W{l}", f"b{l}"):
            if name not in archive.members:
                raise bad(f"the parameter {name} is missing")
    dtype = archive.scalar("dtype", "U")
    if dtype not in DTYPES:
        raise bad(f"'dtype' must be one of {DTYPES}, got {dtype!r}")
    dtype = np.dtype(dtype)
    try:
        check_parameter_budget(sizes, dtype)
    except ValueError as exc:
        raise bad(str(exc)) from exc
    activations = archive.read("activations", kinds="U", ndim=1)
    if activations.shape != (L,):
        raise bad(f"'activations' must hold {L} names")
    state = {
        "format_version": version,
        "sizes": sizes,
        "activations": tuple(str(a) for a in activations),
        "loss": archive.scalar("loss", "U"),
        "input_sigmoid": archive.scalar("input_sigmoid", "b"),
        "dtype": dtype.name,
        "engine": archive.scalar("engine", "U"),
    }
    shapes = _parameter_shapes(sizes)
    for name, shape in shapes.items():  # every header before any parameter's data
        stored_shape, _, stored_dtype, fp = archive.header(name)
        fp.close()
        if stored_shape != shape or stored_dtype != dtype:
            raise bad(f"{name} has shape {stored_shape} and dtype {stored_dtype}; "
                      f"the architecture needs shape {shape} and dtype {dtype}")
    expected = {"nbmlp_format", "format_version", "sizes", "activations", "loss", "input_sigmoid", "dtype",
                "engine", "loss_history", *shapes}
    for kind in ("W", "b"):
        state[kind] = []
        for l in range(1, L + 1):
            arr = archive.read(f"{kind}{l}", shape=shapes[f"{kind}{l}"], dtype=dtype)
            if not np.isfinite(arr).all():
                raise bad(f"{kind}{l} contains NaN or infinite values")
            state[kind].append(arr)
    for name in HISTORIES[: 1 if version == 1 else None]:
        state[name] = archive.read(name, dtype=np.dtype(np.float64), kinds="f", ndim=1).tolist()
        expected.add(name)
    state["optimizer_state"] = state["preprocessing"] = state["classes"] = None
    if version >= 2:
        expected.add(OPTIMIZER)
        if archive.scalar(OPTIMIZER, "b"):
            state["optimizer_state"] = {}
            limit = parameter_count(sizes)
            for key in archive.members:
                if key.startswith(OPTIMIZER + "."):
                    arr = archive.read(key)
                    _optimizer_entry(key[len(OPTIMIZER) + 1:], arr, shapes, limit, bad)
                    state["optimizer_state"][key[len(OPTIMIZER) + 1:]] = arr.item() if arr.ndim == 0 else arr
                    expected.add(key)
        keys = {PREPROCESSING + "mean", PREPROCESSING + "scale"}
        present = keys & archive.members.keys()
        if present:
            if present != keys:
                raise bad("'preprocessing' needs both 'preprocessing.mean' and 'preprocessing.scale'")
            state["preprocessing"] = {}
            for key in sorted(keys):
                arr = archive.read(key, shape=(sizes[0],), kinds="f")
                if not np.isfinite(arr).all() or (key.endswith("scale") and (arr == 0).any()):
                    raise bad(f"{key} must be finite (and the scale non-zero)")
                state["preprocessing"][key[len(PREPROCESSING):]] = arr
            expected |= keys
        if "classes" in archive.members:
            arr = archive.read("classes", ndim=1)
            if not 1 <= arr.size <= max(sizes[-1], 2):
                raise bad(f"'classes' holds {arr.size} labels for {sizes[-1]} outputs")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise bad("'classes' contains NaN or infinite labels")
            state["classes"] = arr
            expected.add("classes")
    unknown = [k for k in archive.members if k not in expected and not k.startswith(META)]
    if unknown:
        raise bad(f"unexpected entries {unknown} (a different architecture or format?)")
    state["metadata"] = {}
    for key in archive.members:
        if key.startswith(META):
            arr = archive.read(key)
            state["metadata"][key[len(META):]] = arr.item() if arr.ndim == 0 else arr
    return state
