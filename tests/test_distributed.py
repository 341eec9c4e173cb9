"""nbmlp on dask arrays, on a real distributed.LocalCluster with 2 worker processes.

Every expectation is an independent computation: the same network on the in-memory array
(nbmlp's own, already checked against the NumPy reference and finite differences), the
same dask graph on a single-threaded in-process scheduler (one worker), or an
uninterrupted run.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import rel_err

import nbmlp
from nbmlp import distributed as nd
from nbmlp.training import Trainer

dask = pytest.importorskip("dask", reason='dask is not installed (pip install "nbmlp[dask]")')
da = pytest.importorskip("dask.array", reason='dask is not installed (pip install "nbmlp[dask]")')
dd = pytest.importorskip("distributed", reason='distributed is not installed (pip install "nbmlp[dask]")')
from dask.delayed import Delayed  # noqa: E402

N, CHUNK = 103, 20  # 6 chunks, the last one short


@pytest.fixture(scope="module")
def client():
    # Without work stealing the scheduler never moves a chunk to balance load: every chunk's task
    # runs where the chunk is (test_the_data_never_comes_to_the_client checks it).
    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        cluster = dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = dd.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def one_worker():
    """The same graphs on the single-threaded in-process scheduler: one worker, no cluster."""
    return dask.config.set(scheduler="sync")


def data(loss="half_sse", n=N, d0=4, dL=3, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d0)).astype(dtype)
    if loss == "cross_entropy":
        T = nbmlp.one_hot(rng.integers(0, dL, n), dL).astype(dtype)
    else:
        T = rng.uniform(size=(n, dL)).astype(dtype)
    return X, T


def chunked(a, rows=CHUNK):
    return da.from_array(a, chunks=(rows, -1))


# -- gradients, loss, forward ----------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["half_sse", "mse", "cross_entropy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradients_and_loss_match_in_memory(client, loss, dtype):
    X, T = data(loss, dtype=dtype)
    net = nbmlp.MLP((4, 5, 3), seed=1, loss=loss, dtype=dtype)
    expected = net.gradients(X, T)
    got = net.gradients(chunked(X), chunked(T))
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert rel_err(got.loss, expected.loss) <= tol
    for a, b in zip(got.W + got.b, expected.W + expected.b):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert rel_err(a, b) <= tol
    assert rel_err(net.loss(chunked(X), chunked(T)), net.loss(X, T)) <= tol


def test_one_and_two_workers_are_bit_identical(client):
    X, T = data("cross_entropy")
    net = nbmlp.MLP((4, 5, 3), seed=2, loss="cross_entropy")
    two = net.gradients(chunked(X), chunked(T))
    with one_worker():
        one = net.gradients(chunked(X), chunked(T))
    assert one.loss == two.loss
    for a, b in zip(one.W + one.b, two.W + two.b):
        np.testing.assert_array_equal(a, b)


def test_forward_is_lazy_and_row_chunked(client):
    X, _ = data()
    net = nbmlp.MLP((4, 5, 3), seed=3)
    out = net.forward(chunked(X))
    assert isinstance(out, da.Array) and out.chunks[0] == chunked(X).chunks[0]
    expected = net.forward(X)
    net.W[0][...] = 0.0  # a lazy result was frozen when forward was called
    np.testing.assert_array_equal(out.compute(), expected)


def test_the_data_never_comes_to_the_client(client):
    """X and T exist only on the workers; a step moves parameters and partials, never a chunk."""

    def make_block(block_id=None):
        dd.get_worker()  # raises ValueError outside a worker: the block is made where it lives
        rng = np.random.default_rng(block_id[0])
        return rng.normal(size=(CHUNK, 4))

    X = da.map_blocks(make_block, chunks=((CHUNK,) * 5, (4,)), dtype=np.float64)
    T = da.map_blocks(make_block, chunks=((CHUNK,) * 5, (4,)), dtype=np.float64)[:, :3] ** 2  # made apart from X
    net = nbmlp.MLP((4, 5, 3), seed=4)
    batch = nd.ChunkedBatch(net, X, T, persist=True)
    dd.wait(batch.blocks)
    client.run(lambda dask_worker: dask_worker.transfer_incoming_log.clear())
    graph = batch.graph(nd.Parameters(net.W, net.b))
    assert isinstance(graph, Delayed)  # one output, the root of the tree: the client gathers nothing else
    (total,) = dask.compute(graph)
    assert [np.shape(p) for p in total] == [()] + [w.shape for w in net.W] + [b.shape for b in net.b]
    logs = client.run(lambda dask_worker: [k for entry in dask_worker.transfer_incoming_log for k in entry["keys"]])
    moved = [key for keys in logs.values() for key in keys]
    chunks = {block.key for block in batch.blocks}
    assert not chunks & set(moved), moved  # between workers only parameters, template and partials travel
    with pytest.raises(ValueError):
        make_block(block_id=(0,))  # the same function on the client fails: it did run on workers
    assert rel_err(total[0], net.loss(X.compute(scheduler=client), T.compute(scheduler=client))) <= 1e-12


# -- checks at the boundary ------------------------------------------------------------------------


def test_chunking_is_aligned_or_refused(client):
    X, T = data()
    net = nbmlp.MLP((4, 5, 3), seed=5)
    expected = net.gradients(chunked(X), chunked(T))
    # T with other row chunks is rechunked to X's; X chunked along columns gets one column block:
    # same chunks along rows, so the very same sums.
    other = net.gradients(da.from_array(X, chunks=(CHUNK, 2)), da.from_array(T, chunks=(33, 1)))
    for a, b in zip(other.W + other.b, expected.W + expected.b):
        np.testing.assert_array_equal(a, b)
    # in-memory T with a dask X: given X's chunks
    assert net.gradients(chunked(X), T).loss == expected.loss
    with pytest.raises(ValueError, match="X must be a 2-D dask array"):
        net.gradients(da.from_array(X[:, 0], chunks=CHUNK), chunked(T))
    with pytest.raises(ValueError, match="T must have 3 columns"):
        net.gradients(chunked(X), chunked(T[:, :2]))
    with pytest.raises(ValueError, match="same number of rows"):
        net.gradients(chunked(X), chunked(T[:-1]))
    unknown = chunked(X)[chunked(X)[:, 0] > -10]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        net.gradients(unknown, chunked(T))
    with pytest.raises(TypeError, match="real numbers"):
        net.forward(chunked(X.astype(complex)))
    bad = X.copy()
    bad[50, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):  # checked by the kernels' own boundary, on the worker
        net.gradients(chunked(bad), chunked(T))


def test_unreachable_scheduler_is_one_clear_error():
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        nd.connect("tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - start < 30
    with pytest.raises(ValueError, match="invalid Dask scheduler address 'localhost'.*port"):
        nd.connect("localhost")
    with pytest.raises(ValueError, match="unknown scheme 'xyz'"):
        nd.connect("xyz://127.0.0.1:9")


def test_session_places_arrays_and_trains_on_a_scheduler(client):
    X, T = data()
    with nd.Session() as memory:  # neither address nor workers: in memory, nothing placed
        assert memory.client is None and memory.place(X, T)[0] is X
    a = nbmlp.MLP((4, 5, 3), seed=12)
    b = nbmlp.MLP((4, 5, 3), seed=12)
    with nd.Session(client.scheduler.address, timeout=30) as session:
        Xd, Td = session.place(X, T)
        assert isinstance(Xd, da.Array) and len(Xd.chunks[0]) == 4  # two chunks per worker
        session.run(Trainer(b, lr=0.05, batch_size=25, seed=1, optimizer="momentum"), Xd, Td, 3)
    Trainer(a, lr=0.05, batch_size=25, seed=1, optimizer="momentum").run(X, T, 3)
    assert client.status == "running"  # closing the session's client leaves the cluster it connected to
    for p, q in zip(b.W + b.b, a.W + a.b):
        assert rel_err(p, q) <= 1e-12


def test_session_starts_and_stops_a_local_cluster(client):
    X, T = data()
    net = nbmlp.MLP((4, 5, 3), seed=13)
    with nd.Session(workers=1) as session:
        cluster = session.client.cluster
        assert len(session.client.scheduler_info()["workers"]) == 1
        session.run(Trainer(net, lr=0.05), *session.place(X, T), 2)
    assert session.client is None and cluster.status.name == "closed"
    assert len(net.loss_history) == 2
    assert dd.default_client() is client  # the fixture's client is the default again


def test_cli_trains_on_a_scheduler(client):
    from nbmlp.cli import main

    final = {}
    for name, extra in (("cluster", ["--scheduler", client.scheduler.address]), ("memory", [])):
        out = io.StringIO()
        assert main(["train", "--data", "iris", "--epochs", "4", "--batch-size", "30", "--quiet", *extra],
                    stream=out) == 0
        final[name] = out.getvalue().split("final loss ")[1].split()[0]
    assert final["cluster"] == final["memory"]


def test_cli_unreachable_scheduler_is_one_line(capsys):
    from nbmlp.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "iris", "--epochs", "2", "--quiet", "--scheduler", "tcp://127.0.0.1:9"],
             stream=io.StringIO())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 10 s" in err, err


def test_nbmlp_imports_without_dask():
    code = "import sys, nbmlp; assert not any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


# -- training ----------------------------------------------------------------------------------------


def fit_both(options, loss="half_sse", epochs=4):
    X, T = data(loss)
    a = nbmlp.MLP((4, 5, 3), seed=6, loss=loss)
    b = nbmlp.MLP((4, 5, 3), seed=6, loss=loss)
    a.fit(X, T, epochs=epochs, **options)
    b.fit(chunked(X), chunked(T), epochs=epochs, **options)
    return a, b


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_mini_batch_fit_matches_in_memory(client, optimizer):
    """Same seed -> same batches as the in-memory trainer; only the order of each batch's sum differs."""
    options = dict(lr=0.05, optimizer=optimizer, batch_size=32, seed=11, weight_decay=1e-3, lr_schedule="invscaling")
    a, b = fit_both(options, loss="cross_entropy")
    assert len(b.loss_history) == 4
    assert rel_err(b.loss_history, a.loss_history) <= 1e-12
    for p, q in zip(b.W + b.b, a.W + a.b):
        assert rel_err(p, q) <= 1e-12


