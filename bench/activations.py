"""Time every activation of the table (forward + backward) in each engine: ``python bench/activations.py``.

Rows come from ``nbmlp.ops.ACTIVATIONS`` (every entry with a backward kernel), columns from the
engines.  Engines are timed round-robin, ``--repeats`` times, and the median of each is printed with
the spread (min-max) so that overlapping repeats are visible.  Options: ``--n``, ``--d``,
``--repeats``, ``--calls`` (calls per repeat), ``--dtype``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402

import nbmlp  # noqa: E402
from nbmlp import ops  # noqa: E402

ENGINES = ("loops", "tuned", "numpy")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="rows of the batch")
    parser.add_argument("--d", type=int, default=256, help="units of the layer")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--calls", type=int, default=50, help="forward + backward pairs per repeat")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=(args.n, args.d)).astype(args.dtype)
    dh = rng.normal(size=z.shape).astype(args.dtype)
    h, dz = np.empty_like(z), np.empty_like(z)
    entries = [op for op in ops.ACTIVATIONS.values() if op.backward is not None]
    runs = {}
    for op in entries:
        for engine in ENGINES:
            ns = nbmlp.get_engine(engine)
            forward, backward = getattr(ns, op.forward), getattr(ns, op.backward)
            forward(h, z)  # compile / warm
            backward(dz, dh, h)
            runs[op.name, engine] = (forward, backward)
    times = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key, (forward, backward) in runs.items():  # round-robin: every cell sees the same machine state
            start = time.perf_counter()
            for _ in range(args.calls):
                forward(h, z)
                backward(dz, dh, h)
            times[key].append((time.perf_counter() - start) / args.calls * 1e6)

    print(f"forward + backward, (n, d) = ({args.n}, {args.d}), {args.dtype}: median µs per pair "
          f"[min-max of {args.repeats} repeats]; ratio = NumPy / engine")
    print(f"{'activation':<12}" + "".join(f"{e:>30}" for e in ENGINES))
    for op in entries:
        numpy_median = statistics.median(times[op.name, "numpy"])
        cells = []
        for engine in ENGINES:
            t = times[op.name, engine]
            med = statistics.median(t)
            cells.append(f"{med:8.1f} [{min(t):.1f}-{max(t):.1f}] {numpy_median / med:5.2f}x")
        print(f"{op.name:<12}" + "".join(f"{c:>30}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
