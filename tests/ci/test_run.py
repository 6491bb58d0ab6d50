"""edgec ci end to end on the digits CNN: real builds in worker processes, the cache, the gates, the
exit codes and the reports, and the CI guide's GitHub Actions workflow (docs/ci.md) run here command by command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from edgec.util import sha256_file
from tests.helpers.ci import copy_digits, validate_junit, write_config
from tests.helpers.cli import REPO, run_cli

CONFIG = """
    [[model]]
    name = "digits"
    path = "models/digits.keras"
    calib = "data/calib.npz"
    eval = "data/eval.npz"

    [[target]]
    profile = "rpi5"
    precision = "int8"

    [[target]]
    profile = "coral-usb"

    [[target]]
    profile = "x86-cpu"
    precision = "fp32"

    [budgets]
    max_accuracy_drop = 2.0
    max_bytes = 200_000
    min_compression_rate = 0.9
    max_bytes_growth_pct = 2

    [budgets."digits/coral-usb"]
    min_edgetpu_op_share = 1.0

    [budgets."digits/x86-cpu"]
    max_latency_p90_ms = 1000
"""
ROWS = ["digits/rpi5", "digits/coral-usb", "digits/x86-cpu"]
CACHE = ".edgec-cache"


def ci(root, *args):
    return run_cli("ci", *args, cwd=root)


def rows_of(path):
    return {r["id"]: r for r in json.loads(path.read_text())["rows"]}


def verdict(row, name):
    return next(v for v in row["budgets"] if v["name"] == name)


@pytest.fixture(scope="module")
def project(digits_dir, tmp_path_factory):
    """A project with the digits CNN and CONFIG, built once by `edgec ci` (cache in the project)."""
    root = copy_digits(digits_dir, tmp_path_factory.mktemp("ci-project"))
    write_config(root, CONFIG)
    proc = ci(root, "--cache", CACHE, "--json", "r1.json", "--junit", "r1.xml", "--markdown", "r1.md")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def test_first_run_builds_every_row_once_and_reports(project, junit_schema):
    doc = json.loads((project / "r1.json").read_text())
    assert doc["schema_version"] == 1 and doc["kind"] == "edgec-ci-results" and doc["verdict"] == "passed"
    rows = {r["id"]: r for r in doc["rows"]}
    assert list(rows) == ROWS
    for r in rows.values():
        assert r["status"] == "passed" and r["cache"]["state"] == "built" and len(r["cache"]["key"]) == 64
        manifest = json.loads((project / r["out_dir"] / "manifest.json").read_text())
        assert manifest["artifacts"][0]["sha256"] == r["figures"]["sha256"]
        assert sha256_file(project / r["out_dir"] / r["figures"]["artifact"]) == r["figures"]["sha256"]
    # the model is loaded and evaluated on the eval data once, by the first row
    assert [rows[r]["durations_s"]["shared"] for r in ROWS] == [[], ["load"], ["load"]]
    assert rows["digits/coral-usb"]["figures"]["edgetpu_op_share"] == 1.0
    assert rows["digits/x86-cpu"]["figures"]["compression_rate"] == pytest.approx(1.0, abs=0.05)
    assert rows["digits/rpi5"]["figures"]["compression_rate"] > 2.5
    # what cannot be judged is said, not passed
    assert verdict(rows["digits/x86-cpu"], "max_latency_p90_ms")["verdict"] == "not_measured"
    assert verdict(rows["digits/rpi5"], "max_bytes_growth_pct")["verdict"] == "no_baseline"
    assert verdict(rows["digits/rpi5"], "full_integer (model.tflite)")["verdict"] == "passed"
    xml = validate_junit(junit_schema, (project / "r1.xml").read_text())
    assert [s.get("name") for s in xml.findall("testsuite")] == ROWS
    assert xml.get("failures") == "0" and xml.get("errors") == "0"
    md = (project / "r1.md").read_text()
    assert md.startswith("## edgec ci: ✅ passed") and "| digits/coral-usb | int8 | model_int8.tflite |" in md


def test_unchanged_rerun_builds_nothing_and_loads_no_tensorflow(project):
    before = {r: sha256_file(project / "dist" / r) for r in ROWS}
    proc = ci(project, "--cache", CACHE, "--json", "r2.json", "--baseline", "r1.json")
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(project / "r2.json")
    assert [rows[r]["cache"]["state"] for r in ROWS] == ["cached"] * 3
    assert [line.split(": ")[1] for line in proc.stderr.splitlines() if line.startswith("digits/")] == ["cached"] * 3
    table = [line for line in proc.stdout.splitlines() if line.startswith("│ digits/")]
    assert len(table) == 3 and all("cached" in line for line in table)
    assert {r: sha256_file(project / "dist" / r) for r in ROWS} == before
    assert verdict(rows["digits/rpi5"], "max_bytes_growth_pct")["verdict"] == "passed"
    # a run whose rows are all cached imports no TensorFlow (that is why it is fast)
    code = textwrap.dedent("""
        import sys
        from edgec.ci import load_config
        from edgec.ci.runner import RunOptions, run
        doc = run(load_config("edgec.toml"), RunOptions(cache_dir=".edgec-cache"))
        assert [r["cache"]["state"] for r in doc["rows"]] == ["cached"] * 3, doc["rows"]
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=project)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_corrupt_cache_entry_is_rebuilt_not_trusted(project):
    key = rows_of(project / "r1.json")["digits/coral-usb"]["cache"]["key"]
    entry = next((project / CACHE).rglob(key))
    (entry / "build" / "model_int8.tflite").write_bytes(b"corrupt")
    proc = ci(project, "--cache", CACHE, "--json", "r3.json")
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(project / "r3.json")
    coral = rows["digits/coral-usb"]
    assert coral["cache"]["state"] == "rebuilt" and "corrupt cache entry removed" in coral["cache"]["note"]
    assert [rows[r]["cache"]["state"] for r in ("digits/rpi5", "digits/x86-cpu")] == ["cached", "cached"]
    assert coral["figures"]["sha256"] == rows_of(project / "r1.json")["digits/coral-usb"]["figures"]["sha256"]
    assert sha256_file(next((project / CACHE).rglob(key)) / "build" / "model_int8.tflite") == coral["figures"]["sha256"]


