"""The agent is a separate world: Python 3.6 syntax, standard library only, one zipapp."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgec.agent import bundle
from tests.helpers.cli import REPO

AGENT_DIR = REPO / "toolchain" / "edgec" / "agent"
AGENT_FILES = sorted(AGENT_DIR.rglob("*.py"))

# Standard-library features newer than Python 3.6 that parse fine with feature_version=(3, 6).
NEWER_THAN_36 = ["capture_output=", "text=True", "perf_counter_ns", "time_ns", "from __future__ import annotations",
                 "import dataclasses", "contextlib.nullcontext", "shlex.join", "math.prod", "fromisoformat",
                 "asyncio.run(", "breakpoint(", "removeprefix", "removesuffix", "functools.cache", "math.dist"]


def test_agent_files_exist():
    names = {p.relative_to(AGENT_DIR).as_posix() for p in AGENT_FILES}
    for required in ("__init__.py", "__main__.py", "cli.py", "bench.py", "schema.py", "sensors.py", "power.py",
                     "device.py", "bundle.py", "runtimes/tflite.py", "runtimes/onnxrt.py", "runtimes/tensorrt.py"):
        assert required in names


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: p.relative_to(AGENT_DIR).as_posix())
def test_python36_syntax(path):
    source = path.read_text()
    ast.parse(source, filename=str(path), feature_version=(3, 6))
    used = [feature for feature in NEWER_THAN_36 if feature in source]
    assert not used, f"{path.name} uses standard-library features newer than Python 3.6: {used}"
    if "importlib.metadata" in source or "from importlib import metadata" in source:
        assert "sys.version_info >= (3, 8)" in source, f"{path.name}: importlib.metadata must be guarded"


def test_python36_check_rejects_newer_syntax():
    """The check above can fail: a walrus is Python 3.8 syntax."""
    with pytest.raises(SyntaxError):
        ast.parse("if (n := 1):\n    pass\n", feature_version=(3, 6))


def test_only_relative_imports_of_the_agent():
    """No 'edgec.' import inside the agent: it runs on devices without edgec installed."""
    for path in AGENT_FILES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("edgec"), f"{path.name}: from {node.module} import ..."
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("edgec") for a in node.names), path.name


BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    ALLOWED = set(sys.stdlib_module_names) | {"edgec_agent", "__main__"}
    BLOCKED = []
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] not in ALLOWED:
                BLOCKED.append(name)
                raise ImportError("blocked third-party import: " + name)
            return None
    sys.meta_path.insert(0, Block())
""")


def run_blocked(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in an isolated interpreter where only the standard library can be imported."""
    return subprocess.run([sys.executable, "-I", "-c", BLOCKER + textwrap.dedent(code), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_every_agent_module_imports_with_third_party_packages_blocked(agent_pyz, tmp_path):
    proc = run_blocked("""
        import pkgutil
        sys.path.insert(0, sys.argv[1])
        import edgec_agent
        names = [m.name for m in pkgutil.walk_packages(edgec_agent.__path__, "edgec_agent.")]
        for name in names:
            __import__(name)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "tensorflow", "onnxruntime",
                       "ai_edge_litert", "tflite_runtime", "tensorrt", "edgec", "click", "rich"))
        print("MODULES", len(names), "HEAVY", heavy, "BLOCKED", BLOCKED)
    """, str(agent_pyz), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    n_modules = int(proc.stdout.split("MODULES ")[1].split()[0])
    assert n_modules >= 12


def test_zipapp_runs_standalone_with_third_party_blocked(agent_pyz, tmp_path):
    proc = run_blocked("""
        import runpy
        sys.argv = [sys.argv[1]] + sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """, str(agent_pyz), "detect", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["device"]["kind"] in ("generic", "jetson", "rpi", "coral-devboard")
    assert "available" in doc["power"]


def test_runtime_absent_is_said_plainly(agent_pyz, digits_builds, tmp_path):
    """With LiteRT unimportable, bench exits 3 with one line naming what is missing and how to get it."""
    model = digits_builds["int8"] / "model.tflite"
    proc = run_blocked("""
        import runpy
        sys.argv = [sys.argv[1]] + sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """, str(agent_pyz), "bench", str(model), "--runs", "5", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: LiteRT absent"), proc.stderr
    assert "ai-edge-litert" in lines[0] and "Traceback" not in proc.stderr


def test_zipapp_is_reproducible_and_holds_every_module(tmp_path):
    import zipfile

    a = Path(bundle.build(str(tmp_path / "a.pyz")))
    b = Path(bundle.build(str(tmp_path / "b.pyz")))
    assert hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()
    assert a.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    names = set(zipfile.ZipFile(a).namelist())
    assert "__main__.py" in names
    for path in AGENT_FILES:
        assert "edgec_agent/" + path.relative_to(AGENT_DIR).as_posix() in names


def test_edgec_agent_bundle_command(cli_runner, tmp_path):
    out = tmp_path / "edgec-agent.pyz"
    code, stdout, _ = cli_runner("agent", "bundle", "-o", out)
    assert code == 0 and out.exists() and "sha256" in stdout
    proc = subprocess.run([sys.executable, str(out), "version"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("edgec-agent ")
    code, _, stderr = cli_runner("agent", "bundle", "-o", tmp_path)
    assert code == 2 and "is a directory" in stderr


def test_agent_usage_errors_are_one_line(agent_pyz, tmp_path):
    missing = subprocess.run([sys.executable, str(agent_pyz), "bench", str(tmp_path / "nope.tflite")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == f"Error: artifact '{tmp_path / 'nope.tflite'}' does not exist"
    (tmp_path / "model.bin").write_bytes(b"x")
    unknown = subprocess.run([sys.executable, str(agent_pyz), "bench", str(tmp_path / "model.bin")],
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "expected .tflite, .onnx, .engine/.plan or build.json" in unknown.stderr
