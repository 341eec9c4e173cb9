"""Results must not depend on the number of threads.

Every prange body writes only its own slots and keeps each Σ in a private
scalar, so the parallel kernels must give *bit-identical* results with 1 thread
and with several -- both via ``numba.set_num_threads`` in this process and via
``NUMBA_NUM_THREADS`` in fresh processes, as a user would set it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import nbmlp
from nbmlp import MLP

LOOP_ENGINES = [name for name in nbmlp.ENGINES if name != "numpy"]

#: Big enough that the "loops" engine takes its parallel branch for the linear kernels.
SIZES = (64, 96, 10)
N = 300


def _gradients(engine):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N, SIZES[0]))
    T = rng.random((N, SIZES[-1]))
    g = MLP(SIZES, seed=7, engine=engine).gradients(X, T)
    return g.W + g.b + g.dL_dz + [np.array(g.loss)]


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_bit_identical_with_one_and_all_threads_in_process(engine):
    threads = numba.config.NUMBA_NUM_THREADS
    if threads < 2:
        pytest.skip("numba was started with a single thread")
    try:
        numba.set_num_threads(1)
        one = _gradients(engine)
        numba.set_num_threads(threads)
        many = _gradients(engine)
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(one, many, strict=True):
        assert np.array_equal(a, b)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, numba
    from nbmlp import MLP
    rng = np.random.default_rng(7)
    X = rng.normal(size=({n}, {d0}))
    T = rng.random(({n}, {dL}))
    g = MLP({sizes}, seed=7, engine="loops-parallel").gradients(X, T)
    np.savez(sys.argv[1], threads=numba.get_num_threads(), loss=g.loss,
             *(g.W + g.b + g.dL_dz))
""")


def test_bit_identical_with_numba_num_threads_1_and_2(tmp_path):
    script = SCRIPT.format(n=N, d0=SIZES[0], dL=SIZES[-1], sizes=SIZES)
    results = {}
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}.npz"
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-c", script, str(out)], env=env, check=True, timeout=600)
        results[threads] = np.load(out)
    assert int(results[1]["threads"]) == 1 and int(results[2]["threads"]) == 2
    assert set(results[1].files) == set(results[2].files)
    for key in results[1].files:
        if key != "threads":
            assert np.array_equal(results[1][key], results[2][key]), key
