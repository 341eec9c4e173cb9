"""Serial against parallel, quiet against beside a busy process, for each Numba threading layer.

    python bench/threads.py                 # every layer found, the default cases
    python bench/threads.py --quick         # fewer cases and repeats (a smoke run)
    python bench/threads.py --layers tbb omp --json out.json

For each threading layer (``tbb`` when ``pip install tbb`` is present, ``omp``,
``omp-passive`` = omp with ``OMP_WAIT_POLICY=passive``, ``workqueue``) one
worker subprocess is started with ``NUMBA_THREADING_LAYER`` set, so each layer
starts from a clean process.  The worker compiles every kernel, then times, for
each case (kernel, n, width):

* ``serial``   -- the kernel's serial compilation (``f.serial``);
* ``parallel`` -- its prange compilation, on all Numba threads;
* ``auto``     -- what nbmlp runs: ``parallel.pick(f, work)`` inside ``parallel.region()``;

first on the machine as it is ("quiet"), then beside one CPU-bound Python
process that the worker starts and stops itself ("busy").  A time is the mean
time per call over a batch of calls lasting ~``--batch-ms``; each figure is the
median of ``--repeats`` batches, with the lowest and highest batch kept so that
overlapping repeats are visible.  The last columns are the two ratios the
policy is judged by: auto against the better of serial/parallel on the same
condition, and auto busy against auto quiet.

Kernels: ``nbmlp.kernels.linear_forward`` (z = h W + b, n x width times
width x width), ``linear_backward_weight`` (dW = hᵀ dz) and
``nbmlp.products.matmul_nn`` (C = A B).  Work = n * width * width multiply-adds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: (n, width) pairs: from the region-start regime to the compute-bound one.
CASES = ((16, 64), (64, 64), (256, 64), (64, 256), (256, 256), (1024, 256), (4096, 64))
QUICK_CASES = ((64, 64), (256, 256), (1024, 256))
KERNELS = ("linear_forward", "linear_backward_weight", "matmul_nn")
QUICK_KERNELS = ("linear_forward",)

LAYERS = {
    "tbb": {"NUMBA_THREADING_LAYER": "tbb"},
    "omp": {"NUMBA_THREADING_LAYER": "omp"},
    "omp-passive": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
}

#: The busy neighbour: CPU-bound, and gone as soon as the worker that started it is.
BUSY_LOOP = ("import os\nparent = os.getppid()\n"
             "while os.getppid() == parent:\n    for _ in range(100000):\n        pass\n")


# --- worker (runs in a subprocess, one per layer) ------------------------------


def _kernel_call(name, n, width, rng):
    import numpy as np

    from nbmlp import kernels, products

    h = rng.normal(size=(n, width))
    W = rng.normal(size=(width, width))
    if name == "linear_forward":
        z = np.empty((n, width))
        b = rng.normal(size=width)
        return kernels.linear_forward, (z, h, W, b)
    if name == "linear_backward_weight":
        dW = np.empty((width, width))
        dz = rng.normal(size=(n, width))
        return kernels.linear_backward_weight, (dW, dz, h)
    if name == "matmul_nn":
        C = np.empty((n, width))
        return products.matmul_nn, (C, h, W, products.workspace(n, width, width, h.dtype))
    raise ValueError(name)


def _batch_mean(call, batch_s):
    """Mean seconds per call over a batch lasting about batch_s."""
    calls = 0
    t0 = time.perf_counter()
    deadline = t0 + batch_s
    while True:
        call()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            return (now - t0) / calls


def _worker(args):
    import signal

    import numpy as np

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the busy process

    from nbmlp import parallel

    rng = np.random.default_rng(0)
    prepared = []
    for name in args.kernels:
        for n, width in args.cases:
            f, fargs = _kernel_call(name, n, width, rng)
            work = n * width * width

            def auto(f=f, fargs=fargs, work=work):
                g = parallel.pick(f, work)
                with parallel.region():
                    g(*fargs)

            variants = {"serial": lambda f=f, a=fargs: f.serial(*a), "parallel": lambda f=f, a=fargs: f(*a),
                        "auto": auto}
            for call in variants.values():
                call()  # compile / load from cache
            prepared.append(((name, n, width), variants))

    results = []
    free = {}
    busy = None
    try:
        for condition in ("quiet", "busy"):
            if condition == "busy":
                busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
                time.sleep(2 * parallel.LOAD_SAMPLE_S + 0.5)  # let the busy check see it
            free[condition] = parallel.free_cores()
            for key, variants in prepared:
                times = {v: [] for v in variants}
                for _ in range(args.repeats):  # round-robin, so noise falls on all alike
                    for v, call in variants.items():
                        times[v].append(_batch_mean(call, args.batch_ms / 1000))
                for v, ts in times.items():
                    results.append({"kernel": key[0], "n": key[1], "width": key[2], "condition": condition,
                                    "variant": v, "median_s": statistics.median(ts), "min_s": min(ts),
                                    "max_s": max(ts)})
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    out = {"layer": parallel.threading_layer(), "threads": __import__("numba").get_num_threads(),
           "env": {k: os.environ.get(k) for k in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")},
           "free_cores": free, "results": results}
    json.dump(out, sys.stdout)


# --- driver -------------------------------------------------------------------


def _available_layers():
    code = "import nbmlp.parallel as p, sys; sys.stdout.write(p.threading_layer())"
    found = []
    for name, env in LAYERS.items():
        r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == env["NUMBA_THREADING_LAYER"]:
            found.append(name)
    return found


def _fmt_us(s):
    return f"{s * 1e6:9.1f}"


def _table(layer_runs):
    lines = []
    for run in layer_runs:
        free = ", ".join(f"{k} {v:.2f}" for k, v in run.get("free_cores", {}).items())
        lines.append(f"\n## layer {run['name']} (numba reports {run['layer']}, {run['threads']} threads; "
                     f"free cores seen: {free}), µs per call, median")
        lines.append(f"{'kernel':24} {'n':>5} {'width':>5} {'work':>10} | {'cond':5} | {'serial':>9} {'parallel':>9} "
                     f"{'auto':>9} | auto/best  busy/quiet(auto)")
        by = {}
        for r in run["results"]:
            by[(r["kernel"], r["n"], r["width"], r["condition"], r["variant"])] = r
        keys = sorted({(r["kernel"], r["n"], r["width"]) for r in run["results"]},
                      key=lambda k: (k[0], k[1] * k[2] * k[2]))
        for k in keys:
            for cond in ("quiet", "busy"):
                s, p, a = (by[(*k, cond, v)]["median_s"] for v in ("serial", "parallel", "auto"))
                ratio = a / min(s, p)
                bq = a / by[(*k, "quiet", "auto")]["median_s"] if cond == "busy" else None
                lines.append(f"{k[0]:24} {k[1]:5} {k[2]:5} {k[1] * k[2] * k[2]:10} | {cond:5} | "
                             f"{_fmt_us(s)} {_fmt_us(p)} {_fmt_us(a)} | "
                             f"{ratio:8.2f}  {'' if bq is None else f'{bq:8.2f}'}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", nargs="*", help=f"subset of {list(LAYERS)} (default: every one found)")
    ap.add_argument("--quick", action="store_true", help="three cases, one kernel, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="batches per figure (default 5, quick 3)")
    ap.add_argument("--batch-ms", type=float, default=30.0, help="length of one timed batch")
    ap.add_argument("--json", help="also write every figure to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cases", help=argparse.SUPPRESS)
    ap.add_argument("--kernels", nargs="*", help=f"subset of {list(KERNELS)}")
    args = ap.parse_args(argv)
    if args.worker:
        args.cases = json.loads(args.cases)
        return _worker(args)

    cases = QUICK_CASES if args.quick else CASES
    kernels = args.kernels or (QUICK_KERNELS if args.quick else KERNELS)
    repeats = args.repeats or (3 if args.quick else 5)
    layers = args.layers or _available_layers()
    print(f"layers: {layers}; cases (n, width): {list(cases)}; kernels: {kernels}; {repeats} repeats of "
          f"{args.batch_ms:g} ms; load average now {os.getloadavg()[0]:.2f}", flush=True)
    runs = []
    for name in layers:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--cases", json.dumps(cases),
               "--repeats", str(repeats), "--batch-ms", str(args.batch_ms), "--kernels", *kernels]
        r = subprocess.run(cmd, env={**os.environ, **LAYERS[name]}, cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"layer {name}: worker failed (status {r.returncode}): {r.stderr.strip()[-500:]}")
            continue
        run = json.loads(r.stdout)
        run["name"] = name
        runs.append(run)
        print(_table([run]), flush=True)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"load_average": os.getloadavg(), "cpus": os.cpu_count(), "runs": runs}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