@pytest.mark.parametrize("schedule", ["adaptive", "constant"])
def test_plateaus_stop_or_slow_down_as_in_memory(client, schedule):
    """tol larger than any improvement: patience runs out at epoch 3; adaptive lowers the rate, constant stops."""
    a, b = fit_both(dict(lr=0.05, batch_size=40, seed=2, lr_schedule=schedule, n_iter_no_change=1, tol=10.0),
                    loss="mse", epochs=6)
    assert len(b.loss_history) == len(a.loss_history) == (6 if schedule == "adaptive" else 3)
    assert rel_err(b.loss_history, a.loss_history) <= 1e-12
    for p, q in zip(b.W + b.b, a.W + a.b):
        assert rel_err(p, q) <= 1e-12


@pytest.mark.parametrize("loss", ["half_sse", "mse"])
def test_full_batch_fit_matches_in_memory(client, loss):
    a, b = fit_both(dict(lr=0.01), loss=loss, epochs=5)
    assert rel_err(b.loss_history, a.loss_history) <= 1e-12
    for p, q in zip(b.W + b.b, a.W + a.b):
        assert rel_err(p, q) <= 1e-12


def four_workers():
    """Four in-process workers (threads of this process): a third worker count, cheap to start."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        with dd.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
                dd.Client(cluster, set_as_default=False) as c4, dask.config.set(scheduler=c4):
            yield
    return ctx()


def test_fit_is_bit_identical_on_one_two_and_four_workers(client):
    X, T = data("mse")
    nets = []
    for ctx in (one_worker, dask.config.set, four_workers):
        net = nbmlp.MLP((4, 5, 3), seed=7, loss="mse")
        with ctx():
            net.fit(chunked(X), chunked(T), epochs=3, lr=0.05, optimizer="adam", batch_size=40, seed=3)
        nets.append(net)
    for other in nets[1:]:
        assert other.loss_history == nets[0].loss_history
        for p, q in zip(other.W + other.b, nets[0].W + nets[0].b):
            np.testing.assert_array_equal(p, q)


def test_two_fits_continue_like_one(client):
    """net.optimizer_state carries Adam's moments and the shuffling across fits, on dask as in memory."""
    X, T = data("mse")
    options = dict(lr=0.05, optimizer="adam", batch_size=40, seed=4)
    once = nbmlp.MLP((4, 5, 3), seed=14, loss="mse")
    once.fit(chunked(X), chunked(T), epochs=4, **options)
    twice = nbmlp.MLP((4, 5, 3), seed=14, loss="mse")
    twice.fit(chunked(X), chunked(T), epochs=2, **options)
    twice.fit(chunked(X), chunked(T), epochs=2, **options)
    assert twice.loss_history == once.loss_history
    for p, q in zip(twice.W + twice.b, once.W + once.b):
        np.testing.assert_array_equal(p, q)


