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
