"""Smoke test of ``python -m nbmlp bench``: it runs, and its JSON covers every engine.

Timings are never asserted (targets are read off bench/RESULTS.md, not tests);
this only checks that the benchmark a speed comparer runs still works end to end.
"""

from __future__ import annotations

import json

import nbmlp
from nbmlp.__main__ import main


def test_quick_benchmark_writes_a_row_for_every_engine(tmp_path, capsys):
    argv = ["bench", "--quick", "--repeats", "1", "--dtypes", "float64", "--no-torch", "--no-jax",
            "--no-kernels", "--no-sweep", "--no-compile", "--no-main-job", "--out", str(tmp_path)]
    main(argv)
    result = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().strip()
    impls = {row["impl"] for row in result["epochs"]}
    assert set(nbmlp.ENGINES) | {"fused"} <= impls
    for row in result["epochs"]:
        assert row["median_s"] > 0.0 and row["dtype"] == "float64"
    assert "4-5-3, n=150" in capsys.readouterr().out
