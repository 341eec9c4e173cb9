"""Gradient throughput and scheduler overhead of nbmlp on a Dask cluster (nbmlp.distributed).

    python bench/dask_scaling.py            # 1 GB float64 X generated on the workers, 1 and 2 workers
    python bench/dask_scaling.py --quick    # 0.05 GB, 2 repeats: checks the script, numbers mean little
    python bench/dask_scaling.py --help

What is timed (medians of --repeats, after one untimed warm-up step that compiles on every worker):

* throughput: one full-batch ``net.gradients(X, T)`` -- forward, loss, backward of every row
  chunk on the worker holding it, partial sums added in the fixed tree -- for X (n x d0, float64,
  ``dask.array.random.default_rng(seed)``) built and persisted on the workers, never on the client;
  samples/s = n / time.  Each worker is one process with one thread (NUMBA_NUM_THREADS=1), so
  "2 workers" is two cores.
* scheduler overhead: the same step on a tiny X (``--tiny-rows`` rows per chunk) with 4 .. 64
  chunks, minus the compute of those chunks (timed in this process, same kernels):
  what one step costs beyond the arithmetic, and its growth per chunk (per task).
* bytes per step, counted (not timed): parameters to each worker, one partial
  (loss + every dL/dW, dL/db) per chunk up the tree, the root to the client.

Prints a Markdown report; ``--json PATH`` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nbmlp  # noqa: E402

try:
    from distributed import LocalCluster
except ImportError:  # pragma: no cover
    sys.exit('bench/dask_scaling.py needs the dask extra: pip install "nbmlp[dask]"')


def _sizes(text):
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"sizes must look like 32,8,1, got {text!r}") from exc
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be at least two positive widths, got {text!r}")
    return sizes


def _workers(text):
    try:
        counts = tuple(int(s) for s in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"workers must look like 1,2, got {text!r}") from exc
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1, got {text!r}")
    return counts


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="0.05 GB, 2 repeats, fewer tiny-chunk counts")
    p.add_argument("--gb", type=float, default=1.0, help="size of X in GB (1e9 bytes), float64")
    p.add_argument("--chunk-mb", type=float, default=64.0, help="size of one row chunk of X in MB")
    p.add_argument("--sizes", type=_sizes, default=(32, 8, 1), help="layer widths d0,...,dL")
    p.add_argument("--engine", default="loops", help="nbmlp engine on the workers")
    p.add_argument("--workers", type=_workers, default=(1, 2), help="worker counts to time, e.g. 1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny-rows", type=int, default=8, help="rows per chunk of the overhead measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write every number here")
    args = p.parse_args(argv)
    if args.quick:
        args.gb, args.chunk_mb, args.repeats = 0.05, 8.0, 2
    if not (args.gb > 0 and args.chunk_mb > 0 and args.repeats >= 1 and args.tiny_rows >= 1):
        p.error("--gb, --chunk-mb, --repeats and --tiny-rows must be positive")
    return args


def make_net(args):
    return nbmlp.MLP(args.sizes, seed=args.seed, engine=args.engine, input_sigmoid=False, activation="tanh",
                     output_activation="identity", loss="mse")


def make_data(da, n, rows, args):
    """X ~ N(0, 1) and T = tanh of the first columns, both built by tasks on the workers."""
    d0, dL = args.sizes[0], args.sizes[-1]
    X = da.random.default_rng(args.seed).standard_normal((n, d0), chunks=(rows, d0))
    T = da.tanh(X[:, :dL] if dL <= d0 else da.concatenate([X] * (dL // d0 + 1), axis=1)[:, :dL])
    return X, T


def local_cluster(workers):
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")


def timed(fn, repeats):
    fn()  # warm-up: compiles (or loads the cache) on every worker
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bytes_per_step(net, workers, chunks):
    """Counted bytes: parameters to each worker, one partial per chunk, the root to the client."""
    params = sum(w.nbytes + b.nbytes for w, b in zip(net.W, net.b))
    partial = params + 8  # the loss travels with the gradients
    return {"parameters_bytes": params, "broadcast": workers * params,
            "partials_upper_bound": (chunks - 1) * partial, "to_client": partial,
            "total_upper_bound": workers * params + chunks * partial}


def main(argv=None):
    args = parse_args(argv)
    import dask
    import dask.array as da
    from distributed import Client, wait

    # Numba reads its thread count when a worker process starts: set it before the spawn.
    dask.config.set({"distributed.nanny.pre-spawn-environ.NUMBA_NUM_THREADS": 1})
    net = make_net(args)
    d0 = args.sizes[0]
    n = int(args.gb * 1e9 / (8 * d0))
    rows = max(1, int(args.chunk_mb * 1e6 / (8 * d0)))
    report = {"args": {k: v for k, v in vars(args).items()}, "n": n, "rows_per_chunk": rows, "throughput": [],
              "overhead": []}
    print(f"# nbmlp.distributed scaling ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs)\n")
    print(f"net {args.sizes} engine {args.engine} mse, X {n} x {d0} float64 = {n * d0 * 8 / 1e9:.2f} GB "
          f"in chunks of {rows} rows ({-(-n // rows)} chunks), {args.repeats} repeats\n")
    print("| workers | step (median) | repeats | samples/s | speed-up |\n|---:|---:|---|---:|---:|")
    base = None
    for w in args.workers:
        with local_cluster(w) as cluster, Client(cluster):
            X, T = make_data(da, n, rows, args)
            X, T = dask.persist(X, T)
            wait([X, T])
            times = timed(lambda X=X, T=T: net.gradients(X, T), args.repeats)
            del X, T
        median = statistics.median(times)
        base = base or median
        report["throughput"].append({"workers": w, "seconds": times, "median": median, "samples_per_s": n / median})
        print(f"| {w} | {median:.3f} s | {', '.join(f'{t:.3f}' for t in times)} | {n / median:,.0f} | "
              f"{base / median:.2f} |")

    print("\nScheduler overhead per step (2 workers, tiny chunks; compute timed in-process):\n")
    print("| chunks | rows | step (median) | compute | overhead | bytes moved / step (upper bound) |")
    print("|---:|---:|---:|---:|---:|---:|")
    counts = (4, 16) if args.quick else (4, 16, 64)
    with local_cluster(2) as cluster, Client(cluster):
        for m in counts:
            X, T = make_data(da, m * args.tiny_rows, args.tiny_rows, args)
            X, T = dask.persist(X, T)
            wait([X, T])
            steps = timed(lambda X=X, T=T: net.gradients(X, T), max(5, args.repeats))
            blocks = [(x, t) for x, t in zip(*dask.compute(list(X.blocks), list(T.blocks)), strict=True)]
            compute = statistics.median(timed(lambda b=blocks: [net.gradients(x, t) for x, t in b], 5))
            step = statistics.median(steps)
            moved = bytes_per_step(net, 2, m)
            report["overhead"].append({"chunks": m, "rows": m * args.tiny_rows, "step_s": steps, "median": step,
                                       "compute_s": compute, "overhead_s": step - compute, "bytes": moved})
            print(f"| {m} | {m * args.tiny_rows} | {step * 1e3:.1f} ms | {compute * 1e3:.2f} ms | "
                  f"{(step - compute) * 1e3:.1f} ms | {moved['total_upper_bound']:,} |")
    if len(report["overhead"]) >= 2:
        first, last = report["overhead"][0], report["overhead"][-1]
        per_chunk = (last["overhead_s"] - first["overhead_s"]) / (last["chunks"] - first["chunks"])
        fixed = first["overhead_s"] - per_chunk * first["chunks"]
        report["overhead_fit"] = {"fixed_s": fixed, "per_chunk_s": per_chunk}
        print(f"\noverhead ≈ {fixed * 1e3:.1f} ms + {per_chunk * 1e3:.2f} ms per chunk "
              f"(line through {first['chunks']} and {last['chunks']} chunks)")
    print(f"\nparameters: {bytes_per_step(net, 1, 1)['parameters_bytes']} bytes "
          f"(broadcast to each worker every step; each chunk sends back as much + 8)")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(report, fh, indent=1)
        os.replace(tmp, args.json)
    return report


if __name__ == "__main__":
    main()
