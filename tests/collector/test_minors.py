"""Smaller holes: a stale agent's failure report, an agent that can run nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from tests.helpers.fleet import register_device, upload_and_queue, wait_for


def test_a_failure_without_instance_cannot_fail_another_instances_job(serve, builds):
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])
        inst = register_device(c, "dev")
        lease = c.post("/v1/devices/dev/lease", json={"instance": inst}).json()
        stale = {"lease_id": lease["lease_id"], "device": "dev", "error": "stale agent", "retry": False}
        r = c.post(f"/v1/jobs/{job['id']}/failure", json=stale)
        assert r.status_code == 409 and "not the current lease" in r.json()["detail"], r.text
        r = c.post(f"/v1/jobs/{job['id']}/failure", json={**stale, "instance": uuid.uuid4().hex})
        assert r.status_code == 409
        assert c.get(f"/v1/jobs/{job['id']}").json()["state"] == "leased"
        # the holder itself still can
        r = c.post(f"/v1/jobs/{job['id']}/failure", json={**stale, "instance": inst, "error": "real"})
        assert r.status_code == 200 and r.json()["state"] == "failed"


def test_an_agent_without_runtime_says_it_can_run_nothing(serve, agent_pyz, tmp_path):
    server = serve()
    log = tmp_path / "agent.log"
    # -S: a Python without its site-packages, so without any runtime (the agent needs none to start)
    with open(log, "w") as out:
        agent = subprocess.Popen([sys.executable, "-S", str(agent_pyz), "run", "--server", server.url, "--token-file",
                                  str(server.token_file), "--name", "bare", "--work-dir", str(tmp_path / "work"),
                                  "--profile", "x86-cpu", "--wait", "1"], stdout=out, stderr=subprocess.STDOUT)
    try:
        text = wait_for(lambda: "can run nothing" in (t := log.read_text()) and t, 60, "the agent's error")
        line = next(ln for ln in text.splitlines() if "can run nothing" in ln)
        assert "ERROR" in line and "pip install ai-edge-litert" in line and "'bare'" in line, line
        listed = server.cli("devices", "--server", server.url)
        assert listed.returncode == 0, listed.stderr
        assert "device 'bare' can run nothing" in listed.stderr
        as_json = json.loads(server.cli("devices", "--server", server.url, "--json").stdout)["devices"]
        assert as_json[0]["id"] == "bare" and as_json[0]["runtimes"] == {}
    finally:
        agent.terminate()
        agent.wait(timeout=30)