def test_fit_refuses_validation_on_dask(client):
    X, T = data()
    net = nbmlp.MLP((4, 5, 3), seed=8)
    with pytest.raises(ValueError, match="not available on dask arrays"):
        net.fit(chunked(X), chunked(T), epochs=2, validation_fraction=0.2)
    with pytest.raises(ValueError, match="sample_weight is not available on dask arrays"):
        net.fit(chunked(X), chunked(T), epochs=2, sample_weight=np.ones(N))
    X_iris, y_iris = nbmlp.load_iris()
    for estimator in (nbmlp.MLPClassifier(max_iter=2), nbmlp.MLPRegressor(max_iter=2)):
        with pytest.raises(ValueError, match="sample_weight is not available on dask arrays"):
            estimator.fit(chunked(X_iris, 40), da.from_array(y_iris, chunks=40), sample_weight=np.ones(150))


def test_a_worker_that_dies_mid_fit_is_survived(client):
    X, T = data("cross_entropy", n=200)
    options = dict(lr=0.05, optimizer="adam", batch_size=64, seed=5)
    reference = nbmlp.MLP((4, 5, 3), seed=9, loss="cross_entropy")
    reference.fit(chunked(X, 25), chunked(T, 25), epochs=6, **options)

    client.wait_for_workers(2, timeout=120)
    pids = client.run(os.getpid)  # {worker address: pid}, asked of every worker
    victim = sorted(pids)[0]
    pid = pids[victim]

    def kill(epoch, loss):
        if epoch == 2:
            os.kill(pid, signal.SIGKILL)  # the worker process holding half of the chunks, mid-fit

    net = nbmlp.MLP((4, 5, 3), seed=9, loss="cross_entropy")
    net.fit(chunked(X, 25), chunked(T, 25), epochs=6, callback=kill, **options)
    client.wait_for_workers(2, timeout=120)
    assert victim not in set(client.scheduler_info()["workers"])  # the process did die (and was restarted)
    assert net.loss_history == reference.loss_history
    for p, q in zip(net.W + net.b, reference.W + reference.b):
        np.testing.assert_array_equal(p, q)


