r"""Beyond one machine: the note's batch sums split across a Dask cluster.

Every gradient of the note is a sum over the samples i, e.g.
dL/dw_jk = Σ_i dL/dz_ik · h_ij, so a batch split into row chunks splits exactly:
each chunk's rows are summed by the loop kernels on the worker that holds the
chunk, and the partial sums add up.  This module does that on ``dask.array``
(data) and ``distributed`` (scheduling, fault tolerance) -- the PyData standard,
nothing home-made.  Install with ``pip install "nbmlp[dask]"``; nbmlp imports
without it, and dask is only imported once a dask array is handed in.

What crosses the network per step: the parameters (one task in the graph,
fetched once by each worker), the batch's row indices for mini-batches, and
one partial (loss, dL/dW_l, dL/db_l) per chunk, added pairwise on the workers.
Only the final sum comes back to the client; the rows never do.  For a fit,
each chunk's rows and targets are persisted together as one pair, and each
chunk's task is placed on the worker holding the pair (a loose restriction:
another worker runs it only when that one is gone, after recomputing the
pair).  Dask's work stealing may still move a pair to an idle worker; a
scheduler started with ``distributed.scheduler.work-stealing: False`` never
does.

Determinism.  Chunk c's partial is computed by ``net.gradients`` on chunk c's
rows (the same kernels as in memory); partials are added in a fixed pairwise
tree over the chunk indices, ((p0 + p1) + (p2 + p3)) + ..., as
``dask.array.reduction(split_every=2)`` would.  Nothing depends on which worker
ran what, so 1, 2 or 4 workers give bit-identical results for the same chunks.

Scaling.  ``net.gradients`` on a chunk of n_c rows returns that chunk's loss:
for a sum loss (``half_sse``) the partial is already Σ over the chunk; for a
mean over samples (``mse`` = 1/(n d) Σ_i Σ_k, ``cross_entropy`` = 1/n Σ_i) the
chunk's value is multiplied by n_c, the partials are added, and the total is
divided by n once -- the 1/d of ``mse`` is inside every sample's term and needs
nothing.  Partials are added in float64 and rounded once to the net's dtype.

Entry points (the network and the estimators delegate here when handed a dask
array): :func:`forward`, :func:`loss`, :func:`gradient_sums`, :func:`fit`,
:func:`run_trainer`; for estimators :func:`classifier_targets`,
:func:`regressor_targets`, :func:`predict_blocks`, :func:`accuracy`, :func:`r2`;
and :func:`connect` for a scheduler address or a local cluster.
"""

from __future__ import annotations

import copy
import math
import pickle
import socket
import sys
from dataclasses import dataclass

import numpy as np

from .compiled import ADAPTIVE_FACTOR, ADAPTIVE_MIN_LR, SUM_LOSSES
from .optim import update_kernels
from .training import Trainer
from .validation import check_positive_int

#: Seconds :func:`connect` waits for a scheduler before giving up.
CONNECT_TIMEOUT = 10.0


def is_dask_collection(a) -> bool:
    """True when ``a`` is a ``dask.array.Array`` (without importing dask when nobody has)."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(a, dask_array.Array)


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - the extra is installed wherever dask arrays exist
        raise ImportError('dask arrays need the dask extra: pip install "nbmlp[dask]"') from exc
    return dask, da


# ---------------------------------------------------------------------------
# Inputs: dask arrays chunked along rows
# ---------------------------------------------------------------------------


def _as_row_chunked(a, name: str, width: int | None, like=None):
    """``a`` as a 2-D dask array with one column block; an in-memory array gets ``like``'s row chunks."""
    _, da = _dask()
    if not is_dask_collection(a):
        arr = np.asarray(a)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (rows, columns), got shape {arr.shape}")
        a = da.from_array(arr, chunks=(like.chunks[0] if like is not None else "auto", -1))
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D dask array chunked along rows, got {a.ndim}-D shape {a.shape}")
    if any(math.isnan(c) for c in a.chunks[0]) or any(math.isnan(c) for c in a.chunks[1]):
        raise ValueError(f"{name} has unknown chunk sizes: call {name}.compute_chunk_sizes() first")
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers (integer or floating), got dtype {a.dtype}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {a.shape}")
    if width is not None and a.shape[1] != width:
        raise ValueError(f"{name} must have {width} columns, got shape {a.shape}")
    if len(a.chunks[1]) > 1:
        a = a.rechunk({1: -1})
    return a


