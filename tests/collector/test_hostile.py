"""What a hostile client found, each reproduced against a real `edgec serve` on loopback: non-finite
numbers and invalid text in bodies, idle and oversized connections, two agents under one name, a
runnable job behind a wall of others, a damaged database, and the smaller holes (missing blob
files, an unwritable blob directory, booleans as counts, the WAL left behind, open file modes)."""

from __future__ import annotations

import http.client
import json
import os
import resource
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.helpers.cli import REPO
from tests.helpers.fleet import (
    get_job,
    lease_job,
    post_result,
    processes_with,
    register_agent,
    upload_and_queue,
    wait_for,
)


def _raw(server, method: str, path: str, body: str | bytes | None = None, conn=None):
    """One request on ``conn`` (an http.client connection kept across calls); (status, text, conn)."""
    host, port = server.url.rsplit("//", 1)[1].rsplit(":", 1)
    conn = conn or http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {**server.auth, "Content-Type": "application/json"}
    conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read().decode(), conn


def _job_body(builds, **fields) -> dict:
    manifest = json.loads((builds["int8"] / "manifest.json").read_text())
    record = manifest["artifacts"][0]
    return {"files": {record["file"]: record["sha256"]}, "target": record["file"], "runtime": "litert",
            "artifact": record, "manifest": manifest, "profile": "x86-cpu", **fields}


def test_non_finite_numbers_get_422_and_the_connection_is_kept(serve, builds):
    """D1: NaN, Infinity and overflowing numbers in typed float fields (wait, lease_seconds,
    timeout_s, options.min_seconds) and anywhere else in a body."""
    server = serve()
    with server.client() as c:
        upload_and_queue(c, builds["int8"])
        instance = register_agent(c, "d1")
    base = json.dumps(_job_body(builds))
    bad_bodies = [
        ("POST", "/v1/devices/d1/lease", f'{{"instance": "{instance}", "wait": NaN}}'),
        ("POST", "/v1/devices/d1/lease", f'{{"instance": "{instance}", "wait": Infinity}}'),
        ("POST", "/v1/devices/d1/lease", f'{{"instance": "{instance}", "wait": 1e999}}'),
        ("POST", "/v1/jobs", base[:-1] + ', "lease_seconds": NaN}'),
        ("POST", "/v1/jobs", base[:-1] + ', "timeout_s": -Infinity}'),
        ("POST", "/v1/jobs", base[:-1] + ', "options": {"min_seconds": NaN}}'),
        ("POST", "/v1/jobs", base[:-1] + ', "options": {"runs": 1e400}}'),
        ("POST", "/v1/devices/register", f'{{"device": "d1", "instance": "{uuid.uuid4().hex}", "schema_version": 1, '
                                         '"detected": {"temp": [1, NaN]}}'),
        ("POST", "/v1/devices/register", f'{{"device": "d1", "instance": "{uuid.uuid4().hex}", "schema_version": 1, '
                                         '"power": {"w": 123456789012345678901234567890}}'),
    ]
    conn = None
    for method, path, body in bad_bodies:
        status, text, conn = _raw(server, method, path, body, conn)
        sock = conn.sock
        assert status == 422, (path, body[-60:], status, text)
        assert "finite" in text or "64-bit" in text, text
        # the same keep-alive connection answers the next request
        status, text, conn = _raw(server, "GET", "/v1/health", conn=conn)
        assert status == 200 and conn.sock is sock, (path, status, text)
    for query in ("nan", "inf", "-inf", "1e999"):
        status, text, conn = _raw(server, "GET", f"/v1/jobs/1?wait={query}", conn=conn)
        assert status == 422, (query, status, text)
    assert "Traceback" not in server.log.read_text()


