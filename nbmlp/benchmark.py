r"""``python -m nbmlp bench`` / ``python bench/compare.py``: time nbmlp against NumPy, PyTorch and JAX.

What is timed, for every implementation on the same network, data and dtype:

* **a full-batch training epoch** -- forward pass, loss, backward pass (no
  gradient with respect to X) and the plain SGD update of every parameter, on
  the note's kind of network: sigmoid input h0 = σ(X), sigmoid layers, loss
  ½ Σ_i Σ_k (t_ik - h_ik)^2;
* **each kernel** of an engine's epoch (summed over the layers);
* **a sweep over n** on 64-128-10 showing where parallel kernels start to win;
* **compile time**: the first epoch in a fresh process with an empty Numba
  cache, and again in a second fresh process that loads the on-disk cache;
* **the main job**: ``python -m nbmlp`` (cached) against ``python -c "import nbmlp"``.

Each of these is a :class:`Section` of the table :data:`SECTIONS` (``--only`` / ``--skip`` choose;
``--quick`` runs the quick ones on small sizes); a target is judged by :func:`verdict` from the
spread of the repeats, never from medians alone.

Implementations:

* ``fit``            -- ``MLP.fit(X, T, epochs, lr)`` itself: what a user runs for
  full-batch SGD, through the public API only;
* ``tuned``          -- the tuned loop tier, one kernel call per formula;
* ``loops``, ``loops-serial``, ``loops-parallel`` -- the literal loop tier;
* ``numpy``          -- the vectorized NumPy reference (its products call BLAS);
* ``torch``          -- PyTorch eager mode with autograd (if installed);
* ``jax``            -- JAX, the whole step under ``jax.jit`` (if installed).

The kernel engines all run the same epoch (:func:`engine_epoch`): the pass driver
of ``MLP`` (``forward_pass``, ``loss_value``, ``backward_pass``) with buffers
allocated once, then the SGD update.  Warm timings exclude compilation: every
implementation runs a few epochs first.  Implementations are timed round-robin
(one repeat of each, then the next repeat), so the noise of a shared machine
falls on all of them alike, with a short pause before each repeat so that the
worker threads another library leaves spinning (OpenBLAS, XLA, OpenMP) are
asleep; the tables give medians.

GF/s counts the multiply-adds of the products only (2 flops each):
forward n Σ_l d_{l-1} d_l, ∂L/∂W the same, ∂L/∂h_{l-1} for l >= 2.  "% GEMM" is
that rate over the rate of one large BLAS product (1024 x 784 · 784 x 1024)
measured in the same run and dtype.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: (sizes, n) of the headline cases; the issue's three sizes.
CASES = (((4, 5, 3), 150), ((64, 128, 10), 256), ((784, 1024, 10), 1024))
QUICK_CASES = (((4, 5, 3), 150), ((64, 128, 10), 256))
DTYPES = ("float64", "float32")
SWEEP_SIZES = (64, 128, 10)
SWEEP_N = (8, 32, 128, 512, 2048, 8192)
KERNEL_ENGINES = ("tuned", "loops", "loops-serial", "loops-parallel", "numpy")
#: Each timed repeat runs epochs until it has taken at least this long.
MIN_REPEAT_SECONDS = 0.02
#: Pause before each timed repeat.  OpenBLAS's worker threads busy-wait for
#: ~0.1 s after a call (as do XLA's and OpenMP's); on 2 cores a spinning
#: thread of the previous implementation would halve the next one's parallel
#: speed.  The pause lets them go to sleep first.
PAUSE_SECONDS = 0.15


# ---------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import llvmlite
    import numba

    from . import __version__

    info = {
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nbmlp": __version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    }
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        info["numba_threading_layer"] = "not initialised"
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                                "threading_layer")}
                        for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    for name in ("torch", "jax"):
        try:
            module = __import__(name)
            info[name] = module.__version__
        except ImportError:
            info[name] = None
    return info


# ---------------------------------------------------------------------------
# Problems and implementations
# ---------------------------------------------------------------------------


def make_problem(sizes, n, dtype, seed=0):
    """Random X (n x d0, standard normal) and one-hot T; the learning rate keeps many epochs stable."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    T = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n)]
    return X, T, 0.1 / n


def product_flops(sizes, n) -> int:
    """2 x the multiply-adds of the three products of one epoch (see the module docstring)."""
    layer = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * n * (2 * sum(layer) + sum(layer[1:]))