def align(X, T, d_in: int, d_out: int):
    """X (n x d_in) and T (n x d_out) as dask arrays with the same row chunks (T is rechunked to X's)."""
    if not is_dask_collection(X):
        T = _as_row_chunked(T, "T", d_out)
        X = _as_row_chunked(X, "X", d_in, like=T)
    else:
        X = _as_row_chunked(X, "X", d_in)
        T = _as_row_chunked(T, "T", d_out, like=X)
    if T.shape[0] != X.shape[0]:
        raise ValueError(f"X and T must have the same number of rows, got {X.shape[0]} and {T.shape[0]}")
    if T.chunks[0] != X.chunks[0]:
        T = T.rechunk({0: X.chunks[0]})
    return X, T


# ---------------------------------------------------------------------------
# The per-chunk task and the fixed reduction tree
# ---------------------------------------------------------------------------


@dataclass
class Parameters:
    """The parameters broadcast to the workers for one step (one object, one task)."""

    W: list
    b: list


def _template(net):
    """A copy of ``net`` without parameters or histories: what a worker needs to rebuild it."""
    skeleton = copy.copy(net)
    for name in vars(net):
        if name.endswith("_history"):
            setattr(skeleton, name, [])
    if hasattr(skeleton, "optimizer_state"):
        skeleton.optimizer_state = None
    skeleton.W, skeleton.b = [], []
    return skeleton


def pack(obj):
    """``obj`` as a delayed pickle (protocol 4), unpacked by each task with :func:`unpack`.

    Dask's own transport hands numpy arrays over as views of its message buffers, read-only and
    not always aligned, which ``check_parameters`` rightly refuses; a protocol-4 pickle unpacks
    into arrays that own aligned, writable memory.  Packing also freezes ``obj``: later changes on
    the client do not reach a lazy result.
    """
    dask, _ = _dask()
    return dask.delayed(pickle.dumps(obj, protocol=4), traverse=False)


def unpack(blob):
    return pickle.loads(blob)


def _rebuild(template_blob, params_blob):
    net = unpack(template_blob)
    params = unpack(params_blob)
    net.W, net.b = params.W, params.b
    return net


def row_pair(x, t):
    """One chunk's rows and targets, as one object."""
    return x, t


def chunk_partial(template, params, block, rows, mean: bool):
    """On a worker: (loss, dW..., db...) summed over the rows of one chunk (``rows`` of it, if given), in float64."""
    x, t = block
    if rows is not None:
        x, t = x[rows], t[rows]
    g = _rebuild(template, params).gradients(x, t)
    scale = float(x.shape[0]) if mean else 1.0
    parts = [np.float64(g.loss)] + [np.asarray(a, dtype=np.float64) for a in g.W + g.b]
    if mean:
        parts = [p * scale for p in parts]
    return parts


def add_partials(a, b):
    """Element-wise sum of two partials (a new list)."""
    return [p + q for p, q in zip(a, b, strict=True)]