# -- estimators ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::nbmlp.estimators.ConvergenceWarning")
def test_classifier_on_dask_arrays(client):
    X, y = nbmlp.load_iris()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    params = dict(hidden_layer_sizes=(5,), random_state=0, max_iter=5, batch_size=50)
    mem = nbmlp.MLPClassifier(**params).fit(X, y)
    dist = nbmlp.MLPClassifier(**params).fit(chunked(X, 40), da.from_array(y, chunks=40))
    np.testing.assert_array_equal(dist.classes_, mem.classes_)
    assert rel_err(dist.loss_curve_, mem.loss_curve_) <= 1e-12
    for p, q in zip(dist.coefs_ + dist.intercepts_, mem.coefs_ + mem.intercepts_):
        assert rel_err(p, q) <= 1e-12
    proba = dist.predict_proba(chunked(X, 40))
    labels = dist.predict(chunked(X, 40))
    assert isinstance(proba, da.Array) and isinstance(labels, da.Array)
    np.testing.assert_array_equal(proba.compute(), dist.predict_proba(X))
    np.testing.assert_array_equal(labels.compute(), dist.predict(X))
    assert dist.score(chunked(X, 40), da.from_array(y, chunks=40)) == pytest.approx(dist.score(X, y), abs=1e-15)


def test_regressor_on_dask_arrays(client):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(90, 2))
    y = X[:, 0] ** 2 - X[:, 1]
    params = dict(hidden_layer_sizes=(6,), random_state=0, max_iter=4, batch_size=30, solver="sgd")
    with pytest.warns(nbmlp.estimators.ConvergenceWarning):
        mem = nbmlp.MLPRegressor(**params).fit(X, y)
    with pytest.warns(nbmlp.estimators.ConvergenceWarning):
        dist = nbmlp.MLPRegressor(**params).fit(chunked(X, 25), da.from_array(y, chunks=25))
    for p, q in zip(dist.coefs_ + dist.intercepts_, mem.coefs_ + mem.intercepts_):
        assert rel_err(p, q) <= 1e-12
    pred = dist.predict(chunked(X, 25))
    assert isinstance(pred, da.Array) and pred.ndim == 1
    np.testing.assert_array_equal(pred.compute(), dist.predict(X))
    assert dist.score(chunked(X, 25), y) == pytest.approx(dist.score(X, y), rel=1e-12)


def test_tree_sum_order_is_fixed():
    parts = [f"p{i}" for i in range(5)]
    assert nd.tree_sum(parts, lambda a, b: f"({a}+{b})") == "(((p0+p1)+(p2+p3))+p4)"