def test_invalid_text_gets_422_and_the_record_stays_readable(serve, builds, int8_report):
    """D2: unpaired surrogate escapes in free-form documents and in column fields are refused;
    devices and results stay listable."""
    server = serve()
    with server.client() as c:
        upload_and_queue(c, builds["int8"], count=2)
        instance = register_agent(c, "d2")
        lease = lease_job(c, "d2", instance)
    register = f'{{"device": "d2", "instance": "{uuid.uuid4().hex}", "schema_version": 1, "profile": "x86-cpu", "runtimes": {{"litert": null}}, ' \
               '"detected": {"model": "\\ud800"}}'
    status, text, conn = _raw(server, "POST", "/v1/devices/register", register)
    assert status == 422 and "surrogate" in text, text
    key = f'{{"device": "d2", "instance": "{uuid.uuid4().hex}", "schema_version": 1, "detected": {{"\\udfff": 1}}}}'
    status, text, conn = _raw(server, "POST", "/v1/devices/register", key, conn)
    assert status == 422 and "surrogate" in text, text
    for field in ("os", "model"):  # a document field, and a column of the results table
        report = {**int8_report, "device": {**int8_report["device"], field: "PLACEHOLDER"}}
        post = json.dumps({"uid": uuid.uuid4().hex, "job_id": lease["job_id"], "lease_id": lease["lease_id"],
                           "device": "d2", "instance": instance, "report": report}).replace("PLACEHOLDER", "\\ud800")
        status, text, conn = _raw(server, "POST", "/v1/results", post, conn)
        assert status == 422 and "surrogate" in text, (field, text)
    # a valid pair (an emoji written as two escapes) is text like any other
    ok = register.replace("\\ud800", "\\ud83d\\ude00")
    status, text, conn = _raw(server, "POST", "/v1/devices/register", ok, conn)
    assert status == 200, text
    with server.client() as c:
        devices = c.get("/v1/devices")
        assert devices.status_code == 200 and devices.json()["devices"][0]["detected"]["model"] == "\U0001F600"
        # d2 registered again above (a new instance): its old lease was released, so the old
        # instance's result is refused; the new instance leases again and its result is stored
        stale = post_result(c, lease, int8_report, "d2")
        assert stale.status_code == 409 and "has ended (released" in stale.json()["detail"], stale.text
        lease = lease_job(c, "d2", json.loads(ok)["instance"])
        stored = post_result(c, lease, int8_report, "d2")
        assert stored.status_code == 201, stored.text
        assert c.get(f"/v1/results/{stored.json()['result_id']}").status_code == 200
        assert server.cli("devices", "--server", server.url).returncode == 0
    assert "Traceback" not in server.log.read_text()


