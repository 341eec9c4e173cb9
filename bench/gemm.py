"""GF/s of nbmlp.products' three products against NumPy's matmul (BLAS), and the 784-1024-10 epoch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm.py            # full sweep
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm.py --quick    # a few sizes, 3 repeats

(On some machines OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set for old OpenBLAS
builds and slow a current NumPy; unset them for this command only.  The report
names the OpenBLAS kernel that ran, from threadpoolctl.)

For a layer of width w (d_in = d_out = w) and n samples the three products are
matmul_nn: (n x w)·(w x w), matmul_tn: (w x n)ᵀ·(n x w), matmul_nt: (n x w)·(w x w)ᵀ,
each 2·n·w² flops, timed against NumPy's ``a @ b``, ``a.T @ b``, ``a @ b.T``
on the same arrays, one repeat of each at a time (round-robin), medians; with
all threads a repeat is a pause, one untimed call, then back-to-back calls for
at least MIN_TIMED_SECONDS (threads running, as in training).  Two
sweeps: width 256..2048 at n = 1024, and n 64..4096 at width 1024.  The peak is
cores x vector lanes x FMA units x 2 flops x clock (from /proc/cpuinfo; the
number of FMA units per core is not in /proc/cpuinfo: --fma-units, default 2
for an AVX-512 Xeon).  /proc/cpuinfo may give the base clock, below the one a
core runs at: the header also gives the micro-kernel's own rate on panels in
L1 (``products.micro_kernel_rate``), the ceiling a product of this design
reaches.  Then the epoch of 784-1024-10 at n = 1024 through ``MLP.fit``, the tuned
engine, NumPy and PyTorch eager, in calls of EPOCHS_PER_CALL epochs (and of one:
a fit call's fixed cost whole), with all threads
(:func:`nbmlp.benchmark.time_round_robin`, wall time) and with one thread each
(process CPU time, which a busy machine disturbs less).

Writes gemm.json (every number), gemm.md (the tables) and gemm.png (the chart)
into --out (default bench/results/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbmlp import benchmark, products  # noqa: E402

KINDS = ("nn", "tn", "nt")

#: A two-thread timing runs the product back to back for at least this long (a short product's
#: threads would otherwise be timed as they start, not as they run in a training loop).
MIN_TIMED_SECONDS = 0.02


def time_product(kind, n, w, dtype, repeats, rng):
    """Median seconds of matmul_<kind> for a width-w layer with n samples, and of NumPy's product, alternately."""
    h, W, dz = (rng.random(shape).astype(dtype) for shape in ((n, w), (w, w), (n, w)))
    if kind == "nn":  # z = h @ W
        C, A, B, p = np.empty((n, w), dtype), h, W, w
        blas = lambda: np.matmul(h, W, out=C)  # noqa: E731
    elif kind == "tn":  # dW = hᵀ @ dz
        C, A, B, p = np.empty((w, w), dtype), h, dz, n
        blas = lambda: np.matmul(h.T, dz, out=C)  # noqa: E731
    else:  # dh = dz @ Wᵀ
        C, A, B, p = np.empty((n, w), dtype), dz, W, w
        blas = lambda: np.matmul(dz, W.T, out=C)  # noqa: E731
    f = getattr(products, f"matmul_{kind}")
    ws = products.workspace(C.shape[0], C.shape[1], p, dtype)
    ours = lambda: f(C, A, B, ws)  # noqa: E731
    ours_1 = lambda: f.serial(C, A, B, ws)  # noqa: E731
    times = {"nbmlp": [], "blas": [], "nbmlp_1": [], "blas_1": []}
    for g in (ours, blas, ours_1):
        g()
    calls = {}  # back-to-back calls per timing, so that one lasts >= MIN_TIMED_SECONDS
    for name, g in (("nbmlp", ours), ("blas", blas)):
        t = time.perf_counter()
        g()
        calls[name] = max(1, math.ceil(MIN_TIMED_SECONDS / max(time.perf_counter() - t, 1e-7)))
    for _ in range(repeats):
        for name, g in (("nbmlp", ours), ("blas", blas)):
            time.sleep(benchmark.PAUSE_SECONDS)  # the other side's spinning threads go to sleep first
            g()  # and this side's wake up: the timed calls find them running, as in a training loop
            t = time.perf_counter()
            for _ in range(calls[name]):
                g()
            times[name].append((time.perf_counter() - t) / calls[name])
        with threadpool_limits(1):  # one thread each, CPU time of that thread: robust to a busy machine
            for name, g in (("nbmlp_1", ours_1), ("blas_1", blas)):
                t = time.thread_time()
                g()
                times[name].append(time.thread_time() - t)
    return {k: statistics.median(v) for k, v in times.items()}, times


