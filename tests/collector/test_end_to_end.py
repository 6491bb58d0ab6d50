"""End to end on loopback: `edgec serve` + a real agent process + `edgec profile --server --wait`
on the digits fp32 and int8 builds, then `edgec report --server`, `edgec devices`, `edgec jobs`."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.fleet import wait_for


def _registered(server, name):
    with server.client() as c:
        return any(d["id"] == name for d in c.get("/v1/devices").json()["devices"])


def test_profile_wait_then_report(serve, agents, builds, tmp_path):
    server = serve()
    agent = agents(server, "cpu-1", "--profile", "x86-cpu", "--labels", "lab=ci,rack=2")
    wait_for(lambda: _registered(server, "cpu-1"), 60, "the agent to register")

    proc = server.cli("profile", builds["fp32"], builds["int8"], "--server", server.url, "--wait", "--runs", "200",
                      "--labels", "lab=ci")
    assert proc.returncode == 0, proc.stderr + agent.text()
    out = proc.stdout
    assert out.count("latency over 200 runs") == 2 and "against the fp32 artifact" in out
    assert "stored as result 1 on" in out and "stored as result 2 on" in out
    assert "queued job 1" in proc.stderr and "queued job 2" in proc.stderr

    # the same rows as a local report, computed from the collector's record
    rep = server.cli("report", "--server", server.url, "--format", "json")
    assert rep.returncode == 0, rep.stderr
    rows = {r["precision"]: r for r in json.loads(rep.stdout)["rows"]}
    assert set(rows) == {"fp32", "int8"}
    fp32, int8 = rows["fp32"], rows["int8"]
    assert fp32["device"] == int8["device"] == "cpu-1" and fp32["runs"] == int8["runs"] == 200
    assert int8["speedup_vs_fp32"] == pytest.approx(fp32["latency_median_ms"] / int8["latency_median_ms"])
    assert int8["compression_vs_fp32"] > 2 and int8["accuracy_pct"] > 90 and fp32["speedup_vs_fp32"] == 1.0
    manifest = json.loads((builds["int8"] / "manifest.json").read_text())
    assert int8["artifact_sha256"] == manifest["artifacts"][0]["sha256"]
    assert int8["accuracy_pct"] == pytest.approx(manifest["artifacts"][0]["verification"]["artifact_accuracy"] * 100)
    assert f"{int8['speedup_vs_fp32']:.2f}" in out.split("against the fp32 artifact")[1]

    table = server.cli("report", "--server", server.url)
    assert table.returncode == 0 and "speedup x" in table.stdout and "cpu-1" in table.stdout
    png = tmp_path / "fleet.png"
    md = server.cli("report", "--server", server.url, "--format", "markdown", "--plot", png)
    assert md.returncode == 0 and md.stdout.startswith("| model | device |") and png.stat().st_size > 10_000
    # the collector's database is a results store: the local reader gives the same rows
    local = run_cli("report", "--db", server.db, "--format", "json")
    assert local.returncode == 0, local.stderr
    assert {r["result_id"] for r in json.loads(local.stdout)["rows"]} == {fp32["result_id"], int8["result_id"]}

    devices = json.loads(server.cli("devices", "--server", server.url, "--json").stdout)["devices"]
    (dev,) = devices
    assert dev["id"] == "cpu-1" and dev["profile"] == "x86-cpu" and dev["state"] == "idle"
    assert dev["labels"] == {"lab": "ci", "rack": "2"} and dev["runtimes"]["litert"] == "2.3.0"
    assert dev["detected"]["kind"] == "generic" and "available" in dev["power"]
    assert "cpu-1" in server.cli("devices", "--server", server.url).stdout

    jobs = json.loads(server.cli("jobs", "--server", server.url, "--json").stdout)["jobs"]
    assert [(j["id"], j["state"], j["attempts"]) for j in jobs] == [(2, "done", 1), (1, "done", 1)]
    one = server.cli("jobs", "1", "--server", server.url)
    assert one.returncode == 0 and "job 1: done" in one.stdout and "cpu-1" in one.stdout
    log = agent.text()
    assert "registered as 'cpu-1'" in log and "job 1" in log and "result 1 stored" in log


def test_profile_without_wait_queues_and_warns_when_no_device_matches(serve, builds):
    server = serve()
    proc = server.cli("profile", builds["int8"], "--server", server.url, "--target", "rpi5", "--json")
    assert proc.returncode == 0, proc.stderr
    (job,) = json.loads(proc.stdout)["jobs"]
    assert job["state"] == "queued" and job["profile"] == "rpi5" and job["matching_devices"] == []
    assert "no registered device can run job 1" in proc.stderr
    listed = server.cli("jobs", "--server", server.url, "--state", "queued")
    assert listed.returncode == 0 and "profile rpi5" in listed.stdout
    cancelled = server.cli("jobs", "1", "--cancel", "--server", server.url, "--json")
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    again = server.cli("jobs", "1", "--cancel", "--server", server.url)
    assert again.returncode == 2 and "already cancelled" in again.stderr


def test_client_errors_are_one_line(serve, builds, tmp_path):
    server = serve()
    wrong = run_cli("devices", "--server", server.url, env={"EDGEC_TOKEN": "x" * 43})
    assert wrong.returncode == 2 and "refused the token (401)" in wrong.stderr
    none = run_cli("jobs", "--server", server.url)
    assert none.returncode == 2 and "no collector token" in none.stderr
    down = server.cli("devices", "--server", "http://127.0.0.1:9")
    assert down.returncode == 2 and "cannot reach the collector" in down.stderr
    bad_url = server.cli("report", "--server", "ftp://x")
    assert bad_url.returncode == 2 and "expected http://HOST:PORT" in bad_url.stderr
    mixed = server.cli("profile", builds["int8"], "--server", server.url, "--python", "python3")
    assert mixed.returncode == 2 and "--python do(es) not apply with --server" in mixed.stderr
    no_server = server.cli("profile", builds["int8"], "--wait")
    assert no_server.returncode == 2 and "need(s) --server" in no_server.stderr
    labels = server.cli("profile", builds["int8"], "--server", server.url, "--labels", "oops")
    assert labels.returncode == 2 and "expected KEY=VALUE" in labels.stderr
    empty = server.cli("report", "--server", server.url)
    assert empty.returncode == 2 and "no results on the collector" in empty.stderr
    for proc in (wrong, none, down, bad_url, mixed, no_server, labels, empty):
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