def _serve_with_open_files(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return preexec


@pytest.mark.slow
def test_idle_socket_flood_leaves_real_clients_served(serve):
    """D3: 300 idle sockets without a token against a server limited to 256 open files; a stalled
    request is closed after the header timeout."""
    server = serve("--header-timeout", "3", preexec_fn=_serve_with_open_files(256))
    host, port = server.url.rsplit("//", 1)[1].rsplit(":", 1)
    flood = []
    try:
        for _ in range(300):
            s = socket.create_connection((host, int(port)), timeout=10)
            flood.append(s)
        time.sleep(0.5)
        with server.client() as c:
            for _ in range(5):
                assert c.get("/v1/health").status_code == 200
                assert c.get("/v1/jobs").status_code == 200
        # the flood was cut down to the limit (256 open files, 64 kept for the server itself)
        closed = 0
        for s in flood:
            s.settimeout(0.01)
            try:
                closed += s.recv(1) == b""
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                closed += 1
        assert closed >= 300 - 192, closed
    finally:
        for s in flood:
            s.close()
    # a request whose headers never finish is closed after --header-timeout
    slow = socket.create_connection((host, int(port)), timeout=20)
    slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
    try:
        assert slow.recv(100) == b""
    except ConnectionResetError:
        pass
    finally:
        slow.close()
    assert "connection limit (192) reached" in server.log.read_text()


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_header_cap_is_enforced_before_the_token(serve):
    """D4: headers past --max-header-kb get 431 before any token check, and the server does not
    buffer them."""
    server = serve()
    host, port = server.url.rsplit("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 70_000)
        answer = s.recv(200)
    assert answer.startswith(b"HTTP/1.1 431"), answer
    before = _rss_kib(server.proc.pid)
    sent = 0
    chunk = b"a" * (1 << 20)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        try:
            while sent < 256 << 20:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # cut off by the server
    assert sent < 16 << 20, f"the server read {sent >> 20} MiB of one header"
    assert _rss_kib(server.proc.pid) - before < 32 << 10
    with server.client() as c:
        assert c.get("/v1/health").status_code == 200


@pytest.mark.slow
def test_a_second_agent_under_the_same_name_stops_the_first(serve, agents, builds, tmp_path):
    """D5: two agents started with one --name. The second registration releases the job and takes
    it; the first is refused at its next heartbeat, stops its measurement and exits with one line;
    only the second's result is stored."""
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], options={"min_seconds": 6, "warmup": 1}, lease_seconds=2)
    first = agents(server, "twin", "--profile", "x86-cpu")
    wait_for(lambda: "measuring" in first.text(), 60, "the first agent to measure")
    agents(server, "twin", "--profile", "x86-cpu", "--work-dir", str(tmp_path / "second"))
    assert first.proc.wait(timeout=60) == 2
    log = first.text()
    assert "refused the heartbeat (409)" in log and "stopping the measurement" in log
    assert log.strip().splitlines()[-1].startswith("Error: stopped: the collector refused the heartbeat")
    assert "Traceback" not in log
    assert not processes_with(f"{first.work_dir}/job-")  # its benchmark child was stopped
    done = wait_for(lambda: (j := get_job(server, job["id"]))["state"] == "done" and j, 90, "the second agent's result")
    first_lease, second_lease = done["leases"]
    assert first_lease["outcome"] == "released" and second_lease["outcome"] == "done"
    with server.client() as c:
        result = c.get(f"/v1/results/{done['result_id']}").json()
    assert result["lease_id"] == second_lease["id"]
    with sqlite3.connect(server.db) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


def test_a_runnable_job_is_leased_behind_500_it_cannot_run(serve, builds):
    """D6: the lease query filters in SQL, not the first 500 rows in Python."""
    server = serve()
    with server.client() as c:
        upload_and_queue(c, builds["int8"], count=501, labels={"lab": "elsewhere"})
        (runnable,) = upload_and_queue(c, builds["int8"])
        instance = register_agent(c, "plain")
        lease = lease_job(c, "plain", instance)
        assert lease["job_id"] == runnable["id"]
        assert lease_job(c, "plain", instance) is None
        lab = register_agent(c, "lab", labels={"lab": "elsewhere", "rack": "3"})
        assert lease_job(c, "lab", lab)["job_id"] == 1


