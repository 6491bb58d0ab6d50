"""The record on a real PostgreSQL server (a throwaway cluster, tests/postgres.py): the same
protocol as on SQLite, two `edgec serve` processes on one database with racing pollers (no job
leased twice), and a database that goes away and comes back."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid

import pytest

from tests.helpers.fleet import (
    get_job,
    lease_job,
    post_result,
    register_agent,
    upload_and_queue,
    wait_for,
)

pytestmark = pytest.mark.slow  # a throwaway PostgreSQL cluster per session, two collectors, racing pollers


def test_the_record_on_postgresql(serve, agents, builds, int8_report, postgres_url):
    server = serve("--lease-seconds", "30", db=postgres_url)
    assert "database postgresql://edgec@127.0.0.1" in server.first_output
    with server.client() as c:
        health = c.get("/v1/health").json()
        assert health["database"]["backend"] == "postgresql" and health["database"]["state"] == "ok"
        upload_and_queue(c, builds["int8"], count=3, labels={"lab": "x"})
        (plain,) = upload_and_queue(c, builds["int8"])
        (short,) = upload_and_queue(c, builds["int8"], lease_seconds=1, max_attempts=1, device="pg-b", profile=None)
        inst = register_agent(c, "pg-a")
        lease = lease_job(c, "pg-a", inst)
        assert lease["job_id"] == plain["id"] and lease_job(c, "pg-a", inst) is None  # labels matched in SQL
        beat = c.post("/v1/devices/pg-a/heartbeat", json={"instance": inst, "leases": [lease["lease_id"]]})
        assert beat.json() == {"leases": {lease["lease_id"]: "active"}}
        uid = uuid.uuid4().hex
        first = post_result(c, lease, int8_report, "pg-a", uid)
        again = post_result(c, lease, int8_report, "pg-a", uid)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == {**first.json(), "duplicate": True}
        stored = c.get(f"/v1/results/{first.json()['result_id']}").json()
        assert stored["report"] == int8_report and stored["device"] == "pg-a"
        # the reaper fails a job whose only lease expired
        inst_b = register_agent(c, "pg-b")
        assert lease_job(c, "pg-b", inst_b)["job_id"] == short["id"]
        failed = wait_for(lambda: (j := c.get(f"/v1/jobs/{short['id']}").json())["state"] == "failed" and j, 15,
                          "the lease to expire")
        assert failed["leases"][0]["outcome"] == "expired"
        assert c.post("/v1/jobs/1/cancel").json()["state"] == "cancelled"
        rows = c.get("/v1/report").json()["rows"]
        assert [r["device"] for r in rows] == ["pg-a"] and rows[0]["latency_median_ms"] == int8_report[
            "latency_ms"]["median"]
        assert {d["id"] for d in c.get("/v1/devices").json()["devices"]} == {"pg-a", "pg-b"}
        # a real agent takes a job from the PostgreSQL record
        (job,) = upload_and_queue(c, builds["int8"], options={"runs": 20})
    agents(server, "pg-agent", "--profile", "x86-cpu", "--labels", "lab=x")
    done = wait_for(lambda: (j := get_job(server, job["id"]))["state"] == "done" and j, 90, "the agent's result")
    assert done["leases"][0]["device"] == "pg-agent"
    report = server.cli("report", "--server", server.url, "--format", "json")
    assert report.returncode == 0 and "pg-agent" in report.stdout


def test_two_collectors_on_one_database_never_lease_a_job_twice(serve, builds, postgres_url, tmp_path, capsys):
    shared = tmp_path / "shared"  # one token file and one blob directory, as on shared storage
    one = serve(db=postgres_url, directory=shared)
    two = serve(db=postgres_url, directory=shared)
    assert one.token == two.token
    jobs = 240
    with one.client() as c:
        queued = upload_and_queue(c, builds["int8"], count=jobs)
    pollers = 8
    with one.client() as c1, two.client() as c2:
        names = [f"racer-{i}" for i in range(pollers)]
        instances = [register_agent(c1 if i % 2 else c2, name) for i, name in enumerate(names)]
    start = threading.Barrier(pollers)

    def poll(i: int) -> list[tuple[int, str]]:
        server = (one, two)[i % 2]
        got = []
        with server.client() as c:
            start.wait()
            while True:
                r = c.post(f"/v1/devices/{names[i]}/lease", json={"instance": instances[i]})
                assert r.status_code in (200, 204), r.text
                if r.status_code == 204:
                    return got
                got.append((r.json()["job_id"], r.json()["lease_id"]))

    with concurrent.futures.ThreadPoolExecutor(pollers) as pool:
        taken = [x for chunk in pool.map(poll, range(pollers)) for x in chunk]
    job_ids = [job_id for job_id, _ in taken]
    assert len(job_ids) == jobs and set(job_ids) == {j["id"] for j in queued}, (len(job_ids), len(set(job_ids)))
    import psycopg

    with psycopg.connect(postgres_url) as db:
        twice = db.execute("SELECT job_id FROM leases GROUP BY job_id HAVING COUNT(*) > 1").fetchall()
        states = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
    assert twice == [] and states == [("leased", jobs)]
    per_server = [sum(1 for i, chunk in enumerate(names) if i % 2 == k) for k in (0, 1)]
    # a long poll on one collector is woken by a job queued through the other
    with two.client() as c2, one.client() as c1:
        inst = register_agent(c2, "waiter")
        waiting = concurrent.futures.ThreadPoolExecutor(1).submit(
            lambda: two.client().post("/v1/devices/waiter/lease", json={"instance": inst, "wait": 30}))
        wait_for(lambda: c1.get("/v1/health").status_code == 200, 5, "health")
        (late,) = upload_and_queue(c1, builds["fp32"])
        answer = waiting.result(timeout=60)
    assert answer.status_code == 200 and answer.json()["job_id"] == late["id"]
    with capsys.disabled():
        print(f"\n[postgresql] {jobs} jobs leased by {pollers} pollers racing on 2 collectors "
              f"({per_server[0]} + {per_server[1]} pollers): each job leased once")


@pytest.fixture
def private_postgres():
    """A cluster of its own (this test stops it): skips like the shared one."""
    from tests.postgres import PostgresServer, find_bindir, server_user

    pytest.importorskip("psycopg")
    bindir = find_bindir()
    user, problem = server_user()
    if bindir is None or problem:
        pytest.skip(problem or "PostgreSQL server binaries not found")
    server = PostgresServer(bindir, user).start()
    yield server
    server.stop()


def test_health_reports_a_database_that_goes_away_and_comes_back(serve, private_postgres):
    server = serve(db=private_postgres.url())
    with server.client() as c:
        assert c.get("/v1/health").json()["database"]["state"] == "ok"
        private_postgres.halt()
        health = c.get("/v1/health")
        assert health.status_code == 503 and health.json()["database"]["state"] == "failing", health.text
        assert health.json()["database"]["error"]
        for r in (c.get("/v1/jobs"), c.post("/v1/devices/register", json={"device": "x", "instance": "0" * 32,
                                                                          "schema_version": 1})):
            assert r.status_code == 503 and "database failed" in r.json()["detail"], r.text
        private_postgres.launch()
        wait_for(lambda: c.get("/v1/health").status_code == 200, 30, "the collector to reconnect")
        assert c.post("/v1/devices/register", json={"device": "x", "instance": "0" * 32,
                                                    "schema_version": 1}).status_code == 200
    assert "Traceback" not in server.log.read_text()


def test_results_are_checked_the_same_on_postgresql(serve, builds, int8_report, postgres_url):
    """Each refusal of a posted result, on PostgreSQL's one-statement path."""
    import copy
    import json

    import psycopg

    server = serve(db=postgres_url)
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])
        inst = register_agent(c, "d")
        lease = lease_job(c, "d", inst)
        uid = uuid.uuid4().hex
        assert post_result(c, lease, int8_report, "d", uid).status_code == 201
        changed = copy.deepcopy(int8_report)
        changed["latency_ms"]["max"] += 1
        reused = post_result(c, lease, changed, "d", uid)
        assert reused.status_code == 409 and "already used for a different result" in reused.json()["detail"]
        respaced = c.post("/v1/results", content=json.dumps(
            {"report": int8_report, "instance": inst, "device": "d", "lease_id": lease["lease_id"],
             "job_id": lease["job_id"], "uid": uid}, indent=2), headers={"Content-Type": "application/json"})
        assert respaced.status_code == 200 and respaced.json()["duplicate"] is True  # compared as a document
        second = post_result(c, lease, int8_report, "d")
        assert second.status_code == 409 and "already has result" in second.json()["detail"]
        (job2,) = upload_and_queue(c, builds["fp32"])
        lease2 = lease_job(c, "d", inst)
        r = post_result(c, lease2, int8_report, "d")
        assert r.status_code == 422 and "measured an artifact with sha256" in r.json()["detail"]
        r = post_result(c, {"job_id": job2["id"], "lease_id": lease["lease_id"], "instance": inst}, int8_report, "d")
        assert r.status_code == 409 and "was never issued for job" in r.json()["detail"]
        r = post_result(c, lease2, int8_report, "someone-else")
        assert r.status_code == 409 and "belongs to device 'd'" in r.json()["detail"]
        r = post_result(c, {**lease2, "instance": uuid.uuid4().hex}, int8_report, "d")
        assert r.status_code == 409 and "another agent instance" in r.json()["detail"]
        r = post_result(c, {**lease2, "job_id": 999}, int8_report, "d")
        assert r.status_code == 404
        assert c.post(f"/v1/jobs/{job2['id']}/cancel").status_code == 200
        r = post_result(c, lease2, int8_report, "d")
        assert r.status_code == 409 and "was cancelled" in r.json()["detail"]
        assert c.get(f"/v1/results/{second.json().get('result_id', 1)}").status_code == 200
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
        assert db.execute("SELECT uid, job_id FROM submissions").fetchall() == [(uid, job["id"])]