def engine_epoch(ops, net, X, T, lr, timer=None):
    """A closure that runs one epoch of ``net`` through the kernels of ``ops`` and returns its loss.

    The epoch is the net's own pass driver -- ``MLP.forward_pass`` (σ(X) included:
    nothing is cached between epochs), ``MLP.loss_value``, ``MLP.backward_pass``
    without ∂L/∂X -- then ``sgd_update`` of every parameter.  The first epoch
    allocates the buffers of the passes; later ones refill them.  With ``timer``
    (a dict), each kernel call's time is added to timer[name].
    """
    if timer is not None:
        ops = _timed(ops, timer)
    params = [a.reshape(-1) for a in net.W + net.b]
    forward = backward = grads = None

    def epoch():
        nonlocal forward, backward, grads
        forward = net.forward_pass(X, out=forward, ops=ops)
        loss = net.loss_value(*forward, T, ops=ops)
        backward = net.backward_pass(*forward, T, input_gradients=False, out=backward, ops=ops)
        if grads is None:
            grads = [g.reshape(-1) for g in backward[0] + backward[1]]
        for p, g in zip(params, grads):
            ops.sgd_update(p, g, lr)
        return loss

    return epoch


def _timed(ops, timer):
    from types import SimpleNamespace

    from .engines import KERNEL_NAMES

    def wrap(name, f):
        def call(*args):
            t = time.perf_counter()
            out = f(*args)
            timer[name] = timer.get(name, 0.0) + time.perf_counter() - t
            return out
        return call

    return SimpleNamespace(**{k: wrap(k, getattr(ops, k)) for k in KERNEL_NAMES})


def _runner_engine(engine, sizes, X, T, lr, dtype):
    from .engines import get_engine
    from .network import MLP

    net = MLP(sizes, seed=0, dtype=dtype, engine=engine)
    epoch = engine_epoch(get_engine(engine), net, X, T, lr)

    def run(epochs):
        for _ in range(epochs):
            epoch()
    return run


def _runner_fit(sizes, X, T, lr, dtype):
    """``MLP.fit`` itself, full-batch plain SGD: what a user's ``net.fit(X, T, epochs, lr)`` runs."""
    from .network import MLP

    net = MLP(sizes, seed=0, dtype=dtype)
    return lambda epochs: net.fit(X, T, epochs=epochs, lr=lr)


def _runner_torch(sizes, X, T, lr, dtype):
    import torch

    from .network import MLP

    net = MLP(sizes, seed=0, dtype=dtype)
    Xt, Tt = torch.from_numpy(X.copy()), torch.from_numpy(T.copy())
    params = [torch.tensor(a, requires_grad=True) for a in net.W + net.b]
    L = len(net.W)

    def run(epochs):
        for _ in range(epochs):
            h = torch.sigmoid(Xt)
            for l in range(L):
                h = torch.sigmoid(h @ params[l] + params[L + l])
            loss = 0.5 * ((Tt - h) ** 2).sum()
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= lr * p.grad
                    p.grad = None
    return run


def _runner_jax(sizes, X, T, lr, dtype):
    import jax
    import jax.numpy as jnp

    from .network import MLP

    net = MLP(sizes, seed=0, dtype=dtype)
    L = len(net.W)

    def loss_fn(params, X, T):
        h = jax.nn.sigmoid(X)
        for l in range(L):
            h = jax.nn.sigmoid(h @ params[l] + params[L + l])
        return 0.5 * jnp.sum((T - h) ** 2)

    @jax.jit
    def step(params, X, T):
        loss, grads = jax.value_and_grad(loss_fn)(params, X, T)
        return loss, [p - lr * g for p, g in zip(params, grads)]

    state = {"params": [jnp.asarray(a) for a in net.W + net.b]}
    Xj, Tj = jnp.asarray(X), jnp.asarray(T)

    def run(epochs):
        params = state["params"]
        for _ in range(epochs):
            loss, params = step(params, Xj, Tj)
        jax.block_until_ready(params)
        state["params"] = params
    return run