def test_a_damaged_database_is_refused_at_start_and_health_reports_the_record(serve, builds, tmp_path):
    """D7: a database with overwritten pages does not start (one line, exit 2); health reads the
    database and reports its state."""
    server = serve()
    with server.client() as c:
        upload_and_queue(c, builds["int8"], count=40)
        health = c.get("/v1/health").json()
    assert health["status"] == "ok" and health["database"]["state"] == "ok"
    assert health["database"]["backend"] == "sqlite" and health["database"]["queued"] == 40
    server.stop()
    assert not server.db.with_name("collector.db-wal").exists()  # checkpointed at shutdown
    size = server.db.stat().st_size
    page = 4096
    assert size >= 8 * page
    with open(server.db, "r+b") as fh:
        for n in range(2, size // page, 3):
            fh.seek(n * page + 100)
            fh.write(os.urandom(600))
    proc = subprocess.run([sys.executable, "-m", "edgec", "serve", "--port", "0", "--db", str(server.db)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "fails PRAGMA quick_check" in proc.stderr and "restore it from a backup" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_smaller_holes(serve, builds, int8_report, tmp_path):
    """A blob whose file is gone, an unwritable blob directory, a boolean as a count, the WAL after
    SIGTERM, file modes."""
    server = serve()
    body = _job_body(builds)
    sha = body["artifact"]["sha256"]
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])
        blob = server.dir / "blobs" / sha[:2] / sha
        assert stat.S_IMODE(blob.stat().st_mode) == 0o600
        for directory in (server.dir, server.dir / "blobs", blob.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        for name in ("collector.db", "collector.db-wal", "token"):
            assert stat.S_IMODE((server.dir / name).stat().st_mode) == 0o600, name
        # booleans are not counts
        r = c.post("/v1/jobs", json={**body, "options": {"runs": True}})
        assert r.status_code == 422 and "runs" in r.text
        r = c.post("/v1/jobs", json={**body, "max_attempts": True})
        assert r.status_code == 422
        # a file the record knows but whose bytes are gone: the job is refused, not burnt
        blob.unlink()
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 409 and "not uploaded yet: model.tflite" in r.json()["detail"]
        assert c.put(f"/v1/blobs/{sha}", content=(builds["int8"] / "model.tflite").read_bytes()).status_code == 200
        assert c.post("/v1/jobs", json=body).status_code == 201
        # an unwritable blob directory: one clear 503, and the server goes on
        shutil.rmtree(server.dir / "blobs" / "tmp")
        (server.dir / "blobs" / "tmp").write_text("not a directory")
        data = os.urandom(1000)
        import hashlib

        r = c.put(f"/v1/blobs/{hashlib.sha256(data).hexdigest()}", content=data)
        assert r.status_code == 503 and "cannot write its blobs directory" in r.json()["detail"], r.text
        assert c.get("/v1/health").status_code == 200
        instance = register_agent(c, "holes")
        lease = lease_job(c, "holes", instance)
        assert post_result(c, lease, int8_report, "holes").status_code == 201
    # SIGTERM: the WAL is checkpointed, so the database file alone holds the record
    server.stop()
    assert server.proc.returncode in (0, -15, 143)  # 143: the CLI exits 128+SIGTERM after its cleanup
    wal = server.dir / "collector.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.db"
    shutil.copyfile(server.db, copy)
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 2
    assert job["id"] == 1


def test_existing_open_database_and_directory_are_made_private(serve, tmp_path):
    directory = tmp_path / "open"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    sqlite3.connect(directory / "collector.db").close()
    os.chmod(directory / "collector.db", 0o644)
    server = serve(directory=directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.db.stat().st_mode) == 0o600
    with httpx.Client(base_url=server.url, headers=server.auth) as c:
        assert c.get("/v1/health").json()["database"]["state"] == "ok"



def test_a_stalled_body_is_cut_off_and_logged_without_a_traceback(serve):
    """D3: a request whose body stops arriving is closed after --body-timeout, for the framework's
    routes and for the result route alike; the server goes on."""
    server = serve("--body-timeout", "1")
    host, port = server.url.rsplit("//", 1)[1].rsplit(":", 1)
    for path in ("/v1/jobs", "/v1/results"):
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"files\": ".encode())
            try:
                assert s.recv(1000) == b"", path
            except ConnectionResetError:
                pass
    with server.client() as c:
        assert c.get("/v1/health").status_code == 200
    assert "Traceback" not in server.log.read_text()


# The collector tables of version 1 (before per-device credentials, lease instances, job_labels and
# the submission kept in the job's row), as a record written then has them.
V1_SCHEMA = """
CREATE TABLE collector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, bytes INTEGER NOT NULL, added REAL NOT NULL);
CREATE TABLE devices (id TEXT PRIMARY KEY, instance TEXT NOT NULL, profile TEXT, labels TEXT NOT NULL,
    runtimes TEXT NOT NULL, power TEXT NOT NULL, detected TEXT NOT NULL, agent_version TEXT, address TEXT,
    registered REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed', 'cancelled')),
    created REAL NOT NULL, updated REAL NOT NULL, profile TEXT, device TEXT, labels TEXT NOT NULL,
    runtime TEXT NOT NULL, artifact_sha256 TEXT NOT NULL REFERENCES artifacts (sha256), spec TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, lease_seconds REAL NOT NULL,
    lease_id TEXT, leased_to TEXT, lease_expires REAL, result_id INTEGER REFERENCES results (id), error TEXT);
CREATE INDEX jobs_state ON jobs (state, lease_expires);
CREATE TABLE leases (id TEXT PRIMARY KEY, job_id INTEGER NOT NULL REFERENCES jobs (id), device TEXT NOT NULL,
    attempt INTEGER NOT NULL, issued REAL NOT NULL, expires REAL NOT NULL, ended REAL,
    outcome TEXT CHECK (outcome IS NULL OR outcome IN ('done', 'failed', 'expired', 'released', 'cancelled')),
    detail TEXT);
CREATE INDEX leases_job ON leases (job_id);
CREATE TABLE submissions (uid TEXT PRIMARY KEY, body_sha256 TEXT NOT NULL,
    result_id INTEGER NOT NULL UNIQUE REFERENCES results (id), job_id INTEGER NOT NULL UNIQUE REFERENCES jobs (id),
    lease_id TEXT NOT NULL, device TEXT NOT NULL, received REAL NOT NULL);
"""


def test_a_version_1_record_is_migrated(serve, builds, int8_report, tmp_path):
    from edgec import results

    directory = tmp_path / "v1"
    directory.mkdir()
    db = directory / "collector.db"
    manifest = json.loads((builds["int8"] / "manifest.json").read_text())
    record = manifest["artifacts"][0]
    spec = json.dumps({"files": {record["file"]: record["sha256"]}, "target": record["file"], "options": {},
                       "warnings": [], "timeout_s": 600, "build_dir": None})
    now = time.time()
    with sqlite3.connect(db) as conn:
        conn.executescript(results.SCHEMA + V1_SCHEMA)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO collector_meta VALUES ('version', '1')")
        conn.execute("INSERT INTO blobs VALUES (?, 1, ?)", (record["sha256"], now))
        results.insert_artifact(conn, manifest, record, None)
        for state, labels in (("done", "{}"), ("queued", '{"lab":"a"}')):
            conn.execute("INSERT INTO jobs (state, created, updated, profile, labels, runtime, artifact_sha256, spec, "
                         "max_attempts, lease_seconds) VALUES (?, ?, ?, 'x86-cpu', ?, 'litert', ?, ?, 3, 60)",
                         (state, now, now, labels, record["sha256"], spec))
        conn.execute("INSERT INTO leases VALUES ('%s', 1, 'old', 1, ?, ?, ?, 'done', NULL)" % ("a" * 32), (now, now, now))
        result_id = results.insert_result(conn, record["sha256"], "old", int8_report)
        conn.execute("UPDATE jobs SET result_id = ?, attempts = 1 WHERE id = 1", (result_id,))
        conn.execute("INSERT INTO submissions VALUES ('uid-of-old-1', ?, ?, 1, ?, 'old', ?)",
                     ("0" * 64, result_id, "a" * 32, now))
    blob = directory / "blobs" / record["sha256"][:2] / record["sha256"]
    blob.parent.mkdir(parents=True)
    blob.write_bytes((builds["int8"] / record["file"]).read_bytes())
    server = serve(directory=directory)
    with server.client() as c:
        stored = c.get(f"/v1/results/{result_id}").json()
        assert (stored["uid"], stored["job_id"], stored["lease_id"]) == ("uid-of-old-1", 1, "a" * 32)
        plain = register_agent(c, "plain")
        assert lease_job(c, "plain", plain) is None  # the queued job's label was migrated to job_labels
        lab = register_agent(c, "lab-a", labels={"lab": "a"})
        assert lease_job(c, "lab-a", lab)["job_id"] == 2
        again = c.post("/v1/results", json={"uid": "uid-of-old-1", "job_id": 1, "lease_id": "a" * 32,
                                            "device": "old", "instance": "0" * 32, "report": int8_report})
        assert again.status_code == 200 and again.json() == {"result_id": result_id, "job_id": 1, "duplicate": True}
        assert c.get("/v1/report").json()["rows"][0]["device"] == "old"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM collector_meta WHERE key = 'version'").fetchone()[0] == "2"
        assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'submissions'").fetchone()[0] == "view"
        assert conn.execute("SELECT uid, job_id, device FROM submissions").fetchall() == [("uid-of-old-1", 1, "old")]
