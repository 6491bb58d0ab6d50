"""`edgec profile --device ssh://...` against a real OpenSSH server on loopback started here.

The device side is this machine reached through sshd: the zipapp and the artifact go over scp,
their sha256 is checked there, the agent runs with the Python named by --python, and the
working directory is removed afterwards. Skipped with the reason when sshd cannot start.
"""

from __future__ import annotations

import glob
import json
import sys
import tempfile

import pytest

from edgec.results import ResultsStore
from tests.helpers.cli import run_cli


def _agent_dirs():
    return set(glob.glob(tempfile.gettempdir() + "/edgec-agent-*"))


def test_profile_over_ssh(sshd, digits_builds, tmp_path):
    db = tmp_path / "results.db"
    before = _agent_dirs()
    proc = run_cli("profile", digits_builds["int8"], "--device", sshd["url"], *sshd["args"], "--python", sshd["python"],
                   "--runs", "100", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    report = result["report"]
    manifest = json.loads((digits_builds["int8"] / "manifest.json").read_text())
    assert report["artifact"]["sha256"] == manifest["artifacts"][0]["sha256"]
    assert report["artifact"]["path"].startswith(tempfile.gettempdir() + "/edgec-agent-")  # it ran in the copy
    assert report["latency_ms"]["count"] == 100 and report["runtime"]["name"] == "litert"
    (row,) = ResultsStore(db).rows()
    assert row["device"] == sshd["url"] and row["id"] == result["result_id"]
    assert _agent_dirs() == before  # cleaned up on the device


def test_device_without_the_runtime(sshd, digits_builds, tmp_path):
    """The device's system Python has no LiteRT: one line saying so, and the copy is removed."""
    system_python = "/usr/bin/python3"
    probe = __import__("subprocess").run([system_python, "-c", "import ai_edge_litert"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{system_python} has ai_edge_litert")
    before = _agent_dirs()
    proc = run_cli("profile", digits_builds["int8"], "--device", sshd["url"], *sshd["args"], "--python",
                   system_python, "--runs", "5", "--db", tmp_path / "r.db")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"Error: the agent on {sshd['url']} could not measure model.tflite: LiteRT absent")
    assert _agent_dirs() == before


def test_unreachable_device(sshd, digits_builds, tmp_path):
    url = sshd["url"].rsplit(":", 1)[0] + ":1"
    proc = run_cli("profile", digits_builds["int8"], "--device", url, *sshd["args"], "--python", sys.executable,
                   "--db", tmp_path / "r.db")
    assert proc.returncode == 2 and f"cannot reach {url} over ssh" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
