"""Per-device credentials (enroll, exchange, revoke) and TLS, against a real collector: a real agent
enrolls with a one-time token and keeps its own credential; a device credential opens its own
agent routes only; a revoked device is refused while the others go on; HTTPS with a CA made here
(openssl), verified by the agent's --cafile and the host commands' --cafile."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import ssl
import stat
import uuid

import httpx
import pytest

from tests.helpers.fleet import get_job, register_device, upload_and_queue, wait_for


def _enroll(server, name: str) -> str:
    proc = server.cli("devices", "enroll", name, "--server", server.url)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert token.startswith("edgec-e.") and "--enroll-token-file" in proc.stderr
    return token


def _exchange(server, name: str, enrollment: str) -> str:
    r = httpx.post(server.url + "/v1/enroll", json={"device": name}, verify=server.verify,
                   headers={"Authorization": f"Bearer {enrollment}"})
    assert r.status_code == 201, r.text
    return r.json()["credential"]


def _as(server, credential: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {credential}"}, timeout=30,
                        verify=server.verify)



def test_an_enrolled_agent_measures_with_its_own_credential(serve, agents, builds, tmp_path):
    server = serve()
    enrollment = _enroll(server, "cpu-e")
    token_file = tmp_path / "enroll-token"
    token_file.write_text(enrollment + "\n")
    agent = agents(server, "cpu-e", "--profile", "x86-cpu", "--enroll-token-file", str(token_file), auth=False)
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], options={"runs": 20})
    done = wait_for(lambda: (j := get_job(server, job["id"]))["state"] == "done" and j, 90, "the enrolled agent's result")
    assert done["leases"][0]["device"] == "cpu-e"
    credential_file = tmp_path / "agent-config" / "cpu-e.credential"
    assert stat.S_IMODE(credential_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(credential_file.parent.stat().st_mode) == 0o700
    credential = credential_file.read_text().strip()
    assert credential.startswith("edgec-d.") and "enrolled as 'cpu-e'" in agent.text()
    # stored hashed: neither secret is in the database, only their sha256
    agent.stop()
    with sqlite3.connect(server.db) as db:
        rows = db.execute("SELECT kind, secret_sha256, used FROM credentials ORDER BY created").fetchall()
    dump = b"".join(p.read_bytes() for p in server.dir.glob("collector.db*"))
    for token, (kind, digest, _) in zip((enrollment, credential), rows, strict=True):
        secret = token.rsplit(".", 1)[1]
        assert hashlib.sha256(secret.encode()).hexdigest() == digest and secret.encode() not in dump, kind
    assert rows[0][2] is not None  # the enrollment token is used up
    r = httpx.post(server.url + "/v1/enroll", json={"device": "cpu-e"}, headers={"Authorization": f"Bearer {enrollment}"})
    assert r.status_code == 401 and "already used" in r.json()["detail"]
    # the same command line again: the kept credential is used, no second exchange
    again = agents(server, "cpu-e", "--profile", "x86-cpu", "--enroll-token-file", str(token_file), auth=False)
    wait_for(lambda: again.text().count("registered as 'cpu-e'") == 2, 60, "the agent to register again")
    assert "already enrolled" in again.text()


def test_a_device_credential_opens_its_own_routes_only_and_can_be_revoked(serve, builds, int8_report):
    server = serve()
    a = _exchange(server, "dev-a", _enroll(server, "dev-a"))
    b = _exchange(server, "dev-b", _enroll(server, "dev-b"))
    with server.client() as admin:
        jobs = upload_and_queue(admin, builds["int8"], count=3)
    with _as(server, a) as ca, _as(server, b) as cb:
        no_runtime = {"litert": None}
        inst_a = register_device(ca, "dev-a", runtimes=no_runtime)
        inst_b = register_device(cb, "dev-b", runtimes=no_runtime)
        # another device's name, or an admin route: 403
        assert ca.post("/v1/devices/register", json={"device": "dev-b", "instance": uuid.uuid4().hex,
                                                     "schema_version": 1}).status_code == 403
        assert ca.post("/v1/devices/dev-b/lease", json={"instance": inst_b}).status_code == 403
        assert ca.post("/v1/devices/dev-b/heartbeat", json={"instance": inst_b}).status_code == 403
        for method, path in (("POST", f"/v1/jobs/{jobs[0]['id']}/cancel"), ("POST", "/v1/devices/dev-a/enroll"),
                             ("POST", "/v1/devices/dev-b/revoke"), ("GET", "/v1/devices"), ("GET", "/v1/jobs"),
                             ("GET", f"/v1/jobs/{jobs[0]['id']}"), ("GET", "/v1/report"), ("POST", "/v1/jobs"),
                             ("PUT", "/v1/blobs/" + "0" * 64), ("GET", "/openapi.json")):
            r = ca.request(method, path, json={} if method in ("POST", "PUT") else None)
            assert r.status_code == 403 and "admin token" in r.json()["detail"], (method, path, r.text)
        # the agent's own routes work
        lease_a = ca.post("/v1/devices/dev-a/lease", json={"instance": inst_a}).json()
        lease_b = cb.post("/v1/devices/dev-b/lease", json={"instance": inst_b}).json()
        sha = lease_a["artifact_sha256"]
        assert ca.get(f"/v1/blobs/{sha}").status_code == 200
        post = {"uid": uuid.uuid4().hex, "job_id": lease_a["job_id"], "lease_id": lease_a["lease_id"],
                "device": "dev-a", "instance": inst_a, "report": int8_report}
        assert cb.post("/v1/results", json=post).status_code == 403  # b cannot post as a
        stored_a = ca.post("/v1/results", json=post).json()["result_id"]
        stored_b = cb.post("/v1/results", json={**post, "uid": uuid.uuid4().hex, "job_id": lease_b["job_id"],
                                                "lease_id": lease_b["lease_id"], "device": "dev-b",
                                                "instance": inst_b}).json()["result_id"]
        assert ca.get(f"/v1/results/{stored_a}").status_code == 200
        r = ca.get(f"/v1/results/{stored_b}")  # answered as if missing: result ids cannot be enumerated
        missing = ca.get(f"/v1/results/{stored_b + 1000}")
        assert r.status_code == missing.status_code == 404 and r.json()["detail"] == f"no result {stored_b}"
        # an enrollment token opens nothing but the exchange
        pending = _enroll(server, "dev-c")
        with _as(server, pending) as cc:
            assert cc.get("/v1/health").status_code == 403
            assert cc.post("/v1/enroll", json={"device": "dev-a"}).status_code == 403  # issued for dev-c
        # a takes the last job, then is revoked: refused at once, its job re-queued; b goes on
        lease_a = ca.post("/v1/devices/dev-a/lease", json={"instance": inst_a}).json()
        revoked = server.cli("devices", "revoke", "dev-a", "--server", server.url)
        assert revoked.returncode == 0 and f"re-queued its jobs {lease_a['job_id']}" in revoked.stdout, revoked.stderr
        r = ca.post("/v1/devices/dev-a/heartbeat", json={"instance": inst_a, "leases": [lease_a["lease_id"]]})
        assert r.status_code == 401 and "was revoked" in r.json()["detail"]
        assert cb.post("/v1/devices/dev-b/heartbeat", json={"instance": inst_b}).status_code == 200
        assert cb.post("/v1/devices/dev-b/lease", json={"instance": inst_b}).json()["job_id"] == lease_a["job_id"]
    listed = server.cli("devices", "--server", server.url, "--json")
    states = {d["id"]: d["state"] for d in json.loads(listed.stdout)["devices"]}
    assert states == {"dev-a": "revoked", "dev-b": "busy"}, states
    unknown = server.cli("devices", "revoke", "nobody", "--server", server.url)
    assert unknown.returncode == 2 and "never enrolled" in unknown.stderr and "Traceback" not in unknown.stderr
    bad = server.cli("devices", "enroll", "../x", "--server", server.url)
    assert bad.returncode == 2 and "expected 1-64 letters" in bad.stderr


def test_tls_with_a_ca_the_agent_and_the_cli_verify(serve, agents, builds, tls_files, tmp_path):
    ca = ssl.create_default_context(cafile=str(tls_files["ca"]))
    server = serve("--tls-cert", str(tls_files["server"]), "--tls-key", str(tls_files["key"]), verify=ca)
    assert server.url.startswith("https://127.0.0.1:")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server.url + "/v1/health", headers=server.auth)  # the system's CAs do not know it
    # the agent verifies the server against --cafile, and measures
    agent = agents(server, "tls-1", "--profile", "x86-cpu", "--cafile", str(tls_files["ca"]))
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], options={"runs": 20})
    done = wait_for(lambda: (j := get_job(server, job["id"]))["state"] == "done" and j, 90, "the job over TLS")
    assert done["leases"][0]["device"] == "tls-1" and "registered as 'tls-1'" in agent.text()
    # another CA: the agent refuses the server and says why
    wrong = agents(server, "tls-2", "--profile", "x86-cpu", "--cafile", str(tls_files["other-ca"]))
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in wrong.text(), 30, "the agent to refuse the certificate")
    assert "registered as 'tls-2'" not in wrong.text()
    # the host's commands: --cafile (or EDGEC_CAFILE)
    listed = server.cli("devices", "--server", server.url, "--cafile", str(tls_files["ca"]), "--json")
    assert listed.returncode == 0 and [d["id"] for d in json.loads(listed.stdout)["devices"]] == ["tls-1"]
    env = server.cli("jobs", "--server", server.url, EDGEC_CAFILE=str(tls_files["ca"]))
    assert env.returncode == 0, env.stderr
    refused = server.cli("devices", "--server", server.url, "--cafile", str(tls_files["other-ca"]))
    assert refused.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # plain HTTP to the TLS port is not answered as if it were the API
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url.replace("https", "http") + "/v1/health", headers=server.auth, timeout=5).raise_for_status()


def test_bad_tls_options_are_one_line(tmp_path, tls_files):
    from tests.helpers.cli import run_cli

    db = tmp_path / "c.db"
    for args, text in ((["--tls-cert", str(tls_files["server"])], "go together"),
                       (["--tls-cert", str(tls_files["server"]), "--tls-key", str(tls_files["ca"])], "cannot be used"),
                       (["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(tls_files["key"])],
                        "does not exist")):
        proc = run_cli("serve", "--port", "0", "--db", db, *args, timeout=60)
        assert proc.returncode == 2 and text in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
