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