def test_broken_budget_and_failed_build_fail_the_run_not_the_other_rows(project, junit_schema):
    (project / "models" / "broken.keras").write_bytes(b"PK\x03\x04 truncated")
    config = CONFIG.replace('[[target]]\n    profile = "x86-cpu"\n    precision = "fp32"\n', "")
    config = config.replace('[budgets."digits/x86-cpu"]\n    max_latency_p90_ms = 1000\n', "")
    config += '\n    [[model]]\n    path = "models/broken.keras"\n    calib = "data/calib.npz"\n    eval = "data/eval.npz"\n'
    config += '\n    [budgets."digits/rpi5"]\n    max_bytes = 30_000\n'
    write_config(project, config, "broken.toml")
    proc = ci(project, "broken.toml", "--cache", CACHE, "--jobs", "2", "--json", "b.json", "--junit", "b.xml",
              "--markdown", "b.md")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: 3 of 4 rows failed: digits/rpi5 (max_bytes); broken/rpi5 (build error); "
                      "broken/coral-usb (build error)"]
    rows = rows_of(project / "b.json")
    assert rows["digits/rpi5"]["status"] == "failed" and rows["digits/coral-usb"]["status"] == "passed"
    assert rows["digits/rpi5"]["cache"]["state"] == "cached"  # budgets are not part of the key
    for r in ("broken/rpi5", "broken/coral-usb"):
        assert rows[r]["status"] == "error" and "cannot read model" in rows[r]["error"]
        assert rows[r]["figures"] is None and all(v["verdict"] == "not_measured" for v in rows[r]["budgets"])
    xml = validate_junit(junit_schema, (project / "b.xml").read_text())
    assert xml.get("failures") == "1" and xml.get("errors") == "2"
    assert "exceeds max_bytes 30,000" in "".join(xml.itertext())
    md = (project / "b.md").read_text()
    assert "- **broken/rpi5** build error: cannot read model" in md and "❌ max_bytes" in md