def _optional(name) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def implementations(sizes, X, T, lr, dtype, *, torch=True, jax=True, engines=KERNEL_ENGINES):
    runners = {"fit": _runner_fit(sizes, X, T, lr, dtype)}
    for engine in engines:
        runners[engine] = _runner_engine(engine, sizes, X, T, lr, dtype)
    if torch and _optional("torch"):
        runners["torch"] = _runner_torch(sizes, X, T, lr, dtype)
    if jax and _optional("jax"):
        runners["jax"] = _runner_jax(sizes, X, T, lr, dtype)
    return runners


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def _calibrate(run, max_seconds, epochs=None) -> tuple:
    """First call time (compile or cache load), then epochs per repeat so one repeat lasts MIN_REPEAT_SECONDS.

    The epochs are found by timing whole repeats (doubling), not by scaling one epoch's time: a call's
    fixed cost (argument checks, setting up the run: ~1 ms for ``MLP.fit``) would otherwise be
    divided by too few epochs and reported as epoch time.  ``epochs``: that many per repeat instead.
    """
    t = time.perf_counter()
    run(1)
    first = time.perf_counter() - t
    run(2)  # warm: anything compiled lazily for a second call
    if epochs is not None:
        t = time.perf_counter()
        run(epochs)
        return first, epochs, (time.perf_counter() - t) / epochs
    epochs = 1
    while True:
        t = time.perf_counter()
        run(epochs)
        seconds = max(time.perf_counter() - t, 1e-7)
        if seconds >= MIN_REPEAT_SECONDS or epochs >= 100000 or seconds >= max_seconds:
            return first, epochs, seconds / epochs
        epochs = min(100000, max(2 * epochs, int(epochs * MIN_REPEAT_SECONDS / seconds)))


