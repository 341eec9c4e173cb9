"""nbmlp._jit: serial twins on every supported Python, a cache that is never stale nor fatal, compile notices.

The cache tests run in subprocesses on a copy of the package with their own
NUMBA_CACHE_DIR, so that they can edit sources and damage cache files freely.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numba
import pytest

from nbmlp import _jit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- serial twins: the code-object rename, with and without co_qualname ---------


def _probe(x):
    return x + 1


@pytest.mark.parametrize("has_qualname", [False, True])
def test_renamed_code_with_and_without_co_qualname(has_qualname):
    if has_qualname and sys.version_info < (3, 11):
        pytest.skip("code objects have co_qualname from Python 3.11 on")
    code = _jit.renamed_code(_probe.__code__, "_serial", has_qualname)
    assert code.co_name == "_probe_serial"
    if sys.version_info >= (3, 11):
        expected = _probe.__code__.co_qualname + ("_serial" if has_qualname else "")
        assert code.co_qualname == expected
    # The renamed code compiles and runs as the original.
    import types

    twin = types.FunctionType(code, _probe.__globals__, "_probe_serial")
    assert numba.njit(twin)(41) == 42


def test_serial_twin_has_its_own_name():
    from nbmlp import kernels

    serial = kernels.linear_forward.serial.py_func
    assert serial.__name__ == "linear_forward_serial"
    assert serial.__qualname__ == "linear_forward_serial"
    assert serial.__code__.co_name == "linear_forward_serial"


# --- the cache ---------------------------------------------------------------------

HELPER = """
from nbmlp._jit import jit

@jit(inline="always", cache=True)
def helper(x):
    return x + {inc}
"""

USER = """
from nbmlp._jit import jit
from nbmlp.cacheprobe_helper import helper

@jit(cache=True)
def f(x):
    return helper(x) * 2
"""

RUN = """
import sys
from nbmlp.cacheprobe_user import f
print(f(1), len(f.stats.cache_hits))
"""


@pytest.fixture
def package_copy(tmp_path):
    """A copy of nbmlp with two probe modules (a compiled function inlining a helper of another module)."""
    shutil.copytree(os.path.join(ROOT, "nbmlp"), tmp_path / "nbmlp", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "nbmlp" / "cacheprobe_helper.py").write_text(HELPER.format(inc=1))
    (tmp_path / "nbmlp" / "cacheprobe_user.py").write_text(USER)
    return tmp_path


def _run(root, quiet=True):
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(root / "cache"),
           "NBMLP_QUIET": "1" if quiet else "0"}
    r = subprocess.run([sys.executable, "-c", RUN], cwd=root, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.split(), r.stderr


def test_cache_is_reused_when_nothing_changed(package_copy):
    assert _run(package_copy)[0] == ["4", "0"]  # compiled
    assert _run(package_copy)[0] == ["4", "1"]  # loaded from the cache


def test_editing_an_inlined_helper_in_another_module_recompiles(package_copy):
    assert _run(package_copy)[0] == ["4", "0"]
    # Only the helper's module changes; the user's file (and its own stamp) stays the same.
    time.sleep(0.01)
    (package_copy / "nbmlp" / "cacheprobe_helper.py").write_text(HELPER.format(inc=2))
    assert _run(package_copy)[0] == ["6", "0"]
    assert _run(package_copy)[0] == ["6", "1"]


def test_truncated_cache_files_mean_recompile(package_copy):
    assert _run(package_copy)[0] == ["4", "0"]
    files = [p for p in (package_copy / "cache").rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert any(p.suffix == ".nbi" for p in files) and any(p.suffix == ".nbc" for p in files)
    for p in files:
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    out, err = _run(package_copy, quiet=False)
    assert out == ["4", "0"]
    assert "is unreadable" in err and "recompiling" in err
    assert _run(package_copy)[0] == ["4", "1"]  # the recompiled code was saved again


def test_corrupt_data_file_with_a_valid_index_means_recompile(package_copy):
    assert _run(package_copy)[0] == ["4", "0"]
    for p in (package_copy / "cache").rglob("*.nbc"):
        p.write_bytes(b"not a pickle")
    assert _run(package_copy)[0] == ["4", "0"]
    assert _run(package_copy)[0] == ["4", "1"]


def test_locators_only_serve_nbmlp_files(tmp_path):
    outside = tmp_path / "elsewhere.py"
    outside.write_text("def g():\n    return 1\n")
    for locator in _jit.PACKAGE_LOCATORS:
        assert locator.from_function(_probe, str(outside)) is None
    assert _jit.in_package(os.path.join(_jit.PACKAGE_DIR, "kernels.py"))
    assert not _jit.in_package(str(outside))


def test_package_stamp_covers_every_module():
    stamp = _jit.package_stamp()
    assert len(stamp) == 64
    names = {os.path.relpath(p, _jit.PACKAGE_DIR) for p in _jit.package_sources()}
    assert {"kernels.py", "_jit.py", "parallel.py", "__init__.py"} <= names


# --- compile notices -----------------------------------------------------------


@pytest.fixture
def loud(monkeypatch):
    monkeypatch.delenv("NBMLP_QUIET", raising=False)
    _jit.set_quiet(None)
    yield
    _jit.set_quiet(None)


def test_a_long_block_is_announced_with_progress_and_duration(loud, capsys):
    with _jit.compiling("the probe", after=0.05, every=0.1):
        time.sleep(0.35)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "nbmlp: compiling the probe (first use; cached afterwards) ..."
    assert any(line.startswith("nbmlp: still compiling the probe (") for line in err[1:-1])
    assert err[-1].startswith("nbmlp: compiled the probe in ")


def test_a_fast_block_prints_nothing(loud, capsys):
    with _jit.compiling("the probe", after=1.0):
        pass
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("how", ["env", "function"])
def test_notices_can_be_silenced(loud, capsys, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("NBMLP_QUIET", "1")
    else:
        _jit.set_quiet(True)
    with _jit.compiling("the probe", after=0.0, every=0.05):
        time.sleep(0.15)
    assert capsys.readouterr().err == ""


def test_any_compile_of_an_nbmlp_function_is_announced(loud, capsys, monkeypatch):
    monkeypatch.setattr(_jit, "NOTICE_AFTER_S", 0.0)

    def probe_compiled_here(x):
        return x * 3

    probe_compiled_here.__module__ = "nbmlp.probe"
    assert numba.njit(probe_compiled_here)(2) == 6
    err = capsys.readouterr().err
    assert "nbmlp: compiling test_any_compile_of_an_nbmlp_function_is_announced.<locals>.probe_compiled_here" in err
    assert "nbmlp: compiled " in err


def test_compiles_outside_nbmlp_are_not_announced(loud, capsys, monkeypatch):
    monkeypatch.setattr(_jit, "NOTICE_AFTER_S", 0.0)

    def other(x):
        return x * 5

    assert numba.njit(other)(2) == 10
    assert capsys.readouterr().err == ""
