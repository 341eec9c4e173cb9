"""Smoke test of bench/threads.py: it runs, and its JSON has every figure (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_threads_bench_writes_every_figure(tmp_path):
    out = tmp_path / "threads.json"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "threads.py"), "--quick", "--layers", "workqueue",
           "--repeats", "1", "--batch-ms", "1", "--json", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "layer workqueue" in r.stdout
    data = json.loads(out.read_text())
    (run,) = data["runs"]
    assert run["layer"] == "workqueue"
    assert set(run["free_cores"]) == {"quiet", "busy"}
    got = {(r["kernel"], r["n"], r["width"], r["condition"], r["variant"]) for r in run["results"]}
    assert len(got) == 3 * 2 * 3  # three sizes, quiet and busy, serial/parallel/auto
    assert all(r["min_s"] <= r["median_s"] <= r["max_s"] for r in run["results"])
