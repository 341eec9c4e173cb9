"""Smoke test of bench/gemm.py: it runs, writes every figure, and rejects a bad flag in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEMM = os.path.join(ROOT, "bench", "gemm.py")


def test_gemm_bench_writes_every_figure(tmp_path):
    cmd = [sys.executable, GEMM, "--quick", "--no-epoch", "--repeats", "1", "--dtypes", "float64",
           "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "gemm.json").read_text())
    assert set(data["kernel_ceiling"]) == {"float64"} and data["kernel_ceiling"]["float64"] > 0
    got = {(p["kind"], p["n"], p["width"]) for p in data["products"]}
    assert got == {(k, n, w) for k in ("nn", "tn", "nt") for n, w in ((1024, 256), (1024, 1024), (256, 1024))}
    assert all(p["gflops"] > 0 and p["blas_gflops"] > 0 for p in data["products"])
    md = (tmp_path / "gemm.md").read_text()
    assert "micro-kernel alone" in md and "| float64 | nn | 1024 | 256 |" in md


def test_gemm_bench_rejects_a_bad_flag_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, GEMM, "--repeats", "0", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "--repeats must be at least 1" in r.stderr and "Traceback" not in r.stderr


def _load_gemm():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gemm", GEMM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_epoch_table_judges_each_target_on_the_spread_of_the_repeats():
    gemm = _load_gemm()
    ms = 1e-3
    epoch = {  # seconds per epoch of each repeat; fit clears numpy's 1.5x in every pairing, torch overlaps
        "fit": [10 * ms, 10.5 * ms, 11 * ms], "tuned": [12 * ms, 12.5 * ms, 13 * ms],
        "numpy": [18 * ms, 21 * ms, 22 * ms], "torch": [10.2 * ms, 10.4 * ms, 11.9 * ms]}
    e = {k: {"median_s": sorted(v)[1], "times": v, "median_1_s": sorted(v)[1], "times_1": v,
             "median_call_s": 2 * sorted(v)[1], "times_call": [2 * t for t in v]} for k, v in epoch.items()}
    result = {"machine": {"cpu": "test", "logical_cpus": 2, "numba": "0", "numba_threads": 2, "blas": [],
                          "openblas_env": {}},
              "peak": {"float64": 100.0}, "peak_how": "test", "cores": 2, "kernel_ceiling": {"float64": 40.0},
              "products": [], "epoch": {"float64": e}}
    md = gemm.markdown(result)
    rows = [line for line in md.splitlines() if line.startswith("| float64 |")]
    assert [r.split("|")[2].strip() for r in rows] == [label for label, _, _ in gemm.EPOCH_ROWS]
    assert "| 21.0 ms |" in rows[0] and "| 42.0 ms |" in rows[1]  # numpy's median, per epoch; of the 1-epoch calls
    row = rows[0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in md.splitlines() if line.startswith("| dtype | threads |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    got = dict(zip(columns, cells, strict=True))
    assert got["numpy / fit"] == "2.00x (1.64–2.20) met"  # 21 / 10.5; 18 / 11 ... 22 / 10
    assert got["torch / fit"] == "0.99x (0.93–1.19) unclear"  # 10.4 / 10.5; 10.2 / 11 ... 11.9 / 10
    assert got["torch / tuned"] == "0.83x (0.78–0.99) not met"  # even the best pairing, 11.9 / 12, misses 1.0
    assert got["numpy / tuned"] == "1.68x (1.38–1.83) unclear"  # 21 / 12.5; 18 / 13 ... 22 / 12
