"""The import contracts of pyproject.toml hold: the layers (CLI -> use cases -> domain -> backends)
and no import cycles. They count imports made inside functions, so a cycle hidden in a function
body fails them (shown on a toy package)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path, source_root: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter", reason="import-linter is not installed: pip install -e '.[dev]'")
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.is_file():
        pytest.skip(f"no lint-imports beside {sys.executable}")
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_edgec_keeps_its_import_contracts():
    result = _lint_imports(ROOT, ROOT / "toolchain")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_a_cycle_through_an_import_inside_a_function_breaks_the_contracts(tmp_path):
    pkg = tmp_path / "src" / "toy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "high.py").write_text("from toy import low\n")
    (pkg / "low.py").write_text("def later():\n    from toy import high\n\n    return high\n")
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""\
        [importlinter]
        root_package = toy

        [importlinter:contract:layers]
        name = toy layers
        type = layers
        layers =
            toy.high
            toy.low

        [importlinter:contract:acyclic]
        name = toy without cycles
        type = acyclic_siblings
        ancestors = toy
        """))
    result = _lint_imports(tmp_path, tmp_path / "src")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "toy.low is not allowed to import toy.high" in result.stdout
    assert "Contracts: 0 kept, 2 broken." in result.stdout


def test_no_module_imports_a_private_name_of_another():
    """``_name`` is private to its module: another module that needs it gets a public name."""
    import ast

    found = []
    for path in sorted((ROOT / "toolchain" / "edgec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and ((node.module or "").startswith("edgec") or node.level):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_no_import_cycles_between_modules():
    """Module by module, a package with its own submodules included (which the package-level
    contract does not look at): no import cycles, imports inside functions counted."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter: pip install -e '.[dev]'")
    graph = grimp.build_graph("edgec", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    reverse: dict[str, list[str]] = {m: [] for m in modules}
    for m, targets in edges.items():
        for t in targets:
            reverse[t].append(m)
    order: list[str] = []  # Kosaraju: finish order on the graph, then components on its reverse
    seen: set[str] = set()
    for root in modules:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(edges[root]))]
        while stack:
            node, it = stack[-1]
            nxt = next((t for t in it if t not in seen), None)
            if nxt is None:
                order.append(node)
                stack.pop()
            else:
                seen.add(nxt)
                stack.append((nxt, iter(edges[nxt])))
    assigned: set[str] = set()
    cycles = []
    for root in reversed(order):
        if root in assigned:
            continue
        component, todo = {root}, [root]
        assigned.add(root)
        while todo:
            for m in reverse[todo.pop()]:
                if m not in assigned:
                    assigned.add(m)
                    component.add(m)
                    todo.append(m)
        if len(component) > 1:
            cycles.append(component)
    assert cycles == []


def test_no_function_is_longer_than_150_lines():
    """Long functions are split by role; ruff's complexity rules (pyproject.toml) hold the rest."""
    import ast

    long = []
    for path in sorted((ROOT / "toolchain" / "edgec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 150:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_no_test_module_imports_a_conftest_or_another_test_module():
    """Shared helpers live in tests/helpers; conftest files hold fixtures, and test modules import
    neither a conftest nor one another (pytest loads both under its own rules)."""
    import ast

    def forbidden(module: str) -> bool:
        return any(part == "conftest" or part.startswith("test_") for part in module.split("."))

    found = []
    tests = ROOT / "tests"
    for path in sorted(tests.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if path.name == "conftest.py" or rel.parts[:2] == ("tests", "helpers"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            if any(forbidden(name) for name in names):
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
