"""The layout the README's "Where things live" table promises, checked: small modules and functions, no
import cycle, nothing imported upwards (model/ never imports train/, bench/ or process.py; train/ and
bench/ never import the process.py script), no sys.path edits in bench/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("model", "phantoms", "train", "bench")
MAX_MODULE_LINES = 520
MAX_FUNCTION_LINES = 80
# Who may import whom: a package imports only those listed (and itself).
ALLOWED = {"model": set(), "phantoms": {"model"}, "train": {"model", "phantoms"},
           "bench": {"model", "phantoms", "train"}, "process": {"model"}}


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py")) + [ROOT / "process.py"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_are_small(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {', '.join(long)}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_is_imported_upwards(path):
    own = module_name(path).split(".")[0]
    ours = {name.split(".")[0] for name in imports_of(path)} & (set(ALLOWED) | set(PACKAGES))
    assert ours <= ALLOWED[own] | {own}, f"{path.name} imports {sorted(ours - ALLOWED[own] - {own})}"


def test_bench_never_edits_sys_path():
    for path in (ROOT / "bench").rglob("*.py"):
        assert "sys.path" not in path.read_text(), path.name


def test_no_import_cycle():
    graph = {module_name(path): {name for name in imports_of(path) if name.split(".")[0] in PACKAGES}
             for path in sources()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*trail, node, target])}"
            if target not in state:
                visit(target, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
