"""nbmlp.compiled: the compiled training loop against its reference twin, the Python Trainer on engine="numpy".

Each case trains the same net twice -- ``compiled=True`` on the default engine and
``compiled=False`` on ``engine="numpy"`` (one vectorized NumPy formula per
step) -- and holds the loss trajectory, the validation histories, the final
parameters and the optimizer state to 1e-10 in float64.  Shapes are small:
a test costs compile time, not arithmetic.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import rel_err
from test_tuned import EXP_F32_REL_TOL, SIGMOID_REL_TOL, sigmoid_elementwise, sigmoid_exact

import nbmlp
from nbmlp import compiled, ops, parallel, reference
from nbmlp.training import Trainer, train

TOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 2e-4}

#: name -> (MLP keyword arguments, training options, n, sample weights?)
CASES = {
    "sigmoid sgd full batch": (dict(), dict(optimizer="sgd"), 9, False),
    "tanh momentum batch 4": (dict(activation="tanh"), dict(optimizer="momentum", batch_size=4), 9, False),
    "relu nesterov batch 4 decay": (dict(activation="relu"), dict(optimizer="nesterov", batch_size=4,
                                                                   weight_decay=0.01), 9, False),
    "leaky_relu adam batch 3": (dict(activation="leaky_relu"), dict(optimizer="adam", batch_size=3), 10, False),
    "softplus adam mse": (dict(activation="softplus", loss="mse"), dict(optimizer="adam", batch_size=4), 9, False),
    "identity mse no input sigmoid": (dict(activation="identity", loss="mse", input_sigmoid=False),
                                      dict(optimizer="sgd", batch_size=2, shuffle=False), 7, False),
    "softmax cross-entropy adam decay": (dict(loss="cross_entropy"), dict(optimizer="adam", batch_size=4,
                                                                            weight_decay=0.1), 11, False),
    "invscaling": (dict(), dict(optimizer="sgd", lr_schedule="invscaling", power_t=0.7, batch_size=5), 9, False),
    "adaptive plateau": (dict(), dict(optimizer="sgd", lr_schedule="adaptive", n_iter_no_change=2, tol=10.0),
                         9, False),
    "callable schedule": (dict(), dict(optimizer="momentum", lr_schedule=lambda e: 0.5 / e, batch_size=3), 8,
                          False),
    "convergence stop": (dict(), dict(optimizer="sgd", n_iter_no_change=2, tol=1.0), 8, False),
    "validation + early stopping": (dict(loss="cross_entropy"),
                                    dict(optimizer="adam", batch_size=4, validation_fraction=0.3,
                                         early_stopping=True, n_iter_no_change=3, tol=0.0), 16, False),
    "validation, python score": (dict(loss="cross_entropy"),
                                 dict(optimizer="sgd", validation_fraction=0.3, early_stopping=True,
                                      n_iter_no_change=3, tol=0.0,
                                      validation_score=lambda net, X, T: -float(net.loss(X, T))), 16, False),
    "three layers": (dict(sizes=(3, 5, 4, 2), activation=["tanh", "relu", "sigmoid"]),
                     dict(optimizer="adam", batch_size=4), 9, False),
    "n = 1": (dict(), dict(optimizer="momentum"), 1, False),
    "width 1": (dict(sizes=(1, 1, 1)), dict(optimizer="adam", batch_size=2), 5, False),
    "wide layers": (dict(sizes=(9, 17, 12, 3), loss="cross_entropy"), dict(optimizer="adam", batch_size=6), 13,
                    False),
    "sample weights half_sse": (dict(), dict(optimizer="sgd", batch_size=4), 9, True),
    "sample weights mse": (dict(loss="mse"), dict(optimizer="adam", batch_size=4), 9, True),
    "sample weights cross-entropy": (dict(loss="cross_entropy"), dict(optimizer="momentum"), 9, True),
}

EPOCHS = 12


def _data(rng, sizes, n, loss):
    X = rng.normal(size=(n, sizes[0]))
    if loss == "cross_entropy":
        T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    else:
        T = rng.random((n, sizes[-1]))
    return X, T


def _needs(net_kwargs):
    acts = net_kwargs.get("activation", "sigmoid")
    missing = {acts} if isinstance(acts, str) else set(acts)
    missing -= set(nbmlp.ACTIVATIONS)
    if missing:
        pytest.skip(f"MLP does not offer {sorted(missing)} yet (nbmlp.ops adds it)")


def _pair(net_kwargs, dtype):
    _needs(net_kwargs)
    kw = dict(net_kwargs)
    sizes = kw.pop("sizes", (3, 4, 2))
    return (nbmlp.MLP(sizes, seed=3, dtype=dtype, **kw), nbmlp.MLP(sizes, seed=3, dtype=dtype, engine="numpy",
                                                                  **kw))


def _assert_same(a, b, tol, what):
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative difference {err:.2e} > {tol:.0e}"


def _compare(case, dtype, rng, epochs=EPOCHS):
    net_kwargs, options, n, weighted = CASES[case]
    fast, ref = _pair(net_kwargs, dtype)
    X, T = _data(rng, fast.sizes, n, fast.loss_name)
    w = rng.uniform(0.2, 3.0, size=n) if weighted else None
    options = dict(options, seed=7, lr=options.get("lr", 0.3))
    run_fast = train(fast, X, T, epochs=epochs, sample_weight=w, **options)
    run_ref = train(ref, X, T, epochs=epochs, sample_weight=w, compiled=False, **options)
    tol = TOL[np.dtype(dtype)]
    assert run_fast.used_compiled_loop and not run_ref.used_compiled_loop
    assert len(fast.loss_history) == len(ref.loss_history) == run_ref.epochs_run == run_fast.epochs_run
    assert run_fast.stop_reason == run_ref.stop_reason
    _assert_same(fast.loss_history, ref.loss_history, tol, f"{case}: losses")
    _assert_same(fast.validation_loss_history, ref.validation_loss_history, tol, f"{case}: validation losses")
    _assert_same(fast.validation_score_history, ref.validation_score_history, tol, f"{case}: scores")
    for l, (p, q) in enumerate(zip(fast.W + fast.b, ref.W + ref.b, strict=True)):
        assert p.dtype == np.dtype(dtype)
        _assert_same(p, q, tol, f"{case}: parameter {l}")
    assert fast.optimizer_state.keys() == ref.optimizer_state.keys()
    for key, value in ref.optimizer_state.items():
        if isinstance(value, np.ndarray):
            _assert_same(fast.optimizer_state[key], value, tol, f"{case}: optimizer_state[{key!r}]")
        elif isinstance(value, str):
            assert fast.optimizer_state[key] == value, key
        else:
            assert fast.optimizer_state[key] == pytest.approx(value, rel=tol), key
    return run_fast, run_ref


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_loop_equals_the_numpy_trainer(case, rng):
    _compare(case, "float64", rng)


@pytest.mark.parametrize("case", ["softmax cross-entropy adam decay", "three layers", "sample weights mse"])
def test_float32_within_float32_rounding(case, rng):
    _compare(case, "float32", rng)


def test_the_cases_cover_every_activation_loss_and_optimizer():
    acts, losses, opts = set(), set(), set()
    for net_kwargs, options, _, _ in CASES.values():
        a = net_kwargs.get("activation", "sigmoid")
        if not set([a] if isinstance(a, str) else a) <= set(nbmlp.ACTIVATIONS):
            acts.update([a] if isinstance(a, str) else a)
            continue
        net = nbmlp.MLP(net_kwargs.get("sizes", (3, 4, 2)), **{k: v for k, v in net_kwargs.items() if k != "sizes"})
        acts.update(net.activations)
        losses.add(net.loss_name)
        opts.add(options["optimizer"])
    assert acts == set(compiled.KINDS["activation"])
    assert losses == set(compiled.KINDS["loss"])
    assert opts == set(compiled.KINDS["optimizer"])



def _fit_case(case, seed):
    """A fresh net of ``case`` trained for EPOCHS epochs on data drawn from ``seed``: (net, run)."""
    net_kwargs, options, n, weighted = CASES[case]
    net, _ = _pair(net_kwargs, "float64")
    rng = np.random.default_rng(seed)
    X, T = _data(rng, net.sizes, n, net.loss_name)
    w = rng.uniform(0.2, 3.0, size=n) if weighted else None
    run = train(net, X, T, epochs=EPOCHS, sample_weight=w, **dict(options, seed=7, lr=options.get("lr", 0.3)))
    return net, run


def _same_fit(a, b):
    assert a.loss_history == b.loss_history
    assert a.validation_loss_history == b.validation_loss_history
    for p, q in zip(a.W + a.b, b.W + b.b, strict=True):
        assert np.array_equal(p, q)


class _StaleSpares(compiled.SpareBuffers):
    """Spare buffers at their worst: every one taken, kept or new, holds NaN (a stale run's numbers)."""

    def take(self, shape, dtype, make=None):
        a = super().take(shape, dtype, make)
        a.fill(np.nan)
        return a


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_on_spare_buffers_equals_one_on_new_buffers(case, monkeypatch):
    """A fit that reuses the buffers of the fit before it (the same shapes) gives the same bits as on new
    buffers, and so does one whose every buffer starts as NaN: each is written whole before it is read."""
    compiled.SPARES.clear()
    fresh, run = _fit_case(case, seed=5)
    assert run.used_compiled_loop
    _fit_case(case, seed=6)  # leaves its buffers, holding other numbers, to the next fit
    reused, _ = _fit_case(case, seed=5)
    _same_fit(fresh, reused)
    monkeypatch.setattr(compiled, "SPARES", _StaleSpares())
    _fit_case(case, seed=6)
    stale, _ = _fit_case(case, seed=5)
    _same_fit(fresh, stale)


def test_spare_buffers_hand_back_a_finished_runs_arrays_and_never_twice():
    spares = compiled.SpareBuffers(max_bytes=1 << 20)
    a, b = spares.take((4, 3), np.float64), spares.take((4, 3), np.float64)
    assert a is not b and a.shape == (4, 3) and a.dtype == np.float64
    a.fill(7.0)
    b.fill(8.0)
    spares.keep([a, b])
    c, d = spares.take((4, 3), np.float64), spares.take((4, 3), np.float64)
    assert {id(c), id(d)} == {id(a), id(b)}
    assert np.all(a == 7.0) and np.all(b == 8.0)  # handed back as they were left
    assert spares.take((4, 3), np.float64) is not a  # both were taken: a new one
    assert spares.take((4, 3), np.float32).dtype == np.float32
    big = np.zeros(1 << 18)
    spares.keep([big])  # 2 MiB: over the limit, nothing kept
    assert spares.take((1 << 18,), np.float64) is not big
    spares.keep([a])
    spares.clear()
    assert spares.take((4, 3), np.float64) is not a
    ws = spares.take((5,), np.float64, make=lambda: np.full(5, 2.0))
    assert np.all(ws == 2.0)

def test_early_stopping_case_really_stops_early(rng):
    run, _ = _compare("validation + early stopping", "float64", rng, epochs=300)
    assert run.stop_reason == "early_stopping" and run.epochs_run < 300


@pytest.mark.parametrize("loss", ["half_sse", "mse", "cross_entropy"])
def test_integer_sample_weights_equal_repeated_rows(loss, rng):
    X, T = _data(rng, (3, 4, 2), 6, loss)
    w = np.array([1, 2, 1, 3, 1, 1])
    a, b = nbmlp.MLP((3, 4, 2), seed=2, loss=loss), nbmlp.MLP((3, 4, 2), seed=2, loss=loss)
    a.fit(X, T, epochs=10, lr=0.2, sample_weight=w, optimizer="adam")
    b.fit(np.repeat(X, w, axis=0), np.repeat(T, w, axis=0), epochs=10, lr=0.2, optimizer="adam")
    _assert_same(a.loss_history, b.loss_history, 1e-12, "losses")
    for p, q in zip(a.W + a.b, b.W + b.b, strict=True):
        _assert_same(p, q, 1e-12, "parameters")


@pytest.mark.parametrize("options", [dict(optimizer="adam", lr=0.05), dict(optimizer="momentum", lr=0.1),
                                     dict(optimizer="adam", lr=0.05, batch_size=3, seed=4),
                                     dict(optimizer="sgd", lr=0.1, lr_schedule="invscaling")])
@pytest.mark.parametrize("compiled_loop", [True, False])
def test_fit_twice_for_20_epochs_equals_one_fit_of_40(options, compiled_loop, rng):
    X, T = _data(rng, (3, 4, 2), 10, "half_sse")
    once, twice = nbmlp.MLP((3, 4, 2), seed=5), nbmlp.MLP((3, 4, 2), seed=5)
    once.fit(X, T, epochs=40, compiled=compiled_loop, **options)
    twice.fit(X, T, epochs=20, compiled=compiled_loop, **options)
    twice.fit(X, T, epochs=20, compiled=compiled_loop, **options)
    _assert_same(twice.loss_history, once.loss_history, 1e-13, "losses")
    for p, q in zip(twice.W + twice.b, once.W + once.b, strict=True):
        _assert_same(p, q, 1e-13, "parameters")
    assert twice.optimizer_state["step"] == once.optimizer_state["step"]
    assert twice.optimizer_state["epoch"] == 40


def test_optimizer_state_is_plain_data(rng):
    X, T = _data(rng, (3, 4, 2), 10, "half_sse")
    net = nbmlp.MLP((3, 4, 2), seed=5)
    net.fit(X, T, epochs=3, optimizer="adam", batch_size=4, seed=1)
    state = net.optimizer_state
    assert all(isinstance(k, str) for k in state)
    assert all(isinstance(v, (np.ndarray, int, float, str)) for v in state.values())
    assert state["first_moment"].shape == (sum(p.size for p in net.W + net.b),)
    assert state["step"] == 3 * 3


@pytest.mark.parametrize("compiled_loop", [True, False])
def test_a_run_hands_its_state_on_without_copying_and_never_changes_a_stored_one(compiled_loop, rng):
    """The optimizer's moments view the flat vectors net.optimizer_state holds; the next run starts from a copy."""
    X, T = _data(rng, (3, 4, 2), 10, "half_sse")
    net = nbmlp.MLP((3, 4, 2), seed=5)
    trainer = Trainer(net, optimizer="adam", lr=0.05, batch_size=4, seed=1, compiled=compiled_loop)
    trainer.run(X, T, 3)
    first = net.optimizer_state
    kept = {k: first[k].copy() for k in ("first_moment", "second_moment")}
    assert np.shares_memory(trainer.optimizer.m1[0], first["first_moment"])
    assert np.shares_memory(trainer.optimizer.m2[-1], first["second_moment"])
    trainer.run(X, T, 3)
    for k, v in kept.items():
        np.testing.assert_array_equal(first[k], v, err_msg=f"the first run's {k} changed")
    assert not np.array_equal(net.optimizer_state["first_moment"], kept["first_moment"])
    assert net.optimizer_state["step"] == 2 * 3 * 3
    # a pickled trainer's moments are its own arrays: what is written into them is what it stores
    clone = pickle.loads(pickle.dumps(trainer))
    clone.optimizer.m1[0][:] = 0.25
    clone.store_state()
    assert np.all(clone.net.optimizer_state["first_moment"][:net.W[0].size] == 0.25)
    assert not np.any(net.optimizer_state["first_moment"] == 0.25)


@pytest.mark.parametrize("history, expected", [("none", []), (3, [3, 6, 9]), ("epoch", list(range(1, 11)))])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_history_can_be_thinned_or_switched_off(history, expected, batch_size, rng):
    X, T = _data(rng, (3, 4, 2), 10, "half_sse")
    seen = []
    full = nbmlp.MLP((3, 4, 2), seed=5)
    full.fit(X, T, epochs=10, batch_size=batch_size, seed=0, callback=lambda e, loss: seen.append(loss))
    net = nbmlp.MLP((3, 4, 2), seed=5)
    net.fit(X, T, epochs=10, batch_size=batch_size, seed=0, history=history)
    assert net.loss_history == pytest.approx([seen[e - 1] for e in expected], rel=1e-12)
    assert len(seen) == 10


@pytest.mark.parametrize("batch_size", [None, 2])
def test_chunks_call_the_callback_for_every_epoch_in_order(batch_size, rng, monkeypatch):
    calls = []
    chunk = compiled.CompiledRun.chunk

    def counting(self, *args):
        calls.append(1)
        return chunk(self, *args)

    monkeypatch.setattr(compiled.CompiledRun, "chunk", counting)
    monkeypatch.setattr(compiled, "CHUNK_SECONDS", 1e-5)
    X, T = _data(rng, (3, 4, 2), 9, "half_sse")
    seen = []
    net = nbmlp.MLP((3, 4, 2), seed=5, activation="tanh")
    net.fit(X, T, epochs=30, lr=0.1, batch_size=batch_size, optimizer="momentum",
            callback=lambda e, loss: seen.append((e, loss)))
    assert [e for e, _ in seen] == list(range(1, 31))
    assert [loss for _, loss in seen] == net.loss_history
    assert len(calls) > 2  # returned to Python between chunks


def test_a_chunk_is_many_epochs_when_epochs_are_short(rng, monkeypatch):
    calls = []
    chunk = compiled.CompiledRun.chunk

    def counting(self, perms, *args):
        calls.append(perms.shape[0])
        return chunk(self, perms, *args)

    monkeypatch.setattr(compiled.CompiledRun, "chunk", counting)
    X, T = _data(rng, (3, 4, 2), 9, "half_sse")
    nbmlp.MLP((3, 4, 2), seed=5, activation="tanh").fit(X, T, epochs=3000, lr=0.01, optimizer="adam",
                                                       callback=lambda e, loss: None)
    assert max(calls) > 10


@pytest.mark.parametrize("options", [dict(), dict(optimizer="adam", batch_size=4), dict(activation="tanh")])
@pytest.mark.parametrize("compiled_loop", [True, False])
def test_huge_lr_never_returns_non_finite_parameters(options, compiled_loop, rng):
    options = dict(options)
    net_kw = {"activation": options.pop("activation")} if "activation" in options else {}
    X, T = _data(rng, (3, 4, 2), 40, "half_sse")
    T = T * 100.0
    for epochs in (1, 2, 5):
        net = nbmlp.MLP((3, 4, 2), seed=5, **net_kw)
        try:
            net.fit(X, T, epochs=epochs, lr=1e308, compiled=compiled_loop, **options)
        except FloatingPointError:
            pass
        assert all(np.isfinite(p).all() for p in net.W + net.b), epochs


def test_guard_after_the_last_update_restores_the_parameters_before_it(rng):
    X, T = _data(rng, (3, 4, 2), 40, "half_sse")
    T = T * 100.0
    for compiled_loop, options in ((True, {}), (True, {"optimizer": "momentum"}), (False, {})):
        net = nbmlp.MLP((3, 4, 2), seed=5)
        before = [p.copy() for p in net.W + net.b]
        with pytest.raises(FloatingPointError, match="non-finite"):
            net.fit(X, T, epochs=1, lr=1e308, compiled=compiled_loop, **options)
        for p, q in zip(net.W + net.b, before, strict=True):
            np.testing.assert_array_equal(p, q)


def test_non_finite_in_a_later_epoch_keeps_the_finished_ones(rng):
    X, T = _data(rng, (3, 4, 2), 12, "half_sse")
    a = nbmlp.MLP((3, 4, 2), seed=5, activation="identity")
    b = nbmlp.MLP((3, 4, 2), seed=5, activation="identity", engine="numpy")
    schedule = lambda e: 0.1 if e < 4 else 1e308  # noqa: E731
    for net, flag in ((a, True), (b, False)):
        with pytest.raises(FloatingPointError):
            net.fit(X, T, epochs=10, lr=0.1, lr_schedule=schedule, batch_size=5, seed=0, compiled=flag)
    assert len(a.loss_history) == len(b.loss_history) >= 3
    _assert_same(a.loss_history, b.loss_history, 1e-10, "losses")
    for p, q in zip(a.W + a.b, b.W + b.b, strict=True):
        assert np.isfinite(p).all()
        _assert_same(p, q, 1e-10, "parameters")


CTRL_C_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import nbmlp
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(64, 8)), rng.random((64, 3))
    net = nbmlp.MLP((8, 16, 3), seed=0)
    net.fit(X, T, epochs=2, optimizer="adam", batch_size=8, seed=0)   # compile before the signal
    print("ready", flush=True)
    start = time.perf_counter()
    try:
        net.fit(X, T, epochs=10**9, optimizer="adam", batch_size=8, seed=0)
    except KeyboardInterrupt:
        late = time.perf_counter() - float(sys.stdin.readline())
        epochs = net.optimizer_state["epoch"]
        finite = all(np.isfinite(p).all() for p in net.W + net.b)
        print("interrupted", late, epochs, len(net.loss_history), net.optimizer_state["step"], finite, flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is a POSIX test")
def test_ctrl_c_stops_fit_within_a_second_and_keeps_finished_epochs(tmp_path):
    script = tmp_path / "long_fit.py"
    script.write_text(CTRL_C_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(f"{time.perf_counter()}\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    fields = out.split()
    assert fields and fields[0] == "interrupted", (out, err)
    late, epochs, recorded, steps, finite = float(fields[1]), int(fields[2]), int(fields[3]), int(fields[4]), \
        fields[5]
    assert late < 1.0
    assert epochs >= 2 and recorded == epochs  # the first fit's 2 epochs and every finished one since
    assert steps >= (epochs - 0) * 8 and finite == "True"


def test_trainer_refuses_what_is_not_a_net():
    with pytest.raises(TypeError, match="net must be an nbmlp.MLP, got str"):
        Trainer("x")


@pytest.mark.parametrize("w, error", [(np.ones(3), ValueError), (-np.ones(9), ValueError),
                                      (np.full(9, np.nan), ValueError), (["a"] * 9, TypeError)])
def test_bad_sample_weight_is_refused(w, error, rng):
    X, T = _data(rng, (3, 4, 2), 9, "half_sse")
    with pytest.raises(error, match="sample_weight"):
        nbmlp.MLP((3, 4, 2)).fit(X, T, epochs=1, sample_weight=w)


def _act_numpy(name, z):
    return {"leaky_relu": np.where(z > 0, z, 0.01 * z),
            "softplus": np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))}[name]


@pytest.mark.parametrize("name", ["leaky_relu", "softplus"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_new_activations_forward_and_derivative_from_the_output(name, dtype, rng):
    z = (rng.normal(size=(7, 5)) * 4).astype(dtype)
    z[0, :3] = [0.0, -30.0, 30.0]
    h = np.zeros_like(z)
    b = np.zeros(5, dtype)
    compiled.activation_forward(h, z.copy(), b, compiled.KINDS["activation"][name], 7)
    expected = _act_numpy(name, z.astype(np.float64))
    _assert_same(h, expected, TOL[np.dtype(dtype)] if dtype == "float32" else 1e-15, "forward")
    g = np.ones_like(z)
    compiled.activation_backward(g, h, compiled.KINDS["activation"][name], 7)
    eps = 1e-6
    z64 = z.astype(np.float64)
    slope = (_act_numpy(name, z64 + eps) - _act_numpy(name, z64 - eps)) / (2 * eps)
    away = np.abs(z64) > 1e-3  # leaky_relu's kink at 0 takes the slope of z <= 0 by convention
    _assert_same(g[away], slope[away], 1e-5 if dtype == "float64" else 1e-3, "derivative")


def test_memory_does_not_grow_with_epochs_when_the_history_is_off(rng):
    import tracemalloc

    X, T = _data(rng, (3, 4, 2), 9, "half_sse")
    net = nbmlp.MLP((3, 4, 2), seed=5)
    net.fit(X, T, epochs=5, lr=0.01, history="none", optimizer="momentum")  # compile outside the measurement
    peaks = []
    for epochs in (5000, 50000):
        tracemalloc.start()
        net.fit(X, T, epochs=epochs, lr=0.01, history="none", optimizer="momentum")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert net.loss_history == []
    # 45 000 more recorded losses would take > 360 kB in a list of floats; a chunk holds at most
    # compiled.MAX_CHUNK_EPOCHS epochs' arrays
    assert peaks[1] < peaks[0] + 50_000, peaks


#: (rows, width) of the layer-function tests: n = 1, width 1, odd sizes, and one large enough that the
#: parallel compilation cuts every activation into blocks (blocks() > 1 with two or more threads).
LAYER_SHAPES = [(1, 1), (1, 7), (9, 1), (13, 17), (600, 450)]


def _both(f, *args):
    """Run f's parallel compilation and its serial twin on copies of args; returns both copies."""
    out = []
    for g in (f, f.serial):
        copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        with parallel.region():
            result = g(*copies)
        out.append((copies, result))
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(nbmlp.ACTIVATIONS))
def test_layer_functions_parallel_equal_serial_and_the_numpy_twins(name, dtype, rng):
    op = ops.ACTIVATIONS[name]
    tol = TOL[np.dtype(dtype)] if dtype == "float32" else 1e-13
    for B, d in LAYER_SHAPES:
        z = (rng.normal(size=(B + 2, d)) * 3).astype(dtype)  # two rows past B: must stay untouched
        b = rng.normal(size=d).astype(dtype)
        (par, _), (ser, _) = _both(compiled.activation_forward, np.zeros_like(z), z, b, op.code, B)
        for x, y in zip(par, ser, strict=True):
            assert np.array_equal(x, y), (name, B, d, "forward")
        h, zb = ser[0], ser[1]
        np.testing.assert_array_equal(zb[B:], z[B:])
        np.testing.assert_array_equal(h[B:], 0)
        expected = np.zeros((B, d))
        getattr(reference, op.forward)(expected, z[:B].astype(np.float64) + b)
        _assert_same(h[:B], expected, tol, f"{name} forward {B}x{d}")
        if op.backward is None:
            continue
        dh = rng.normal(size=(B + 2, d)).astype(dtype)
        (par, _), (ser, _) = _both(compiled.activation_backward, dh, h, op.code, B)
        assert np.array_equal(par[0], ser[0]), (name, B, d, "backward")
        expected = np.zeros((B, d))
        getattr(reference, op.backward)(expected, dh[:B].astype(np.float64), h[:B].astype(np.float64))
        _assert_same(ser[0][:B], expected, tol, f"{name} backward {B}x{d}")
        np.testing.assert_array_equal(ser[0][B:], dh[B:])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_layer_and_input_sigmoid_compute_in_the_arrays_float_type(dtype, rng):
    """σ of a layer (+ b first) and of the input: bit for bit the scalar σ of the dtype (float32 arithmetic for
    float32, not float64 math rounded), and near the exact σ."""
    rtol = EXP_F32_REL_TOL if dtype == "float32" else SIGMOID_REL_TOL
    for B, d in LAYER_SHAPES:
        z = (rng.normal(size=(B, d)) * 4).astype(dtype)
        b = rng.normal(size=d).astype(dtype)
        zb = z + b  # rounded once in dtype, as the layer adds the bias
        for f in (compiled.activation_forward, compiled.activation_forward.serial):
            h, zc = np.full_like(z, np.nan), z.copy()
            with parallel.region():
                f(h, zc, b, ops.ACTIVATIONS["sigmoid"].code, B)
            np.testing.assert_array_equal(zc, zb)
            np.testing.assert_array_equal(h, sigmoid_elementwise(zb), err_msg=f"layer {B}x{d}")
        np.testing.assert_allclose(h.astype(np.longdouble), sigmoid_exact(zb), rtol=rtol, atol=0.0)
        for f in (compiled.input_forward, compiled.input_forward.serial):  # in blocks of rows, or not
            h0 = np.full_like(z, np.nan)
            with parallel.region():
                f(h0, z, True)
            np.testing.assert_array_equal(h0, sigmoid_elementwise(z), err_msg=f"input {B}x{d}")
            np.testing.assert_allclose(h0.astype(np.longdouble), sigmoid_exact(z), rtol=rtol, atol=0.0)
            h0 = np.full_like(z, np.nan)
            with parallel.region():
                f(h0, z, False)
            np.testing.assert_array_equal(h0, z)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bias_gradient_parallel_equals_serial_and_numpy(dtype, rng):
    for B, d in LAYER_SHAPES:
        g = rng.normal(size=(B + 2, d)).astype(dtype)
        (par, _), (ser, _) = _both(compiled.bias_backward, np.full(d, np.nan, dtype), g, B)
        assert np.array_equal(par[0], ser[0]), (B, d)
        _assert_same(ser[0], g[:B].astype(np.float64).sum(axis=0), TOL[np.dtype(dtype)], f"bias {B}x{d}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rule", list(ops.OPTIMIZERS))
def test_update_parallel_equals_serial_and_the_optimizer_twins(rule, dtype, rng):
    """compiled.update on every parameter (one large enough for blocks) against nbmlp.reference's update rules,
    with L2 decay on the weights (the parameters at even positions: W_1, b_1, W_2, ...)."""
    sizes = (1, 7, 300_000)
    decay = 0.01
    hyper = dict(lr=0.05, momentum=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8)
    code = ops.OPTIMIZERS[rule].code
    params = tuple(rng.normal(size=s).astype(dtype) for s in sizes)
    grads = tuple(rng.normal(size=s).astype(dtype) for s in sizes)
    s1 = tuple(rng.normal(size=s).astype(dtype) * 0.1 for s in sizes)
    s2 = tuple(rng.random(size=s).astype(dtype) * 0.1 for s in sizes)
    snapshot = tuple(np.zeros(s, dtype) for s in sizes)
    t = 3
    results = []
    for f in (compiled.update, compiled.update.serial):
        p, a, v, snap = (tuple(x.copy() for x in group) for group in (params, s1, s2, snapshot))
        with parallel.region():
            bad = f(p, grads, snap, a, v, code, hyper["lr"], hyper["momentum"], hyper["beta1"], hyper["beta2"],
                    hyper["epsilon"], t, decay)
        assert bad == 0
        results.append((p, a, v, snap))
    for x, y in zip(results[0], results[1], strict=True):
        for u, w in zip(x, y, strict=True):
            assert np.array_equal(u, w), rule
    p, a, v, snap = results[1]
    tol = TOL[np.dtype(dtype)] if dtype == "float32" else 1e-14
    for q in range(len(sizes)):
        np.testing.assert_array_equal(snap[q], params[q])
        theta = params[q].astype(np.float64)
        m1, m2 = s1[q].astype(np.float64), s2[q].astype(np.float64)
        g = grads[q].astype(np.float64) + (decay * theta if q % 2 == 0 else 0.0)
        if rule == "sgd":
            reference.sgd_update(theta, g, hyper["lr"])
        elif rule == "adam":
            reference.adam_update(theta, m1, m2, g, hyper["lr"], hyper["beta1"], hyper["beta2"], hyper["epsilon"], t)
        else:
            getattr(reference, ops.OPTIMIZERS[rule].kernel)(theta, m1, g, hyper["lr"], hyper["momentum"])
        _assert_same(p[q], theta, tol, f"{rule} parameter {sizes[q]}")
        if ops.OPTIMIZERS[rule].state:
            _assert_same(a[q], m1, tol, f"{rule} first state {sizes[q]}")
        if rule == "adam":
            _assert_same(v[q], m2, tol, f"{rule} second state {sizes[q]}")


def test_update_counts_the_slots_it_made_non_finite(rng):
    p = (np.array([1.0, 2.0, 3.0]),)
    g = (np.array([0.0, 1e308, -1e308]),)
    snap = (np.zeros(3),)
    bad = compiled.update.serial(p, g, snap, (np.zeros(3),), (np.zeros(3),), ops.OPTIMIZERS["sgd"].code, 10.0, 0.0,
                                 0.9, 0.999, 1e-8, 1, 0.0)
    assert bad == 2
    np.testing.assert_array_equal(snap[0], [1.0, 2.0, 3.0])
    assert p[0][0] == 1.0 and np.isinf(p[0][1:]).all()


def test_a_parallel_run_equals_a_serial_run_bit_for_bit(rng):
    """Mini-batch Adam on a net whose products, activations and update all run in blocks when parallel."""
    X = rng.normal(size=(600, 64))
    y = rng.integers(0, 10, 600)
    nets = []
    for mode in ("parallel", "serial"):
        previous = parallel.set_mode(mode)
        try:
            net = nbmlp.MLP((64, 512, 10), seed=1, activation="relu", loss="cross_entropy")
            net.fit(X, np.eye(10)[y], epochs=2, lr=1e-3, optimizer="adam", batch_size=300, seed=0)
        finally:
            parallel.set_mode(previous)
        nets.append(net)
    for p, q in zip(nets[0].W + nets[0].b, nets[1].W + nets[1].b, strict=True):
        assert np.array_equal(p, q)
    assert nets[0].loss_history == nets[1].loss_history


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_l2_penalty_in_lanes_equals_the_plain_sum(dtype, rng):
    for size in (1, 7, compiled.L2_LANES, 17, 1001):
        w = rng.normal(size=size).astype(dtype)
        expected = 0.5 * np.sum(w.astype(np.float64) ** 2)
        assert compiled.l2_forward(w) == pytest.approx(expected, rel=1e-14, abs=0.0), size


CACHE_SCRIPT = textwrap.dedent("""
    import numpy as np, nbmlp
    from nbmlp import compiled, parallel
    parallel.set_mode("serial")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    nbmlp.MLP((3, 4, 2), seed=0).fit(X, np.eye(2)[y], epochs=2, optimizer="adam", batch_size=8)
    stats = compiled.SERIAL_DRIVERS["train_steps"].stats
    print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
""")


def test_the_training_loop_loads_from_the_disk_cache_in_a_new_process(tmp_path):
    """The drivers take no functions as arguments, so Numba can cache them: a second process compiles nothing."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NBMLP_QUIET": "1"}
    runs = [subprocess.run([sys.executable, "-c", CACHE_SCRIPT], env=env, capture_output=True, text=True, check=True,
                           timeout=900).stdout.split() for _ in range(2)]
    assert runs[0] == ["0", "1"], runs
    assert runs[1] == ["1", "0"], runs