def test_latency_measured_on_a_device_and_regressions_against_the_baseline(project):
    proc = ci(project, "--cache", CACHE, "--only", "digits/x86-cpu", "--device", "local", "--min-seconds", "0.2",
              "--json", "lat.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = rows_of(project / "lat.json").values()
    lat = verdict(row, "max_latency_p90_ms")
    assert lat["verdict"] == "passed" and 0 < lat["value"] < 1000 and row["figures"]["latency_runs"] > 10
    # a baseline whose artifact was smaller: the size grew beyond the 2 % allowed
    base = json.loads((project / "r1.json").read_text())
    base["rows"][0]["figures"]["bytes"] = int(base["rows"][0]["figures"]["bytes"] * 0.9)
    (project / "smaller.json").write_text(json.dumps(base))
    proc = ci(project, "--cache", CACHE, "--only", "digits/rpi5", "--baseline", "smaller.json", "--markdown", "reg.md")
    assert proc.returncode == 1 and "digits/rpi5 (max_bytes_growth_pct)" in proc.stderr
    assert "(+11.1 %) ▲ regression" in (project / "reg.md").read_text()


def _workflow() -> dict:
    yaml = pytest.importorskip("yaml")
    text = (REPO / "docs" / "ci.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "edgec ci plan" in b)
    return yaml.safe_load(block)


def _script(step: dict, matrix: dict | None = None) -> str:
    def sub(match):
        expr = match.group(1).strip()
        assert matrix is not None and expr.startswith("matrix."), f"the test cannot run '{expr}'"
        return str(matrix[expr.removeprefix("matrix.")])

    return re.sub(r"\$\{\{(.*?)\}\}", sub, step["run"])


def test_ci_guide_workflow_runs_here(project, tmp_path, junit_schema):
    """The CI guide's GitHub Actions workflow, its edgec steps run here in order: plan the matrix,
    build each shard (restoring the cache), merge, write the step summary."""
    wf = _workflow()
    jobs = wf["jobs"]
    assert jobs["build"]["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    cache = next(s for s in jobs["build"]["steps"] if s.get("uses", "").startswith("actions/cache"))
    assert "hashFiles('edgec.toml', 'requirements.lock')" in cache["with"]["key"] and cache["with"]["path"] == CACHE
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in jobs["report"]["steps"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "edgec").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m edgec "$@"\n')
    (bin_dir / "edgec").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EDGEC_PROGRESS": "0",
           "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}
    shutil.rmtree(project / "baseline", ignore_errors=True)

    def bash(script: str, ok=(0,)):
        proc = subprocess.run(["bash", "-eo", "pipefail", "-c", script], capture_output=True, text=True,
                              cwd=project, env=env, timeout=900)
        assert proc.returncode in ok, script + "\n" + proc.stdout + proc.stderr
        return proc

    for step in jobs["plan"]["steps"]:
        if "edgec " in step.get("run", ""):
            bash(_script(step))
    matrix = json.loads(re.search(r"^matrix=(.*)$", (tmp_path / "output").read_text(), re.M).group(1))
    shards = matrix["include"]
    assert len(shards) == 3 and sorted(r for s in shards for r in s["rows"]) == sorted(ROWS)
    for shard in shards:
        for step in jobs["build"]["steps"]:
            if "edgec " in step.get("run", ""):
                bash(_script(step, shard))
        assert (project / f"shard-{shard['shard']}.json").is_file()
    for step in jobs["report"]["steps"]:
        if "edgec " in step.get("run", "") or "GITHUB_STEP_SUMMARY" in step.get("run", ""):
            bash(_script(step))
    merged = json.loads((project / "results.json").read_text())
    assert sorted(r["id"] for r in merged["rows"]) == sorted(ROWS) and merged["verdict"] == "passed"
    assert all(r["cache"]["state"] == "cached" for r in merged["rows"])
    validate_junit(junit_schema, (project / "junit.xml").read_text())
    summary = (tmp_path / "summary").read_text()
    assert summary.startswith("## edgec ci: ✅ passed") and "digits/coral-usb" in summary