def tree_sum(parts, add):
    """Pairwise sum in a fixed order over the positions: ((p0 + p1) + (p2 + p3)) + ...; ``add`` builds one node."""
    level = list(parts)
    while len(level) > 1:
        pairs = [add(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            pairs.append(level[-1])
        level = pairs
    return level[0]


def _current_client():
    """The default ``distributed.Client``, or None (no distributed, or none started)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _holders(blocks):
    """For each persisted block, the workers that hold it (None without a distributed client)."""
    client = _current_client()
    if client is None or not all(hasattr(b, "key") for b in blocks):
        return [None] * len(blocks)
    from distributed import wait

    wait(blocks)
    who = client.who_has(blocks)
    return [list(who.get(b.key, ())) or None for b in blocks]


def _near(holder, task, *args):
    """``task(*args)`` placed on the worker that holds the chunk; elsewhere only if that worker is gone."""
    dask, _ = _dask()
    if holder is None:
        return task(*args)
    with dask.annotate(workers=holder, allow_other_workers=True):
        return task(*args)


class ChunkedBatch:
    """A (X, T) pair of row-chunked dask arrays and the per-chunk tasks of a network's sums over it."""

    def __init__(self, net, X, T, *, persist=False):
        dask, _ = _dask()
        X, T = align(X, T, net.sizes[0], net.sizes[-1])
        self.n = int(X.shape[0])
        self.bounds = np.concatenate(([0], np.cumsum(X.chunks[0]))).astype(np.int64)
        # One (x, t) pair per chunk, so that a chunk's rows and targets live on one worker.
        pair = dask.delayed(row_pair, pure=True)
        self.blocks = [pair(x, t) for x, t in zip(X.to_delayed().ravel(), T.to_delayed().ravel(), strict=True)]
        self.holders = [None] * len(self.blocks)
        if persist:  # kept on the workers (recomputed there if one dies) until this object goes
            self.blocks = list(dask.persist(*self.blocks))
            self.holders = _holders(self.blocks)
        self.mean = net.loss_name not in SUM_LOSSES
        self.template = pack(_template(net))

    def graph(self, params, rows=None):
        """The delayed total of (loss, dW..., db...) over all rows, or over ``rows`` (global indices) if given."""
        dask, _ = _dask()
        params = pack(params)
        task = dask.delayed(chunk_partial, pure=True)
        if rows is None:
            parts = [_near(holder, task, self.template, params, block, None, self.mean)
                     for block, holder in zip(self.blocks, self.holders, strict=True)]
        else:
            chunk_of = np.searchsorted(self.bounds, rows, side="right") - 1
            order = np.argsort(chunk_of, kind="stable")
            chunks, starts = np.unique(chunk_of[order], return_index=True)
            groups = np.split(rows[order], starts[1:])
            parts = [_near(self.holders[c], task, self.template, params, self.blocks[c], local - self.bounds[c],
                           self.mean) for c, local in zip(chunks.tolist(), groups, strict=True)]
        return tree_sum(parts, dask.delayed(add_partials, pure=True))

    def sums(self, net, rows=None):
        """(loss, [dL/dW_l], [dL/db_l]) of ``net`` over the rows, computed on the cluster, in the net's dtype."""
        dask, _ = _dask()
        params = Parameters([np.array(w) for w in net.W], [np.array(b) for b in net.b])
        (total,) = dask.compute(self.graph(params, rows))
        count = self.n if rows is None else len(rows)
        if self.mean:
            total = [p / count for p in total]
        L = len(net.W)
        grads = [np.ascontiguousarray(g, dtype=net.dtype) for g in total[1:]]
        return float(total[0]), grads[:L], grads[L:]


# ---------------------------------------------------------------------------
# The network's entry points
# ---------------------------------------------------------------------------


def forward(net, X):
    """``net.forward`` on every row chunk of X, lazily: a dask array (n x dL) chunked like X."""
    X = _as_row_chunked(X, "X", net.sizes[0])
    return X.map_blocks(_forward_block_of, pack(_template_with_parameters(net)), dtype=net.dtype,
                        chunks=(X.chunks[0], (net.sizes[-1],)), meta=np.empty((0, 0), dtype=net.dtype))


def _template_with_parameters(net):
    skeleton = _template(net)
    skeleton.W = [np.array(w) for w in net.W]
    skeleton.b = [np.array(b) for b in net.b]
    return skeleton


def _forward_block_of(x, net_blob):
    return unpack(net_blob).forward(x)


def loss(net, X, T) -> float:
    """The loss of (X, T), summed on the workers and scaled as the in-memory ``net.loss``."""
    return ChunkedBatch(net, X, T).sums(net)[0]


def gradient_sums(net, X, T) -> dict:
    """The fields of :class:`nbmlp.Gradients` for (X, T): W, b and loss.

    The per-row fields (z, h, dL_dz, dL_dh) are n-row arrays: they stay on the workers (None here).
    """
    value, dW, db = ChunkedBatch(net, X, T).sums(net)
    return {"W": dW, "b": db, "loss": value, "dL_dz": None, "dL_dh": None, "z": None, "h": None}


def refuse_sample_weight(sample_weight) -> None:
    """Per-sample weights are not implemented for dask arrays: a clear error instead of ignoring them."""
    if sample_weight is not None:
        raise ValueError("sample_weight is not available on dask arrays: train without it")


def fit(net, X, T, epochs, lr, *, callback=None, sample_weight=None, **options):
    """``net.fit`` on dask arrays: a :class:`nbmlp.Trainer` (same options, same checks) run by :func:`run_trainer`."""
    refuse_sample_weight(sample_weight)
    run_trainer(Trainer(net, lr=lr, callback=callback, **options), X, T, epochs)
    return net


def _lr_for_epoch(trainer, epoch: int) -> float:
    from .validation import check_positive_float

    if callable(trainer.lr_schedule):
        return check_positive_float(trainer.lr_schedule(epoch), f"lr_schedule({epoch})")
    if trainer.lr_schedule == "invscaling":
        return trainer.lr_init / epoch**trainer.power_t
    return trainer.lr


def run_trainer(trainer, X, T, epochs: int):
    """:meth:`nbmlp.Trainer.run` for row-chunked dask arrays: synchronous data-parallel steps.

    Each step draws its batch exactly as the in-memory trainer does (``trainer.rng.permutation(n)``
    per epoch, batches of ``batch_size`` rows; full batch when it is None), broadcasts the
    parameters, sums the partial gradients of the chunks on the cluster, and updates the
    parameters on the client with ``trainer.optimizer`` (its state stays on the client).
    X and T are persisted on the cluster for the run.  Validation and early stopping need an
    in-memory validation split and are refused.
    """
    net = trainer.net
    epochs = check_positive_int(epochs, "epochs")
    if trainer.early_stopping or trainer.validation_fraction > 0.0 or trainer.validation_data is not None:
        raise ValueError("validation and early stopping are not available on dask arrays: "
                         "train without them and score a held-out dask array afterwards")
    batch_data = ChunkedBatch(net, X, T, persist=True)
    trainer.load_state()  # continue from net.optimizer_state, as Trainer.run does
    try:
        _run_epochs(trainer, batch_data, epochs)
    finally:
        trainer.store_state()
    if trainer.stop_reason is None:
        trainer.stop_reason = "max_epochs"
    return trainer


def _run_epochs(trainer, batch_data, epochs):
    net = trainer.net
    n = batch_data.n
    decay = trainer.weight_decay
    ops = update_kernels(net.engine)
    trainer.converged = False
    trainer.stop_reason = None
    trainer.last_validation_data = None
    batch = n if trainer.batch_size is None else min(trainer.batch_size, n)
    no_improvement = 0
    last_finite = None
    for _ in range(epochs):
        epoch = trainer.epochs_run + 1
        lr = _lr_for_epoch(trainer, epoch)
        order = None if batch == n else (trainer.rng.permutation(n) if trainer.shuffle else np.arange(n))
        epoch_loss = 0.0
        for start in range(0, n, batch):
            rows = None if order is None else order[start:start + batch]
            count = n if rows is None else len(rows)
            data_loss, dW, db = batch_data.sums(net, rows)
            penalty = decay * sum(ops.l2_penalty(W.reshape(-1)) for W in net.W) if decay > 0.0 else 0.0
            params = net.W + net.b
            if not (np.isfinite(data_loss + penalty) and all(np.isfinite(g).all() for g in dW + db)):
                if last_finite is not None:
                    for param, saved in zip(params, last_finite, strict=True):
                        param[...] = saved
                raise FloatingPointError(
                    f"the loss or a gradient became non-finite at epoch {epoch} (loss={data_loss + penalty}; "
                    f"lr={lr} may be too large); the parameters of the last finite loss were restored")
            last_finite = [p.copy() for p in params]
            if decay > 0.0:
                for grad, W in zip(dW, net.W, strict=True):
                    ops.l2_gradient(grad.reshape(-1), W.reshape(-1), decay)
            trainer.optimizer.step(params, dW + db, lr)
            share = count / n
            epoch_loss += (share * data_loss if batch_data.mean else data_loss) + share * penalty
        trainer.epochs_run = epoch
        trainer.samples_seen += n
        trainer.loss_history.append(epoch_loss)
        net.loss_history.append(epoch_loss)
        if trainer.callback is not None:
            trainer.callback(epoch, epoch_loss)
        no_improvement = no_improvement + 1 if epoch_loss > trainer.best_loss - trainer.tol else 0
        trainer.best_loss = min(trainer.best_loss, epoch_loss)
        if trainer.n_iter_no_change is not None and no_improvement > trainer.n_iter_no_change:
            if trainer.lr_schedule == "adaptive" and trainer.lr / ADAPTIVE_FACTOR >= ADAPTIVE_MIN_LR:
                trainer.lr /= ADAPTIVE_FACTOR
                no_improvement = 0
                continue
            trainer.converged = True
            trainer.stop_reason = "converged"
            break


# ---------------------------------------------------------------------------
# Estimators: targets, block-wise prediction (like dask-ml's ParallelPostFit), scores
# ---------------------------------------------------------------------------


def _one_hot_block(y, classes, dtype):
    y = np.asarray(y).reshape(-1)
    index = np.clip(np.searchsorted(classes, y), 0, classes.size - 1)
    unknown = classes[index] != y
    if np.any(unknown):
        raise ValueError(f"y contains labels not in classes_: {np.unique(y[unknown]).tolist()}")
    T = np.zeros((y.size, classes.size), dtype=dtype)
    T[np.arange(y.size), index] = 1.0
    return T


def _labels(y, X):
    _, da = _dask()
    if not is_dask_collection(y):
        y = da.from_array(np.asarray(y), chunks=(X.chunks[0],) + ((-1,) if np.ndim(y) == 2 else ()))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y must have the same number of samples, got {X.shape[0]} and {y.shape[0]}")
    return y.rechunk({0: X.chunks[0]}) if y.chunks[0] != X.chunks[0] else y


def classifier_targets(est, X, y):
    """(X, T) for ``MLPClassifier.fit`` on dask arrays; sets ``est.classes_`` (the only thing computed here)."""
    dask, _ = _dask()
    X = _as_row_chunked(X, "X", None)
    y = _labels(y, X)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one class label per sample), got shape {y.shape}")
    classes = est.classes_ if (est.warm_start and hasattr(est, "classes_")) else np.unique(dask.compute(
        y.map_blocks(np.unique, chunks=(np.nan,), dtype=y.dtype))[0])
    if classes.size < 2:
        raise ValueError(f"y must contain at least 2 classes, got {classes.size}: {classes.tolist()}")
    T = y.map_blocks(_one_hot_block, classes, np.dtype(est.dtype), dtype=est.dtype, new_axis=1,
                     chunks=(X.chunks[0], (classes.size,)))
    est.classes_ = classes
    return X, T


def regressor_targets(X, y):
    """(X, T, y_was_1d) for ``MLPRegressor.fit`` on dask arrays."""
    X = _as_row_chunked(X, "X", None)
    y = _labels(y, X)
    if y.dtype.kind not in "iuf":
        raise TypeError(f"y must be numeric, got dtype {y.dtype}")
    one_d = y.ndim == 1
    T = y[:, None] if one_d else y
    return X, T, one_d


def predict_blocks(method, X):
    """``method`` (an estimator's bound predict / predict_proba) on every row chunk of X: a dask array.

    The estimator is copied when this is called, so refitting it later does not change the result.
    """
    X = _as_row_chunked(X, "X", None)
    sample = method(np.zeros((1, X.shape[1])))
    chunks = (X.chunks[0],) + tuple((s,) for s in sample.shape[1:])
    return X.map_blocks(_call_block, pack(method.__self__), method.__name__, dtype=sample.dtype, chunks=chunks,
                        drop_axis=None if sample.ndim == 2 else 1, meta=sample[:0])


def _call_block(x, est_blob, name):
    return getattr(unpack(est_blob), name)(x)


def _weights(sample_weight, X):
    _, da = _dask()
    if sample_weight is None:
        return None
    return _labels(sample_weight, X) if is_dask_collection(sample_weight) else da.from_array(
        np.asarray(sample_weight, dtype=np.float64), chunks=(X.chunks[0],))


def accuracy(est, X, y, sample_weight=None) -> float:
    """``MLPClassifier.score`` on dask arrays: the (weighted) share of rows whose predicted class is y."""
    dask, da = _dask()
    X = _as_row_chunked(X, "X", None)
    correct = (predict_blocks(est.predict, X) == _labels(y, X)).astype(np.float64)
    w = _weights(sample_weight, X)
    return float(dask.compute(correct.mean() if w is None else (correct * w).sum() / w.sum())[0])


def r2(est, X, y, sample_weight=None) -> float:
    """``MLPRegressor.score`` on dask arrays: R^2 averaged uniformly over outputs."""
    dask, da = _dask()
    X = _as_row_chunked(X, "X", None)
    y = _labels(y, X).astype(np.float64)
    y = y[:, None] if y.ndim == 1 else y
    pred = predict_blocks(est.predict, X).astype(np.float64)
    pred = pred[:, None] if pred.ndim == 1 else pred
    w = (da.ones(y.shape[0], chunks=(X.chunks[0],)) if sample_weight is None else _weights(sample_weight, X))[:, None]
    mean = (w * y).sum(axis=0) / w.sum()
    ss_res, ss_tot = dask.compute((w * (y - pred) ** 2).sum(axis=0), (w * (y - mean) ** 2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                          np.where(ss_res > 0, 0.0, 1.0))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------
# Clusters
# ---------------------------------------------------------------------------


def connect(address=None, *, workers=None, timeout=None):
    """A ``distributed.Client``: to the scheduler at ``address``, or to a new local cluster of ``workers`` processes.

    The client becomes dask's default, so dask arrays handed to nbmlp compute on that cluster.
    Close it (``client.close()``; a local cluster with ``client.cluster.close()``) when done.
    An unreachable scheduler raises ``ConnectionError`` after ``timeout`` seconds (default
    :data:`CONNECT_TIMEOUT`).
    """
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError('a Dask scheduler needs the dask extra: pip install "nbmlp[dask]"') from exc
    if (address is None) == (workers is None):
        raise ValueError("give either a scheduler address or a number of local workers, not both or neither")
    if workers is not None:
        workers = check_positive_int(workers, "workers")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        return Client(cluster)
    if not isinstance(address, str) or not address:
        raise TypeError(f"scheduler address must be a string like 'tcp://host:8786', got {address!r}")
    from distributed.comm import parse_address, parse_host_port
    from distributed.comm.registry import backends

    try:
        scheme, location = parse_address(address)
        if scheme not in backends:
            raise ValueError(f"unknown scheme {scheme!r}, known: {sorted(backends)}")
        host, port = parse_host_port(location) if scheme in ("tcp", "tls") else (None, None)
    except ValueError as exc:
        raise ValueError(f"invalid Dask scheduler address {address!r} (expected e.g. tcp://host:8786): {exc}") from exc
    unreachable = ConnectionError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s")
    if host is not None:  # probe first: a Client that fails to connect leaves noise behind when collected
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise unreachable from exc
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise unreachable from exc
    except Exception as exc:  # something answered, but not a Dask scheduler
        raise ConnectionError(f"{address} did not answer as a Dask scheduler ({type(exc).__name__})") from exc


class Session:
    """What ``python -m nbmlp train --scheduler ADDRESS`` / ``--workers N`` needs, in three calls.

    ``Session(scheduler, workers)`` connects (or, with both None, does nothing: training stays in
    memory); ``place(X, T)`` sends in-memory arrays to the workers once, as row chunks (two per
    worker); ``run(trainer, X, T, epochs)`` runs :meth:`nbmlp.Trainer.run` or, on placed arrays,
    :func:`run_trainer`; ``close()`` closes the client and a local cluster.  A context manager too.
    """

    def __init__(self, scheduler=None, workers=None, *, timeout=None):
        self.client = None if scheduler is None and workers is None else connect(scheduler, workers=workers,
                                                                                 timeout=timeout)
        self.local = workers is not None

    def __str__(self):
        if self.client is None:
            return "in memory"
        workers = len(self.client.scheduler_info()["workers"])
        kind = "a local Dask cluster" if self.local else "the Dask scheduler at " + self.client.scheduler.address
        return f"on {kind} with {workers} worker{'s' if workers != 1 else ''}"

    def place(self, *arrays):
        if self.client is None:
            return arrays
        _, da = _dask()
        n = len(arrays[0])
        parts = 2 * max(1, len(self.client.scheduler_info()["workers"]))
        rows = max(1, -(-n // parts))
        placed = [da.from_array(np.ascontiguousarray(a), chunks=(rows,) + (-1,) * (np.ndim(a) - 1)) for a in arrays]
        return tuple(self.client.persist(placed))

    def run(self, trainer, X, T, epochs):
        if is_dask_collection(X):
            return run_trainer(trainer, X, T, epochs)
        return trainer.run(X, T, epochs)

    def close(self):
        if self.client is not None:
            cluster = self.client.cluster if self.local else None
            self.client.close()
            if cluster is not None:
                cluster.close()
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["CONNECT_TIMEOUT", "ChunkedBatch", "Parameters", "Session", "accuracy", "add_partials", "align",
           "refuse_sample_weight",
           "chunk_partial", "classifier_targets", "connect", "fit", "forward", "gradient_sums",
           "is_dask_collection", "loss", "pack", "predict_blocks", "r2", "regressor_targets", "row_pair", "run_trainer",
           "tree_sum", "unpack"]
