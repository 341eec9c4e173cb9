"""The package's module-level imports form no cycle, and the table of operations imports nothing of nbmlp."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nbmlp"
MODULES = {p.stem for p in PACKAGE.glob("*.py")}


def module_level_imports(name: str) -> set:
    """Modules of nbmlp that ``nbmlp/<name>.py`` imports at module level (not inside functions)."""
    found = set()
    for node in ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nbmlp"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("nbmlp.")}
    return (found & MODULES) - {name}


def test_no_module_level_import_cycle():
    graph = {m: module_level_imports(m) for m in MODULES}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycle = path[path.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    for name, body in (("a", "from . import b\n"), ("b", "from .a import f\n")):
        (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {"a", "b"})
    try:
        test_no_module_level_import_cycle()
    except AssertionError as exc:
        assert "a -> b -> a" in str(exc)
    else:
        raise AssertionError("a cycle a -> b -> a was not reported")


def test_the_table_of_operations_imports_nothing_of_nbmlp():
    """Every module may read nbmlp.ops without an import cycle."""
    assert module_level_imports("ops") == set()
