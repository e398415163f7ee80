"""The package's layout rules (docs/design.md): small modules and functions, no import
circles, and a command line that loads neither the benchmark harness nor POSIX-only modules.
The layers themselves are checked by import-linter (``lint-imports``, contracts in
pyproject.toml)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import metarobust

PACKAGE = Path(metarobust.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_the_package_is_found_from_source():
    assert len(SOURCES) > 30 and (PACKAGE / "cli" / "__init__.py").is_file()


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_modules_and_functions_are_small(path):
    text = path.read_text()
    lines = text.count("\n") + 1
    assert lines <= MAX_MODULE_LINES, f"{_name(path)}: {lines} lines"
    long = [(node.name, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{_name(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_import_circles():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("metarobust", cache_dir=None)
    # The Rust extension has no source: `from . import _core` is recorded as an import of
    # the package itself; the package's __init__ re-exports everything by design.
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i != "metarobust"}
             for m in graph.modules if m != "metarobust"}
    circles = []
    for importer, imported in sorted((a, b) for a, bs in edges.items() for b in bs):
        back = graph.find_shortest_chain(importer=imported, imported=importer)
        if back and "metarobust" not in back:
            circles.append((importer, *back))
    assert not circles, f"import circles: {circles[:5]}"


def test_the_command_line_loads_no_benchmark_or_posix_only_module():
    code = ("import sys, metarobust.cli; "
            "bad = [m for m in sys.modules if m.startswith('metarobust.bench') or m in "
            "('resource', 'matplotlib', 'torch._dynamo', 'torch._inductor')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize("command", ["", "quickstart", "train", "eval", "robustness", "data",
                                     "bench", "benchmark"])
def test_help_loads_no_benchmark_or_heavy_module(command):
    code = ("import sys, runpy\n"
            "sys.argv = ['metarobust', *sys.argv[1:], '--help']\n"
            "try:\n"
            "    runpy.run_module('metarobust', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "bad = [m for m in sys.modules if m.startswith('metarobust.bench') or m in "
            "('resource', 'matplotlib', 'torch._dynamo', 'torch._inductor')]\n"
            "print('LOADED', bad)\n")
    res = subprocess.run([sys.executable, "-c", code, *command.split()], capture_output=True,
                         text=True, check=True)
    assert "usage: metarobust" in res.stdout
    assert res.stdout.strip().endswith("LOADED []"), res.stdout[-300:]