def peak(fma_units):
    """(GF/s per dtype, how it was computed) from /proc/cpuinfo: cores x lanes x FMA units x 2 x clock."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    mhz = [float(line.split(":", 1)[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    ghz = max(mhz) / 1000 if mhz else float("nan")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bits = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    out = {}
    for dtype, size in (("float64", 8), ("float32", 4)):
        lanes = bits // (8 * size)
        out[dtype] = cores * lanes * fma_units * 2 * ghz
    how = f"{cores} cores x {bits}-bit vectors x {fma_units} FMA units x 2 flops x {ghz:.2f} GHz"
    return out, how, cores


def sweep(dtype, points, repeats, peak_gf, cores):
    rng = np.random.default_rng(0)
    rows = []
    for n, w in points:
        for kind in KINDS:
            med, times = time_product(kind, n, w, dtype, repeats, rng)
            flops = 2.0 * n * w * w
            gf = {k: flops / v / 1e9 for k, v in med.items()}
            rows.append({"dtype": dtype, "kind": kind, "n": n, "width": w, "gflops": gf["nbmlp"],
                         "blas_gflops": gf["blas"], "ratio": gf["nbmlp"] / gf["blas"],
                         "pct_peak": 100 * gf["nbmlp"] / peak_gf, "gflops_1": gf["nbmlp_1"],
                         "blas_gflops_1": gf["blas_1"], "ratio_1": gf["nbmlp_1"] / gf["blas_1"],
                         "pct_core_peak_1": 100 * gf["nbmlp_1"] / (peak_gf / cores), "times": times})
            print(f"  {dtype} {kind} n={n:5d} w={w:5d}: nbmlp {gf['nbmlp']:6.1f} GF/s, "
                  f"BLAS {gf['blas']:6.1f} GF/s, ratio {gf['nbmlp'] / gf['blas']:.2f}; one thread "
                  f"{gf['nbmlp_1']:6.1f} / {gf['blas_1']:6.1f}, ratio {gf['nbmlp_1'] / gf['blas_1']:.2f}", flush=True)
    return rows


#: The issue's targets for the 784-1024-10 epoch: nbmlp at least this many times as fast as each.
EPOCH_TARGETS = {"torch": 1.0, "numpy": 1.5}

#: Epochs per call in the epoch table's main rows: ``fit``'s fixed cost of a call (argument checks,
#: σ(X), setting up the run) is shared by these epochs, as in a user's ``fit(X, T, epochs=...)``,
#: while the PyTorch runner's setup (tensors, parameters) is made once, outside every timing.
#: The row "all, 1 epoch per call" keeps that fixed cost whole.
EPOCHS_PER_CALL = 5

#: The epoch table's rows: (label, key of the median, key of the repeats' times).
EPOCH_ROWS = ((f"all, {EPOCHS_PER_CALL} epochs per call", "median_s", "times"),
              ("all, 1 epoch per call", "median_call_s", "times_call"),
              (f"one, {EPOCHS_PER_CALL} epochs per call", "median_1_s", "times_1"))


def epoch(dtype, repeats, sizes=(784, 1024, 10), n=1024):
    """Median seconds per epoch: all threads (wall time, round-robin), and one thread each (process CPU time).

    All threads: calls of EPOCHS_PER_CALL epochs, and calls of one epoch; one thread: calls of
    EPOCHS_PER_CALL epochs.
    """
    import numba

    X, T, lr = benchmark.make_problem(sizes, n, dtype)
    runners = benchmark.implementations(sizes, X, T, lr, dtype, jax=False, engines=("tuned", "numpy"))
    plan = benchmark.time_round_robin(runners, repeats, epochs=EPOCHS_PER_CALL)
    calls = benchmark.time_round_robin(runners, repeats, epochs=1)
    out = {name: {"median_s": p["median_s"], "times": p["times"], "median_call_s": calls[name]["median_s"],
                  "times_call": calls[name]["times"]} for name, p in plan.items()}
    torch = sys.modules.get("torch")
    threads = numba.get_num_threads(), torch.get_num_threads() if torch else None
    numba.set_num_threads(1)
    if torch:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            for run in runners.values():
                run(1)
            for _ in range(repeats):
                for name, run in runners.items():
                    t = time.process_time()
                    run(EPOCHS_PER_CALL)
                    out[name].setdefault("times_1", []).append((time.process_time() - t) / EPOCHS_PER_CALL)
    finally:
        numba.set_num_threads(threads[0])
        if torch:
            torch.set_num_threads(threads[1])
    for v in out.values():
        v["median_1_s"] = statistics.median(v["times_1"])
    return out


def markdown(result):
    m = result["machine"]
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
                     f"{b.get('num_threads')} threads)" for b in m.get("blas", []) if isinstance(b, dict))
    lines = [f"Machine: {m['cpu']}, {m['logical_cpus']} CPUs, Numba {m['numba']} ({m['numba_threads']} threads), "
             f"BLAS: {blas}, OpenBLAS env: {m['openblas_env']}.  ",
             f"Peak: {result['peak_how']} = " + ", ".join(f"{v:.0f} GF/s {k}" for k, v in result["peak"].items())
             + ".  ",
             "The micro-kernel alone, its panels in L1, one thread (``products.micro_kernel_rate``, what a core "
             "sustains at its actual clock): " + ", ".join(
                 f"{v:.1f} GF/s {k} ({100 * v / (result['peak'][k] / result['cores']):.0f}% of one core's peak above)"
                 for k, v in result["kernel_ceiling"].items()) + ".",
             "", "All threads, wall time; and one thread each (serial compilation, BLAS limited to one thread), "
             "CPU time of that thread.", "",
             "| dtype | product | n | width | nbmlp GF/s | BLAS GF/s | nbmlp / BLAS | % of peak "
             "| 1 thread: nbmlp | BLAS | nbmlp / BLAS | % of one core's peak |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["products"]:
        lines.append(f"| {r['dtype']} | {r['kind']} | {r['n']} | {r['width']} | {r['gflops']:.1f} | "
                     f"{r['blas_gflops']:.1f} | {r['ratio']:.2f} | {r['pct_peak']:.0f}% | {r['gflops_1']:.1f} | "
                     f"{r['blas_gflops_1']:.1f} | {r['ratio_1']:.2f} | {r['pct_core_peak_1']:.0f}% |")
    if result.get("epoch"):
        names = list(result["epoch"][next(iter(result["epoch"]))])
        pairs = [(mine, other) for mine in ("fit", "tuned") for other in EPOCH_TARGETS]
        lines += ["", f"784-1024-10, n = 1024, one epoch (median; all threads: wall time; one thread each: "
                  f"process CPU time; each repeat one call of {EPOCHS_PER_CALL} epochs, or of 1, divided by its "
                  "epochs; a fit call's fixed cost, shared by its epochs, is whole in the 1-epoch row).  "
                  "Speed ratios: median (spread of the repeats), and the verdict on the "
                  "issue's target (" + ", ".join(f"≥ {v:g}× {k}" for k, v in EPOCH_TARGETS.items()) + "): met "
                  "only when the whole spread clears it.", "",
                  "| dtype | threads | " + " | ".join(names) + " | "
                  + " | ".join(f"{other} / {mine}" for mine, other in pairs) + " |",
                  "|---|---|" + "---:|" * (len(names) + len(pairs))]
        for dtype, e in result["epoch"].items():
            for label, key, times in EPOCH_ROWS:
                if times not in e[names[0]]:  # a result written before the row existed
                    continue
                cells = " | ".join(f"{e[k][key] * 1e3:.1f} ms" for k in names)
                ratios = []
                for mine, other in pairs:
                    if other not in e:
                        ratios.append("-")
                        continue
                    low, mid, high = benchmark.ratio_spread(e[mine][times], e[other][times])
                    ratios.append(f"{mid:.2f}x ({low:.2f}–{high:.2f}) "
                                  f"{benchmark.verdict(low, high, EPOCH_TARGETS[other])}")
                lines.append(f"| {dtype} | {label} | {cells} | " + " | ".join(ratios) + " |")
    return "\n".join(lines) + "\n"


def plot(result, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = result["products"]
    dtypes = sorted({r["dtype"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(11, 4 * len(dtypes)), squeeze=False)
    for i, dtype in enumerate(dtypes):
        for j, (label, fixed, var) in enumerate((("width (n = 1024)", "n", "width"),
                                                 ("n (width = 1024)", "width", "n"))):
            ax = axes[i][j]
            sel = [r for r in rows if r["dtype"] == dtype and r[fixed] == 1024]
            for kind, color in zip(KINDS, ("C0", "C1", "C2")):
                pts = sorted((r[var], r["gflops"], r["blas_gflops"]) for r in sel if r["kind"] == kind)
                if not pts:
                    continue
                x, ours, blas = zip(*pts)
                ax.plot(x, ours, "o-", color=color, label=f"nbmlp matmul_{kind}")
                ax.plot(x, blas, "x--", color=color, alpha=0.6, label=f"BLAS ({kind})")
            ax.axhline(result["peak"][dtype], color="k", lw=0.8, ls=":", label="peak")
            ax.set_xscale("log", base=2)
            ax.set_xlabel(label)
            ax.set_ylabel("GF/s")
            ax.set_ylim(bottom=0)
            ax.set_title(f"{dtype}: GF/s against {var}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return True


def write_atomic(path: Path, text: str):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few sizes, 3 repeats (a check that it runs)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for gemm.json, gemm.md, gemm.png (default: bench/results)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per size (default 7, --quick 3)")
    p.add_argument("--fma-units", type=int, default=2, help="FMA units per core, for the peak (default 2)")
    p.add_argument("--dtypes", default="float64,float32", help="comma-separated (default float64,float32)")
    p.add_argument("--no-epoch", action="store_true", help="skip the 784-1024-10 epoch")
    args = p.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in ("float64", "float32"):
            p.error(f"--dtypes: {d!r} is not float64 or float32")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.fma_units < 1:
        p.error("--fma-units must be at least 1")
    repeats = args.repeats or (3 if args.quick else 7)
    if args.quick:
        points = [(1024, 256), (1024, 1024), (256, 1024)]
    else:
        points = [(1024, w) for w in (256, 512, 784, 1024, 1536, 2048)] + [(n, 1024) for n in (64, 256, 4096)]
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"note: {var}={os.environ[var]} is set; for BLAS's own speed run with env -u {var}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    peak_gf, how, cores = peak(args.fma_units)
    result = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "peak": peak_gf, "peak_how": how,
              "cores": cores, "kernel_ceiling": {d: products.micro_kernel_rate(d) for d in dtypes},
              "products": [], "epoch": {}}
    for dtype in dtypes:
        print(f"compiling and timing the products, {dtype} ...", flush=True)
        result["products"] += sweep(dtype, points, repeats, peak_gf[dtype], result["cores"])
    if not args.no_epoch:
        for dtype in dtypes:
            print(f"784-1024-10 epoch, {dtype} (compiling first) ...", flush=True)
            result["epoch"][dtype] = epoch(dtype, max(3, repeats))
    result["machine"] = benchmark.machine_info()
    write_atomic(args.out / "gemm.json", json.dumps(result, indent=1))
    md = markdown(result)
    write_atomic(args.out / "gemm.md", md)
    plotted = plot(result, args.out / "gemm.png")
    print(md)
    print(f"wrote {args.out / 'gemm.json'}, {args.out / 'gemm.md'}" + (f", {args.out / 'gemm.png'}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
