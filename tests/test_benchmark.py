"""``python -m nbmlp bench``: it runs, its JSON covers every engine, and its verdicts follow the spread.

Timings are never asserted (targets are read off bench/RESULTS.md, not tests); this only checks that
the benchmark a speed comparer runs still works end to end, and how it judges a target.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nbmlp
from nbmlp import benchmark
from nbmlp.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_a_row_for_every_engine(tmp_path, capsys):
    argv = ["bench", "--quick", "--repeats", "1", "--no-torch", "--skip", "training", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().strip()
    impls = {row["impl"] for row in result["epochs"]}
    assert set(nbmlp.ENGINES) | {"fit"} <= impls
    for row in result["epochs"]:
        assert row["median_s"] > 0.0 and row["dtype"] == "float64"
    assert {t["verdict"] for t in result["targets"]} <= {"met", "not met", "unclear"}
    captured = capsys.readouterr()
    assert "4-5-3, n=150" in captured.out
    assert "expected duration about" in captured.err and "sections epochs;" in captured.err


@pytest.mark.parametrize("low, high, target, at_least, expected", [
    (2.1, 3.0, 2.0, True, "met"),
    (1.9, 3.0, 2.0, True, "unclear"),
    (1.0, 1.9, 2.0, True, "not met"),
    (0.5, 1.4, 1.5, False, "met"),
    (1.2, 1.6, 1.5, False, "unclear"),
    (1.6, 2.0, 1.5, False, "not met"),
])
def test_a_target_is_met_only_when_the_whole_spread_clears_it(low, high, target, at_least, expected):
    assert benchmark.verdict(low, high, target, at_least=at_least) == expected


def test_speed_ratio_spread_pairs_the_extremes():
    low, mid, high = benchmark.ratio_spread([1.0, 2.0, 4.0], [10.0, 12.0, 20.0])
    assert (low, mid, high) == (10.0 / 4.0, 12.0 / 2.0, 20.0 / 1.0)


def test_quick_runs_only_quick_sections_and_only_skip_choose():
    args = benchmark.build_parser().parse_args(["--quick"])
    assert [s.name for s in benchmark._sections(args)] == [s.name for s in benchmark.SECTIONS if s.quick]
    args = benchmark.build_parser().parse_args(["--only", "sweep", "kernels"])
    assert [s.name for s in benchmark._sections(args)] == ["kernels", "sweep"]  # the table's order
    args = benchmark.build_parser().parse_args(["--skip", "compile"])
    assert "compile" not in [s.name for s in benchmark._sections(args)]


def test_unknown_section_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "gpu"])
    assert exit_info.value.code == 2 and "no section 'gpu'" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_default_output_is_git_ignored():
    out = benchmark.default_out()
    assert out == ROOT / "bench" / "out"
    probe = out / "latest.json"
    result = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=ROOT)
    assert result.returncode == 0, f"{probe} would be tracked by git"


def test_training_benchmark_refuses_an_only_that_names_no_row():
    script = Path(__file__).resolve().parent.parent / "bench" / "training.py"
    done = subprocess.run([sys.executable, str(script), "--only", "no such row"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert "--only: no row name contains 'no such row'" in done.stderr
    assert "Traceback" not in done.stderr


def test_round_robin_runs_each_repeat_for_the_epochs_asked(monkeypatch):
    monkeypatch.setattr(benchmark, "PAUSE_SECONDS", 0.0)
    calls = {"a": [], "b": []}
    runners = {name: (lambda epochs, name=name: calls[name].append(epochs)) for name in calls}
    plan = benchmark.time_round_robin(runners, 3, epochs=5)
    for name, p in plan.items():
        assert calls[name] == [1, 2, 5, 5, 5, 5]  # first call, warm call, the plan's call, 3 repeats
        assert p["epochs_per_repeat"] == 5 and len(p["times"]) == 3
    for bad in (0, -1, 2.5, "5"):
        with pytest.raises(ValueError, match="time_round_robin: epochs must be a positive integer or None"):
            benchmark.time_round_robin(runners, 3, epochs=bad)


def test_training_benchmark_times_a_stream_of_partial_fit_calls():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "bench" / "training.py")
    training_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(training_bench)
    X, y = nbmlp.load_iris()
    row = ("iris", (3,), "adam", 32, 1e-3, (1, 1))
    for lib in ("nbmlp", "sklearn"):
        times = training_bench.time_partial_fit(lib, X, y, row, 2)
        assert len(times) == 2 and all(0.0 < t < 1.0 for t in times), (lib, times)