def time_round_robin(runners: dict, repeats: int, slow_seconds: float = 1.0, epochs: int | None = None) -> dict:
    """Median seconds per epoch of each runner, timed one repeat of each at a time.

    A repeat is one call of a runner, for ``epochs`` epochs (None: as many as last MIN_REPEAT_SECONDS).
    """
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"time_round_robin: epochs must be a positive integer or None, got {epochs!r}")
    plan = {}
    for name, run in runners.items():
        first, epochs_per_repeat, one = _calibrate(run, slow_seconds, epochs)
        plan[name] = {"first_call_s": first, "epochs_per_repeat": epochs_per_repeat,
                      "repeats": repeats if one < slow_seconds else max(2, repeats // 3), "times": []}
    for r in range(repeats):
        for name, run in runners.items():
            if r >= plan[name]["repeats"]:
                continue
            e = plan[name]["epochs_per_repeat"]
            time.sleep(PAUSE_SECONDS)
            t = time.perf_counter()
            run(e)
            plan[name]["times"].append((time.perf_counter() - t) / e)
    for p in plan.values():
        p["median_s"] = statistics.median(p["times"])
    return plan


def gemm_rate(dtype, repeats=15) -> float:
    """GF/s of one 1024 x 784 · 784 x 1024 product through NumPy (BLAS), median of ``repeats``."""
    rng = np.random.default_rng(1)
    a = rng.random((1024, 784)).astype(dtype)
    b = rng.random((784, 1024)).astype(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * 1024 * 784 * 1024 / statistics.median(times) / 1e9


def kernel_times(engine, sizes, X, T, lr, dtype, epochs) -> dict:
    """Median seconds per epoch spent in each kernel (summed over layers), over ``epochs`` timed epochs."""
    from .engines import get_engine
    from .network import MLP

    net = MLP(sizes, seed=0, dtype=dtype, engine=engine)
    per_epoch = []
    timer: dict = {}
    epoch = engine_epoch(get_engine(engine), net, X, T, lr, timer=timer)
    epoch()  # warm
    for _ in range(epochs):
        timer.clear()
        epoch()
        per_epoch.append(dict(timer))
    return {k: statistics.median(d[k] for d in per_epoch) for k in per_epoch[0]}


def _forced(run, mode):
    """``run`` with every kernel call serial or parallel (``parallel.set_mode``), then the policy as it was."""
    from . import parallel

    def go(epochs):
        previous = parallel.set_mode(mode)
        try:
            return run(epochs)
        finally:
            parallel.set_mode(previous)
    return go


def sweep(repeats, dtype="float64") -> list:
    """Epoch time per n on SWEEP_SIZES: literal serial/parallel, tuned forced serial/parallel, MLP.fit, NumPy."""
    rows = []
    for n in SWEEP_N:
        X, T, lr = make_problem(SWEEP_SIZES, n, dtype)
        runners = {e: _runner_engine(e, SWEEP_SIZES, X, T, lr, dtype) for e in ("loops-serial", "loops-parallel",
                                                                                   "numpy")}
        tuned_serial = _runner_engine("tuned", SWEEP_SIZES, X, T, lr, dtype)
        tuned_parallel = _runner_engine("tuned", SWEEP_SIZES, X, T, lr, dtype)

        runners["tuned serial"] = _forced(tuned_serial, "serial")
        runners["tuned parallel"] = _forced(tuned_parallel, "parallel")
        runners["MLP.fit"] = _runner_fit(SWEEP_SIZES, X, T, lr, dtype)
        plan = time_round_robin(runners, repeats)
        for name, p in plan.items():
            rows.append({"sizes": list(SWEEP_SIZES), "n": n, "dtype": dtype, "impl": name,
                         "median_s": p["median_s"], "work": n * sum(a * b for a, b in
                                                                    zip(SWEEP_SIZES[:-1], SWEEP_SIZES[1:]))})
    return rows


# ---------------------------------------------------------------------------
# Fresh processes: compile time, cache load, main job
# ---------------------------------------------------------------------------

_FIRST_CALL = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import nbmlp
from nbmlp.benchmark import make_problem, engine_epoch
t_import = time.perf_counter() - t0
out = {"import_s": t_import}
X, T, lr = make_problem((4, 5, 3), 150, "float64")
t = time.perf_counter(); nbmlp.MLP((4, 5, 3), seed=0).fit(X, T, epochs=1, lr=lr)
out["MLP.fit 4-5-3"] = time.perf_counter() - t
for engine in ("loops", "tuned"):
    X, T, lr = make_problem((64, 128, 10), 2048, "float64")
    net = nbmlp.MLP((64, 128, 10), seed=0, engine=engine)
    t = time.perf_counter(); engine_epoch(nbmlp.get_engine(engine), net, X, T, lr)()
    out[engine + " epoch 64-128-10 n=2048"] = time.perf_counter() - t
print(json.dumps(out))
"""


def _python_env():
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def compile_times() -> dict:
    """First calls in a fresh process with an empty Numba cache, then in a second one that loads it."""
    with tempfile.TemporaryDirectory() as cache:
        env = _python_env()
        env["NUMBA_CACHE_DIR"] = cache
        result = {}
        for label in ("cold (compile, empty cache)", "cached (fresh process, on-disk cache)"):
            out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True,
                                 check=True, timeout=1800)
            result[label] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main_job_overhead(repeats=3) -> dict:
    """Wall time of ``python -m nbmlp`` (cache warmed first) and of ``python -c "import nbmlp"``: medians."""
    env = _python_env()

    def wall(cmd):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True, timeout=600)
        return time.perf_counter() - t

    job = [sys.executable, "-m", "nbmlp"]
    imp = [sys.executable, "-c", "import nbmlp"]
    wall(job)  # fills the on-disk cache if needed
    jobs, imports = [], []
    for _ in range(repeats):
        jobs.append(wall(job))
        imports.append(wall(imp))
    return {"main_job_s": statistics.median(jobs), "import_s": statistics.median(imports),
            "overhead_s": statistics.median(jobs) - statistics.median(imports), "repeats": repeats,
            "main_job_times_s": jobs, "import_times_s": imports}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

ORDER = ("fit", "tuned", "loops", "loops-serial", "loops-parallel", "numpy", "torch", "jax")


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def epoch_table(rows) -> str:
    lines = ["| network, n | dtype | implementation | median / epoch | speed vs NumPy | GF/s | % GEMM |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {'-'.join(map(str, r['sizes']))}, n={r['n']} | {r['dtype']} | {r['impl']} | "
                     f"{_fmt_time(r['median_s'])} | {r['speedup_vs_numpy']:.2f}× | {r['gflops']:.2f} | "
                     f"{r['pct_gemm']:.1f} |")
    return "\n".join(lines)


def headline_table(rows) -> str:
    cases = []
    for r in rows:
        key = (tuple(r["sizes"]), r["n"], r["dtype"])
        if key not in cases:
            cases.append(key)
    impls = [i for i in ("fit", "tuned", "loops", "numpy", "torch", "jax") if any(r["impl"] == i for r in rows)]
    lines = ["| network, n | dtype | " + " | ".join(impls) + " |", "|---|---|" + "---:|" * len(impls)]
    for sizes, n, dtype in cases:
        cells = []
        for impl in impls:
            match = [r for r in rows if (tuple(r["sizes"]), r["n"], r["dtype"], r["impl"]) == (sizes, n, dtype, impl)]
            cells.append(f"{_fmt_time(match[0]['median_s'])} ({match[0]['speedup_vs_numpy']:.2g}×)" if match else "–")
        lines.append(f"| {'-'.join(map(str, sizes))}, n={n} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kernel_table(krows) -> str:
    names = []
    for r in krows:
        for k in r["kernels"]:
            if k not in names:
                names.append(k)
    lines = ["| network, n | dtype | engine | " + " | ".join(names) + " |", "|---|---|---|" + "---:|" * len(names)]
    for r in krows:
        cells = [_fmt_time(r["kernels"][k]) if k in r["kernels"] else "–" for k in names]
        lines.append(f"| {'-'.join(map(str, r['sizes']))}, n={r['n']} | {r['dtype']} | {r['engine']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(srows) -> str:
    impls = []
    for r in srows:
        if r["impl"] not in impls:
            impls.append(r["impl"])
    ns = sorted({r["n"] for r in srows})
    lines = ["| n | multiply-adds / forward | " + " | ".join(impls) + " |", "|---:|---:|" + "---:|" * len(impls)]
    for n in ns:
        cells = []
        for impl in impls:
            m = [r for r in srows if r["n"] == n and r["impl"] == impl]
            cells.append(_fmt_time(m[0]["median_s"]) if m else "–")
        work = [r["work"] for r in srows if r["n"] == n][0]
        lines.append(f"| {n} | {work:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(low: float, high: float, target: float, *, at_least: bool = True) -> str:
    """"met", "not met" or "unclear" for a figure whose repeats span [low, high] and a target.

    ``at_least``: the figure must be >= target (a speed ratio), else <= target (a time).  "met" only
    when the whole spread clears the target, "not met" when none of it does; otherwise the noise
    decides and the answer is "unclear".  Every target of the benchmark is judged here.
    """
    if at_least:
        return "met" if low >= target else "not met" if high < target else "unclear"
    return "met" if high <= target else "not met" if low > target else "unclear"


def ratio_spread(mine_times, their_times) -> tuple:
    """(lowest, median, highest) of their time / my time over the repeats: the speed ratio and its spread."""
    return (min(their_times) / max(mine_times), statistics.median(their_times) / statistics.median(mine_times),
            max(their_times) / min(mine_times))


#: (sizes, n, competitor, needed speed ratio) of the full-batch epoch targets, nbmlp's MLP.fit against them.
EPOCH_TARGETS = (((4, 5, 3), 150, "numpy", 10.0), ((4, 5, 3), 150, "torch", 30.0),
                 ((64, 128, 10), 256, "numpy", 1.0), ((784, 1024, 10), 1024, "numpy", 0.5))
#: python -m nbmlp (cached) minus python -c "import nbmlp", seconds.
MAIN_JOB_TARGET_S = 1.5


def evaluate_targets(rows, main_job) -> list:
    def times(sizes, n, dtype, impl):
        m = [r for r in rows if tuple(r["sizes"]) == sizes and r["n"] == n and r["dtype"] == dtype
             and r["impl"] == impl]
        return m[0]["times_s"] if m else None

    targets = []
    for dtype in DTYPES:
        for sizes, n, other, need in EPOCH_TARGETS:
            mine, theirs = times(sizes, n, dtype, "fit"), times(sizes, n, dtype, other)
            if mine is None or theirs is None:
                continue
            low, mid, high = ratio_spread(mine, theirs)
            targets.append({"case": f"{'-'.join(map(str, sizes))}, n={n}, {dtype}",
                            "target": f"nbmlp (MLP.fit) ≥ {need:g}× {other}",
                            "achieved": f"{mid:.2f}× ({low:.2f}–{high:.2f})", "verdict": verdict(low, high, need)})
    if main_job:
        jobs, imports = main_job["main_job_times_s"], main_job["import_times_s"]
        low, high = min(jobs) - max(imports), max(jobs) - min(imports)
        targets.append({"case": "python -m nbmlp (cached) minus python -c 'import nbmlp'",
                        "target": f"≤ {MAIN_JOB_TARGET_S:g} s",
                        "achieved": f"{main_job['overhead_s']:.2f} s ({low:.2f}–{high:.2f})",
                        "verdict": verdict(low, high, MAIN_JOB_TARGET_S, at_least=False)})
    return targets


def target_table(targets) -> str:
    lines = ["| case | target | achieved: median (spread of the repeats) | verdict |", "|---|---|---:|:---:|"]
    for t in targets:
        mark = {"met": "met", "not met": "**not met**", "unclear": "unclear (repeats overlap the target)"}
        lines.append(f"| {t['case']} | {t['target']} | {t['achieved']} | {mark[t['verdict']]} |")
    return "\n".join(lines)


def plot(result, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = result["epochs"]
    cases = []
    for r in rows:
        key = f"{'-'.join(map(str, r['sizes']))}\nn={r['n']} {r['dtype'][5:]}"
        if key not in cases:
            cases.append(key)
    impls = [i for i in ORDER if any(r["impl"] == i for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    width = 0.8 / len(impls)
    for m, impl in enumerate(impls):
        xs, ys = [], []
        for c, key in enumerate(cases):
            match = [r for r in rows if f"{'-'.join(map(str, r['sizes']))}\nn={r['n']} {r['dtype'][5:]}" == key
                     and r["impl"] == impl]
            if match:
                xs.append(c + (m - len(impls) / 2 + 0.5) * width)
                ys.append(match[0]["speedup_vs_numpy"])
        ax.bar(xs, ys, width, label=impl)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)), cases, fontsize=8)
    ax.set_ylabel("epochs per second relative to NumPy (log)")
    ax.set_title("full-batch epoch, same run")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    srows = result.get("sweep", [])
    for impl in dict.fromkeys(r["impl"] for r in srows):
        pts = sorted((r["n"], r["median_s"] / r["n"]) for r in srows if r["impl"] == impl)
        ax.plot([p[0] for p in pts], [p[1] * 1e6 for p in pts], marker="o", label=impl)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (64-128-10, float64)")
    ax.set_ylabel("µs per epoch per sample (log)")
    ax.set_title("sweep over n" if srows else "sweep over n (not run)")
    if srows:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


def markdown_report(result) -> str:
    m = result["machine"]
    blas = m["blas"] if isinstance(m["blas"], str) else "; ".join(
        f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['num_threads']} threads, "
        f"{b['threading_layer']})" for b in m["blas"])
    parts = [
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}  ",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, Numba {m['numba']} "
        f"({m['numba_threads']} threads, threading layer {m['numba_threading_layer']}), llvmlite {m['llvmlite']}, "
        f"NumPy {m['numpy']}, BLAS: {blas}, PyTorch {m['torch']}, JAX {m['jax']}, Python {m['python']}.  ",
        "BLAS GEMM rate in this run (1024x784 · 784x1024): "
        + ", ".join(f"{k} {v:.1f} GF/s" for k, v in result["gemm_gflops"].items()) + ".",
        "", "### Targets", "", target_table(result["targets"]),
    ]
    if result.get("epochs"):
        parts += ["", "### Full-batch epoch (median; speed vs NumPy = NumPy time / time)", "",
                  epoch_table(result["epochs"])]
    if result.get("kernels"):
        parts += ["", "### Per kernel (median seconds per epoch, summed over layers)", "",
                  kernel_table(result["kernels"])]
    if result.get("sweep"):
        parts += ["", f"### Sweep over n ({'-'.join(map(str, SWEEP_SIZES))}, float64, median per epoch)", "",
                  sweep_table(result["sweep"])]
    if result.get("compile"):
        parts += ["", "### First call (compile time is excluded from every timing above)", "",
                  "| process | " + " | ".join(next(iter(result["compile"].values()))) + " |",
                  "|---|" + "---:|" * len(next(iter(result["compile"].values())))]
        for label, d in result["compile"].items():
            parts.append(f"| {label} | " + " | ".join(_fmt_time(v) for v in d.values()) + " |")
    if result.get("main_job"):
        j = result["main_job"]
        parts += ["", f"Main job: `python -m nbmlp` {j['main_job_s']:.2f} s, `python -c \"import nbmlp\"` "
                  f"{j['import_s']:.2f} s: overhead {j['overhead_s']:.2f} s (medians of {j['repeats']})."]
    for sec in SECTIONS:  # sections from bench/<topic>.py bring their own tables
        figures = result.get(sec.name)
        if isinstance(figures, dict) and "markdown" in figures:
            parts += ["", f"### {sec.title}", "", figures["markdown"]]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One part of the benchmark: what it times, whether --quick runs it, and about how long it takes.

    ``run(args, result)`` returns the section's JSON-able figures (stored as result[name]);
    ``estimate_s(args)`` is the expected duration on the 2-core development machine, printed before
    the run.  Sections from a stand-alone script bench/<topic>.py are added with :func:`script_section`.
    """

    name: str
    title: str
    run: object
    estimate_s: object
    quick: bool = False


def _n_cases(args):
    return len(QUICK_CASES if args.quick else CASES) * len(args.dtypes)


def _section_epochs(args, result):
    if not (args.no_jax or args.quick) and _optional("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)
    cases = QUICK_CASES if args.quick else CASES
    result["gemm_gflops"] = gemm = {dt: gemm_rate(dt, repeats=5 if args.quick else 15) for dt in args.dtypes}
    rows = []
    for sizes, n in cases:
        for dtype in args.dtypes:
            X, T, lr = make_problem(sizes, n, dtype)
            runners = implementations(sizes, X, T, lr, dtype, torch=not args.no_torch,
                                      jax=not (args.no_jax or args.quick))
            _say(f"timing {'-'.join(map(str, sizes))} n={n} {dtype}: {', '.join(runners)}")
            plan = time_round_robin(runners, args.repeats)
            flops = product_flops(sizes, n)
            base = plan["numpy"]["median_s"]
            for impl in [i for i in ORDER if i in plan]:
                p = plan[impl]
                gf = flops / p["median_s"] / 1e9
                rows.append({"sizes": list(sizes), "n": n, "dtype": dtype, "impl": impl, "median_s": p["median_s"],
                             "times_s": p["times"], "epochs_per_repeat": p["epochs_per_repeat"],
                             "first_call_s": p["first_call_s"], "speedup_vs_numpy": base / p["median_s"],
                             "gflops": gf, "pct_gemm": 100.0 * gf / gemm[dtype]})
    return rows


def _section_kernels(args, result):
    krows = []
    for sizes, n in (QUICK_CASES if args.quick else CASES):
        for dtype in args.dtypes:
            X, T, lr = make_problem(sizes, n, dtype)
            for engine in KERNEL_ENGINES:
                slow = engine.startswith("loops") and n * sizes[0] * sizes[1] > 10**7
                k = kernel_times(engine, sizes, X, T, lr, dtype, 2 if slow else args.repeats)
                krows.append({"sizes": list(sizes), "n": n, "dtype": dtype, "engine": engine, "kernels": k})
    return krows


#: The sections, in order.  To add one, append a Section (or script_section("topic") for bench/topic.py).
SECTIONS = [
    Section("epochs", "full-batch epoch, every implementation", _section_epochs, quick=True,
            estimate_s=lambda args: 4.0 + _n_cases(args) * (8 if args.quick else 20) * max(1, args.repeats) / 3),
    Section("kernels", "per-kernel times", _section_kernels,
            estimate_s=lambda args: _n_cases(args) * 6.0),
    Section("sweep", "sweep over n (64-128-10)", lambda args, result: sweep(max(3, args.repeats // 2)),
            estimate_s=lambda args: 90.0),
    Section("compile", "compile and cache-load time in fresh processes", lambda args, result: compile_times(),
            estimate_s=lambda args: 120.0),
    Section("main_job", "python -m nbmlp against import nbmlp", lambda args, result: main_job_overhead(),
            estimate_s=lambda args: 20.0),
]


def script_section(topic, title, *, quick_args=None, full_args=(), no_torch=None, estimate_s=(60.0, 60.0)) -> Section:
    """A section run by the stand-alone script bench/<topic>.py in a child process.

    The script prints its own tables and verdicts (judged with :func:`verdict`); its output is the
    section's markdown.  ``quick_args`` (None: not part of ``--quick``) and ``full_args`` are its
    flags; ``{out}`` in them is replaced by the run's output folder; ``no_torch`` is the script's flag
    for ``--no-torch``; ``estimate_s`` is (quick, full) seconds.
    """
    def run(args, result):
        script = Path(__file__).resolve().parent.parent / "bench" / f"{topic}.py"
        if not script.is_file():
            raise FileNotFoundError(f"no benchmark script {script} (it lives in a source checkout)")
        out = Path(args.out) if args.out else default_out()
        flags = [a.format(out=out) for a in (quick_args if args.quick else full_args)]
        if no_torch and args.no_torch:
            flags.append(no_torch)
        proc = subprocess.run([sys.executable, str(script), *flags], capture_output=True, text=True,
                              env=_python_env())
        _say(proc.stdout.rstrip())
        if proc.returncode != 0:
            _say(proc.stderr.rstrip()[-2000:])
        return {"command": " ".join(["python", f"bench/{topic}.py", *flags]), "returncode": proc.returncode,
                "markdown": f"`python bench/{topic}.py {' '.join(flags)}` (exit status {proc.returncode})\n\n"
                            + proc.stdout.rstrip()}

    return Section(topic, title, run, estimate_s=lambda args: estimate_s[0] if args.quick else estimate_s[1],
                   quick=quick_args is not None)


SECTIONS += [
    script_section("training", "training on the users' paths: estimators vs scikit-learn and PyTorch, busy neighbour",
                   quick_args=("--quick", "--no-busy"), full_args=(), no_torch="--no-torch", estimate_s=(60.0, 240.0)),
    script_section("gemm", "packed products against OpenBLAS (GF/s, share of peak)",
                   full_args=("--out", "{out}"), estimate_s=(0.0, 300.0)),
    script_section("threads", "serial or parallel, threading layers, a busy neighbour",
                   full_args=("--json", "{out}/threads.json"), estimate_s=(0.0, 240.0)),
    script_section("dask_scaling", "gradient throughput on 1 and 2 Dask workers (1 GB)",
                   full_args=("--json", "{out}/dask_scaling.json"), estimate_s=(0.0, 600.0)),
]


def _say(text):
    print(text, file=sys.stderr, flush=True)


def _sections(args):
    chosen = [sec for sec in SECTIONS if (sec.quick or not args.quick)] if not args.only else \
        [sec for sec in SECTIONS if sec.name in args.only]
    return [sec for sec in chosen if sec.name not in (args.skip or [])]


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser():
    names = ", ".join(sec.name for sec in SECTIONS)
    p = argparse.ArgumentParser(prog="python -m nbmlp bench",
                                description="Time nbmlp against NumPy, PyTorch and JAX (see nbmlp/benchmark.py "
                                            f"and bench/README.md). Sections: {names}.")
    p.add_argument("--quick", action="store_true",
                   help="under a minute: the full-batch epoch section only, small sizes, float64, no JAX")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="timed repeats per implementation (default: 9, --quick: 3)")
    p.add_argument("--dtypes", nargs="+", default=None, choices=DTYPES,
                   help="(default: float64 float32, --quick: float64)")
    p.add_argument("--only", nargs="+", metavar="SECTION", help=f"run only these sections ({names})")
    p.add_argument("--skip", nargs="+", metavar="SECTION", help="leave these sections out")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-jax", action="store_true", help="leave JAX out")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for latest.json, latest.md and latest.png (default: bench/out/ in a source "
                        "checkout, which git ignores; else a new temporary directory)")
    return p


def default_out() -> Path:
    repo_bench = Path(__file__).resolve().parent.parent / "bench"
    if repo_bench.is_dir():
        return repo_bench / "out"
    return Path(tempfile.mkdtemp(prefix="nbmlp-bench-"))


def run(args, command: str) -> dict:
    sections = _sections(args)
    expected = sum(sec.estimate_s(args) for sec in sections)
    _say(f"nbmlp bench: sections {', '.join(sec.name for sec in sections)}; expected duration about "
         f"{expected / 60:.1f} min on a 2-core machine (Ctrl-C stops it)")
    start = time.perf_counter()
    result = {"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine_info(), "gemm_gflops": {}, "epochs": [], "kernels": [], "main_job": None}
    for sec in sections:
        _say(f"[{sec.name}] {sec.title}")
        result[sec.name] = sec.run(args, result)
    result["targets"] = evaluate_targets(result["epochs"], result["main_job"])
    result["seconds"] = time.perf_counter() - start
    return result


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [sec.name for sec in SECTIONS]
    for name in (args.only or []) + (args.skip or []):
        if name not in names:
            parser.error(f"no section {name!r}; sections: {', '.join(names)}")
    args.repeats = args.repeats or (3 if args.quick else 9)
    args.dtypes = args.dtypes or (["float64"] if args.quick else list(DTYPES))
    out = Path(args.out) if args.out else default_out()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"cannot create --out {out}: {exc.strerror or exc}")
    command = ("python -m nbmlp bench " + " ".join(argv)).strip()
    result = run(args, command)
    (out / "latest.json").write_text(json.dumps(result, indent=1, default=str))
    report = markdown_report(result)
    (out / "latest.md").write_text(report)
    plotted = bool(result["epochs"]) and plot(result, out / "latest.png")
    if result["epochs"]:
        print("\n## Headline (median per epoch; speed vs NumPy in parentheses)\n")
        print(headline_table(result["epochs"]))
        print()
    print(report)
    print(f"took {result['seconds']:.0f} s; wrote {out / 'latest.json'}, {out / 'latest.md'}"
          + (f", {out / 'latest.png'}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
