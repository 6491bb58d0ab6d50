"""Real agent processes against a real collector: an agent killed mid-job, a tampered artifact,
a collector that goes away and comes back, a result left in the spool."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from tests.helpers.fleet import get_job, processes_with, upload_and_queue, wait_for


@pytest.mark.slow
def test_agent_killed_mid_job_is_requeued_and_finished_by_another(serve, agents, builds, tmp_path, capsys):
    """SIGKILL an agent while it measures: its lease expires, the job is re-queued and a second
    agent completes it; exactly one result is stored, and a late result of the dead attempt is refused."""
    server = serve()
    first = agents(server, "dies", "--profile", "x86-cpu")
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], options={"min_seconds": 3, "warmup": 1}, lease_seconds=2)
    wait_for(lambda: "measuring" in first.text(), 60, "the first agent to start measuring")
    assert get_job(server, job["id"])["leased_to"] == "dies"
    time.sleep(0.5)  # mid-run: the benchmark child is timing inferences
    children = processes_with(str(first.work_dir))
    assert children, "the benchmark child was not found"
    first.kill()
    killed = time.time()
    # the benchmark child dies with its agent (PR_SET_PDEATHSIG): no orphan keeps measuring
    wait_for(lambda: not processes_with(str(first.work_dir)), 10, "the benchmark child to die with its agent")

    agents(server, "takes-over", "--profile", "x86-cpu")
    done = wait_for(lambda: (j := get_job(server, job["id"]))["state"] == "done" and j, 90,
                    "the second agent to finish the job")
    assert done["attempts"] == 2 and done["error"] is None
    (a1, a2) = done["leases"]
    assert (a1["device"], a1["outcome"]) == ("dies", "expired") and "no heartbeat from dies" in a1["detail"]
    assert (a2["device"], a2["outcome"]) == ("takes-over", "done")
    assert a1["ended"] >= a1["expires"]  # re-queued only once the lease had run out
    # the second run lasted longer than its 2 s lease: its heartbeats renewed it
    assert a2["ended"] - a2["issued"] > 2.0

    with server.client() as c:
        stored = c.get(f"/v1/results/{done['result_id']}").json()
        assert stored["device"] == "takes-over" and stored["job_id"] == job["id"]
        late = c.post("/v1/results", json={"uid": uuid.uuid4().hex, "job_id": job["id"], "lease_id": a1["id"],
                                           "device": "dies", "instance": uuid.uuid4().hex,
                                           "report": stored["report"]})
        assert late.status_code == 409 and "already has result" in late.json()["detail"]
    with sqlite3.connect(server.db) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM submissions WHERE job_id = ?", (job["id"],)).fetchone()[0] == 1
    assert "lease expired, re-queued" in server.log.read_text()
    with capsys.disabled():
        print(f"\n[lease] killed at +0.0 s; lease expired at +{a1['expires'] - killed:.2f} s, re-queued at "
              f"+{a1['ended'] - killed:.2f} s (lease 2 s, reaper every 0.25 s); second agent leased it at "
              f"+{a2['issued'] - killed:.2f} s and finished at +{a2['ended'] - killed:.2f} s")


def test_tampered_artifact_is_refused_by_the_agent(serve, agents, builds):
    """The collector's copy is altered after upload: the agent downloads it, finds another sha256,
    refuses to run it and reports why; the job fails without a measurement."""
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])
    sha = job["artifact"]["sha256"]
    blob = server.dir / "blobs" / sha[:2] / sha
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    blob.write_bytes(bytes(data))
    agent = agents(server, "careful", "--profile", "x86-cpu")
    failed = wait_for(lambda: (j := get_job(server, job["id"]))["state"] == "failed" and j, 60, "the job to fail")
    assert "refused to run model.tflite" in failed["error"] and f"expected {sha}" in failed["error"]
    assert failed["result_id"] is None and failed["leases"][0]["outcome"] == "failed"
    log = agent.text()
    assert "measuring" not in log and "refused to run model.tflite" in log
    assert not list(agent.work_dir.glob("job-*"))  # nothing left behind


def test_agent_reconnects_with_backoff_and_the_record_survives(serve, agents, builds, tmp_path):
    """The collector is killed and started again on the same port and database: the agent keeps
    retrying (with growing delays), registers again and takes the next job."""
    server = serve()
    agent = agents(server, "patient", "--profile", "x86-cpu")
    wait_for(lambda: "registered as 'patient'" in agent.text(), 60, "registration")
    port = int(server.url.rsplit(":", 1)[1])
    server.kill()
    wait_for(lambda: agent.text().count("collector unreachable") >= 3, 60, "three failed reconnections")
    delays = [float(line.rsplit("retrying in ", 1)[1].split()[0]) for line in agent.text().splitlines()
              if "collector unreachable" in line]
    assert max(delays[2:]) > min(delays[:1]) and all(d <= 30 for d in delays)
    server.start(port=port)
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], options={"runs": 20})
    done = wait_for(lambda: (j := get_job(server, job["id"]))["state"] == "done" and j, 90, "the job to be done")
    assert done["leases"][0]["device"] == "patient"
    assert agent.text().count("registered as 'patient'") >= 2


def test_spooled_result_is_sent_on_the_next_start(serve, agents, builds, int8_report, tmp_path):
    """A report the agent could not deliver stays in its spool and is posted when it starts again."""
    server = serve()
    instance = uuid.uuid4().hex
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])
        c.post("/v1/devices/register", json={"device": "spooler", "instance": instance, "profile": "x86-cpu",
                                             "runtimes": {"litert": None}, "schema_version": 1}).raise_for_status()
        lease = c.post("/v1/devices/spooler/lease", json={"instance": instance}).json()
    spool = tmp_path / "work-spooler" / "spool"
    spool.mkdir(parents=True)
    uid = uuid.uuid4().hex
    (spool / f"{uid}.json").write_text(json.dumps({"uid": uid, "job_id": job["id"], "lease_id": lease["lease_id"],
                                                   "device": "spooler", "instance": instance,
                                                   "report": int8_report}))
    agent = agents(server, "spooler", "--profile", "x86-cpu")
    done = wait_for(lambda: (j := get_job(server, job["id"]))["state"] == "done" and j, 60, "the spooled result")
    assert done["attempts"] == 1
    # the agent removes the spooled file once it has the collector's answer, a moment after the job is done
    wait_for(lambda: not list(spool.iterdir()), 30, "the spool to empty")
    assert "sending the spooled result of job 1" in agent.text()


def test_agent_usage_errors_are_one_line(agent_pyz, tmp_path):
    def run(*args, env=None):
        return subprocess.run([sys.executable, str(agent_pyz), "run", *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path, env={**os.environ, **(env or {})})

    env = {k: v for k, v in os.environ.items() if k != "EDGEC_TOKEN"}
    no_token = subprocess.run([sys.executable, str(agent_pyz), "run", "--server", "http://127.0.0.1:9"],
                              capture_output=True, text=True, timeout=60, env=env)
    assert no_token.returncode == 2 and "no token" in no_token.stderr
    bad_url = run("--server", "localhost:8750", "--token", "t" * 20)
    assert bad_url.returncode == 2 and "expected http://HOST:PORT" in bad_url.stderr
    labels = run("--server", "http://127.0.0.1:9", "--token", "t" * 20, "--labels", "a=b,oops")
    assert labels.returncode == 2 and "label 'oops'" in labels.stderr
    wait = run("--server", "http://127.0.0.1:9", "--token", "t" * 20, "--wait", "600")
    assert wait.returncode == 2 and "--wait must be between 0 and 60" in wait.stderr
    for proc in (no_token, bad_url, labels, wait):
        assert proc.stderr.startswith("Error: ") and "Traceback" not in proc.stderr


def test_agent_refused_token_stops_with_one_line(serve, agent_pyz, tmp_path):
    server = serve()
    (tmp_path / "wrong").write_text("w" * 43)
    proc = subprocess.run([sys.executable, str(agent_pyz), "run", "--server", server.url, "--token-file",
                           str(tmp_path / "wrong"), "--name", "x", "--work-dir", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "refused the token (401)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ")


def test_profile_detection_and_labels():
    from edgec.agent import capabilities, device
    from edgec.agent.errors import AgentError
    from tests.helpers.agent import FIXTURES

    expected = {"jetson-orin-nano-jp6": "jetson-orin-nano", "jetson-agx-orin-jp5": "jetson-agx-orin",
                "rpi5": "rpi5", "coral-devboard": "coral-devboard", "rpi4-coral-usb": "rpi4"}
    for tree, profile in expected.items():
        assert capabilities.guess_profile(device.detect(str(FIXTURES / tree))) == profile, tree
    assert capabilities.guess_profile({"kind": "generic", "model": "x", "machine": "x86_64"}) == "x86-cpu"
    assert capabilities.guess_profile({"kind": "generic", "model": "x", "machine": "riscv64"}) is None
    assert capabilities.parse_labels("lab=a, rack=2,") == {"lab": "a", "rack": "2"}
    for bad in ("=x", "a", "a=", "../x=1"):
        try:
            capabilities.parse_labels(bad)
        except AgentError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    runtimes = capabilities.detect_runtimes()
    assert runtimes["litert"] == "2.3.0" and "tensorrt" not in runtimes


def test_cancel_stops_the_run_and_sigterm_hands_the_job_back(serve, agents, builds):
    """A job cancelled while it runs: the agent learns it from its heartbeat and stops the child.
    An agent stopped with SIGTERM mid-run reports the job back, which is re-queued at once."""
    server = serve()
    agent = agents(server, "polite", "--profile", "x86-cpu")
    with server.client() as c:
        (first,) = upload_and_queue(c, builds["int8"], options={"min_seconds": 30}, lease_seconds=2)
        wait_for(lambda: "measuring" in agent.text(), 60, "the first run")
        assert c.post(f"/v1/jobs/{first['id']}/cancel").json()["state"] == "cancelled"
        wait_for(lambda: "took the job back" in agent.text(), 10, "the agent to notice the cancellation")
        (second,) = upload_and_queue(c, builds["int8"], options={"min_seconds": 30}, lease_seconds=2)
        wait_for(lambda: agent.text().count("measuring") == 2, 60, "the second run")
        assert agent.stop(timeout=30) == 0
        doc = c.get(f"/v1/jobs/{second['id']}").json()
    assert get_job(server, first["id"])["state"] == "cancelled"
    assert doc["state"] == "queued" and doc["attempts"] == 1
    assert doc["leases"][0]["outcome"] == "failed" and "stopped during the run" in doc["leases"][0]["detail"]
    assert not processes_with(str(agent.work_dir))


def _python36() -> str | None:
    """A working Python 3.6 interpreter (PATH, else pyenv's), or None."""
    import glob
    import shutil

    candidates = [shutil.which("python3.6")] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))
    for path in filter(None, candidates):
        try:
            proc = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                  text=True, timeout=30)
        except OSError:
            continue
        if proc.returncode == 0 and proc.stdout.strip() == "(3, 6)":
            return path
    return None


def test_daemon_runs_on_python_36(serve, builds, agent_pyz, tmp_path):
    """The daemon under a real Python 3.6 (JetPack 4.6's): it registers, takes a job, downloads and
    verifies the artifact, runs the benchmark child and reports why it could not measure
    (no LiteRT for that Python here), then stops after --max-jobs."""
    import pytest

    python = _python36()
    if python is None:
        pytest.skip("no Python 3.6 interpreter on this machine (PATH or ~/.pyenv/versions/3.6*)")
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], runtime="auto", max_attempts=1)
    proc = subprocess.run([python, str(agent_pyz), "run", "--server", server.url, "--token-file",
                           str(server.token_file), "--name", "py36", "--profile", "x86-cpu", "--max-jobs", "1",
                           "--wait", "2", "--work-dir", str(tmp_path / "w36")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "registered as 'py36'" in proc.stderr and "measuring" in proc.stderr
    doc = get_job(server, job["id"])
    assert doc["state"] == "failed" and "LiteRT absent" in doc["error"], doc["error"]
    with server.client() as c:
        (dev,) = c.get("/v1/devices").json()["devices"]
    assert dev["detected"]["python"].startswith("3.6.")
