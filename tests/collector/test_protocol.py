"""The collector's protocol over real HTTP: leases and their expiry, retries, idempotent results,
1,000 concurrent posts with duplicates, and a collector killed while results arrive."""

from __future__ import annotations

import concurrent.futures
import copy
import json
import random
import sqlite3
import threading
import time
import uuid

import httpx
import pytest

from tests.helpers.fleet import lease_job, post_result, register_agent, upload_and_queue, wait_for


def test_expired_leases_are_retried_up_to_the_limit_then_failed(serve, builds):
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], max_attempts=2, lease_seconds=1)
        inst = register_agent(c, "flaky")
        first = lease_job(c, "flaky", inst)
        assert first["attempt"] == 1 and first["lease_seconds"] == 1 and first["heartbeat_s"] == 0.25
        # the agent "dies": no heartbeat; the reaper re-queues the job after its lease
        second = lease_job(c, "flaky", inst, wait=10)
        assert second["job_id"] == job["id"] and second["attempt"] == 2
        failed = wait_for(lambda: (j := c.get(f"/v1/jobs/{job['id']}").json())["state"] == "failed" and j, 10,
                          "the job to fail")
    assert failed["attempts"] == 2 and failed["error"].startswith("gave up after 2 of 2 attempts")
    assert failed["error"].count("expired (no heartbeat from flaky for 1 s)") == 2
    assert [x["outcome"] for x in failed["leases"]] == ["expired", "expired"]


def test_heartbeats_renew_a_lease_and_report_lost_ones(serve, builds, int8_report):
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], lease_seconds=1)
        inst = register_agent(c, "alive")
        lease = lease_job(c, "alive", inst)
        for _ in range(8):  # 2 s of heartbeats, twice the lease
            time.sleep(0.25)
            beat = c.post("/v1/devices/alive/heartbeat", json={"instance": inst, "leases": [lease["lease_id"]]})
            assert beat.json() == {"leases": {lease["lease_id"]: "active"}}
        assert c.get(f"/v1/jobs/{job['id']}").json()["state"] == "leased"
        assert post_result(c, lease, int8_report, "alive").status_code == 201
        beat = c.post("/v1/devices/alive/heartbeat", json={"instance": inst, "leases": [lease["lease_id"]]})
        assert beat.json()["leases"][lease["lease_id"]] == "lost"
        # another agent instance under the same name: the old one is told, not silently overruled
        register_agent(c, "alive")
        stale = c.post("/v1/devices/alive/heartbeat", json={"instance": inst, "leases": []})
        assert stale.status_code == 409 and "registered by another agent" in stale.json()["detail"]


def test_a_restarted_agent_releases_its_jobs_at_once(serve, builds):
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])  # the collector's 60 s lease: no waiting for it
        inst = register_agent(c, "rebooted")
        assert lease_job(c, "rebooted", inst)["job_id"] == job["id"]
        answer = c.post("/v1/devices/register", json={"device": "rebooted", "instance": uuid.uuid4().hex,
                                                      "profile": "x86-cpu", "runtimes": {"litert": None},
                                                      "schema_version": 1}).json()
        assert answer["released"] == [job["id"]]
        doc = c.get(f"/v1/jobs/{job['id']}").json()
    assert doc["state"] == "queued" and doc["leases"][0]["outcome"] == "released"


def test_matching_by_profile_labels_and_runtime(serve, builds):
    server = serve()
    with server.client() as c:
        labelled, addressed, onnx_only = (upload_and_queue(c, builds["int8"], labels={"lab": "a"})[0],
                                          upload_and_queue(c, builds["int8"], device="pi-7", profile=None)[0],
                                          upload_and_queue(c, builds["int8"], runtime="onnxruntime")[0])
        assert labelled["matching_devices"] == [] and addressed["matching_devices"] == []
        other = register_agent(c, "other-lab", labels={"lab": "b"})
        assert lease_job(c, "other-lab", other) is None  # wrong label, not addressed, no onnxruntime
        rpi = register_agent(c, "pi-7", profile="rpi5")
        assert lease_job(c, "pi-7", rpi)["job_id"] == addressed["id"]
        lab_a = register_agent(c, "lab-a", labels={"lab": "a", "rack": "1"}, runtimes={"litert": None, "onnxruntime": None})
        assert lease_job(c, "lab-a", lab_a)["job_id"] == labelled["id"]
        assert lease_job(c, "lab-a", lab_a)["job_id"] == onnx_only["id"]
        # a long poll wakes up when a job arrives
        waiter = concurrent.futures.ThreadPoolExecutor(1).submit(
            lambda: server.client().post("/v1/devices/lab-a/lease", json={"instance": lab_a, "wait": 30}))
        time.sleep(0.5)
        (late,) = upload_and_queue(c, builds["fp32"])
        answer = waiter.result(timeout=10)
        assert answer.status_code == 200 and answer.json()["job_id"] == late["id"]
        # a poller that hung up is not given the next job
        with pytest.raises(httpx.ReadTimeout):
            server.client().post("/v1/devices/lab-a/lease", json={"instance": lab_a, "wait": 30}, timeout=0.5)
        time.sleep(0.3)
        (unclaimed,) = upload_and_queue(c, builds["fp32"])
        time.sleep(1.0)
        assert c.get(f"/v1/jobs/{unclaimed['id']}").json()["state"] == "queued"


def test_results_are_stored_once_and_checked(serve, builds, int8_report):
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])
        inst = register_agent(c, "d")
        lease = lease_job(c, "d", inst)
        uid = uuid.uuid4().hex
        first = post_result(c, lease, int8_report, "d", uid)
        again = post_result(c, lease, int8_report, "d", uid)
        assert first.status_code == 201 and again.status_code == 200
        assert first.json()["result_id"] == again.json()["result_id"] and again.json()["duplicate"] is True
        changed = copy.deepcopy(int8_report)
        changed["latency_ms"]["max"] += 1
        reused = post_result(c, lease, changed, "d", uid)
        assert reused.status_code == 409 and "already used for a different result" in reused.json()["detail"]
        second = post_result(c, lease, int8_report, "d")
        assert second.status_code == 409 and "already has result" in second.json()["detail"]

        (job2,) = upload_and_queue(c, builds["fp32"])
        lease2 = lease_job(c, "d", inst)
        broken = copy.deepcopy(int8_report)
        del broken["latency_ms"]["p99"]
        r = post_result(c, lease2, broken, "d")
        assert r.status_code == 422 and "latency_ms.p99: missing" in r.json()["detail"]
        r = post_result(c, lease2, int8_report, "d")  # a report of the int8 file for the fp32 job
        assert r.status_code == 422 and "measured an artifact with sha256" in r.json()["detail"]
        nan = json.dumps({"uid": uuid.uuid4().hex, "job_id": lease2["job_id"], "lease_id": lease2["lease_id"],
                          "device": "d", "instance": inst, "report": {**int8_report, "timings_ms": {"load": float("nan"),
                                                                                  "cold_first_inference": 1.0}}})
        r = c.post("/v1/results", content=nan, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "not a finite number" in r.json()["detail"]
        r = post_result(c, {"job_id": job2["id"], "lease_id": lease["lease_id"], "instance": inst}, int8_report, "d")
        assert r.status_code == 409 and "was never issued for job" in r.json()["detail"]
        r = post_result(c, lease2, int8_report, "someone-else")
        assert r.status_code == 409 and "belongs to device 'd'" in r.json()["detail"]
        assert c.get("/v1/results/999").status_code == 404
    with sqlite3.connect(server.db) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


def test_agent_failures_retry_or_fail(serve, builds):
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], max_attempts=3)
        inst = register_agent(c, "f")
        lease = lease_job(c, "f", inst)
        r = c.post(f"/v1/jobs/{job['id']}/failure", json={"lease_id": lease["lease_id"], "device": "f", "instance": inst,
                                                          "error": "LiteRT crashed", "retry": True})
        assert r.status_code == 200 and r.json()["state"] == "queued"
        stale = c.post(f"/v1/jobs/{job['id']}/failure", json={"lease_id": lease["lease_id"], "device": "f", "instance": inst,
                                                              "error": "again", "retry": True})
        assert stale.status_code == 409 and "not the current lease" in stale.json()["detail"]
        lease = lease_job(c, "f", inst)
        r = c.post(f"/v1/jobs/{job['id']}/failure", json={"lease_id": lease["lease_id"], "device": "f", "instance": inst,
                                                          "error": "input shape mismatch", "retry": False})
        doc = r.json()
    assert doc["state"] == "failed" and "attempt 2 failed and is not retried" in doc["error"]
    assert "attempt 1 on f: failed (LiteRT crashed)" in doc["error"]


def _lease_jobs(server, builds, count):
    """``count`` jobs of the int8 build, leased to one device; returns (device, leases)."""
    with server.client() as c:
        upload_and_queue(c, builds["int8"], count=count, lease_seconds=3600)
        inst = register_agent(c, "poster")
        leases = [lease_job(c, "poster", inst) for _ in range(count)]
    assert all(leases) and len({x["job_id"] for x in leases}) == count
    return leases


@pytest.mark.slow
def test_1000_concurrent_posts_with_duplicates_store_the_distinct_ones(serve, builds, int8_report, capsys):
    """900 distinct results and 100 re-sent ones (same id and body), posted by 8 clients at once."""
    server = serve()
    leases = _lease_jobs(server, builds, 900)
    posts = [{"uid": uuid.uuid4().hex, "job_id": x["job_id"], "lease_id": x["lease_id"], "device": "poster",
              "instance": x["instance"], "report": int8_report} for x in leases]
    rng = random.Random(7)
    posts += [posts[i] for i in rng.sample(range(900), 100)]
    rng.shuffle(posts)
    local = threading.local()

    def send(body):
        if not hasattr(local, "client"):
            local.client = server.client()
        r = local.client.post("/v1/results", json=body)
        return r.status_code, r.json()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, posts))
    elapsed = time.perf_counter() - start
    codes = [code for code, _ in answers]
    assert codes.count(201) == 900 and codes.count(200) == 100, sorted(set(codes))
    assert sum(doc["duplicate"] for _, doc in answers) == 100
    by_uid = {}
    for body, (_, doc) in zip(posts, answers, strict=True):
        assert by_uid.setdefault(body["uid"], doc["result_id"]) == doc["result_id"]  # a duplicate names the original
    with sqlite3.connect(server.db) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 900
        assert db.execute("SELECT COUNT(DISTINCT uid) FROM submissions").fetchone()[0] == 900
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0] == 900
    with capsys.disabled():
        print(f"\n[ingest] 1000 posts (100 duplicates) from 8 clients in {elapsed:.2f} s: "
              f"{1000 / elapsed:.0f} posts/s on this machine")


@pytest.mark.slow
def test_collector_killed_while_results_arrive_keeps_every_acknowledged_one(serve, builds, int8_report, tmp_path):
    """SIGKILL the collector in the middle of concurrent posts, start it again on the same
    database: every result that was answered with a 2xx is there; re-sending the others stores
    each exactly once."""
    server = serve()
    leases = _lease_jobs(server, builds, 300)
    posts = [{"uid": uuid.uuid4().hex, "job_id": x["job_id"], "lease_id": x["lease_id"], "device": "poster",
              "instance": x["instance"], "report": int8_report} for x in leases]
    acked: dict[str, int] = {}
    lock = threading.Lock()
    killed = threading.Event()

    def sender(chunk):
        with httpx.Client(base_url=server.url, headers=server.auth, timeout=10) as client:
            for body in chunk:
                try:
                    r = client.post("/v1/results", json=body)
                except httpx.HTTPError:
                    return  # the collector is gone: this one and the rest are unacknowledged
                assert r.status_code in (200, 201), r.text
                with lock:
                    acked[body["uid"]] = r.json()["result_id"]
                    # killed by the sender that saw the 120th answer, while the others' posts are
                    # in flight (a kill from a polling thread came after all 300 on a fast machine)
                    kill = len(acked) >= 120 and not killed.is_set()
                    if kill:
                        killed.set()
                if kill:
                    server.kill()

    threads = [threading.Thread(target=sender, args=(posts[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    wait_for(killed.is_set, 60, "120 acknowledged results")
    for t in threads:
        t.join(timeout=30)
    n_acked = len(acked)
    assert 120 <= n_acked < 300, n_acked

    server.start()
    with sqlite3.connect(server.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = dict(db.execute("SELECT uid, result_id FROM submissions").fetchall())
    missing = {uid: rid for uid, rid in acked.items() if stored.get(uid) != rid}
    assert not missing, f"{len(missing)} acknowledged results lost"
    with server.client() as c:
        resent = [c.post("/v1/results", json=body) for body in posts]
        assert all(r.status_code in (200, 201) for r in resent)
        assert sum(r.status_code == 200 for r in resent) == len(stored)  # already there: answered as duplicates
    with sqlite3.connect(server.db) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 300
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0] == 300


def test_documents_the_record_keeps_in_columns_are_typed(serve, builds, int8_report):
    """Free-form documents are kept as sent, but the fields stored in columns must have their type:
    a manifest or report that would break 'edgec report' is refused with a 422, not stored."""
    server = serve()
    manifest = json.loads((builds["int8"] / "manifest.json").read_text())
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])
        record = manifest["artifacts"][0]
        base = {"files": {"model.tflite": record["sha256"]}, "target": "model.tflite", "artifact": record,
                "profile": "x86-cpu"}
        for bad, where in (({**manifest, "profile": "x86-cpu"}, "manifest.profile"),
                           ({**manifest, "source": {"sha256": ["x"]}}, "manifest.source.sha256"),
                           ({**manifest, "verification": {"artifact_accuracy": "high"}}, "artifact_accuracy"),
                           ({**manifest, "target": {"kind": "tflite"}}, "manifest.target"),
                           ({**manifest, "size": 2**70}, "out of the 64-bit integer range")):
            r = c.post("/v1/jobs", json={**base, "manifest": bad})
            assert r.status_code == 422 and where in r.text.replace('"', "").replace(",", "."), (where, r.text)
        r = c.post("/v1/jobs", json={**base, "manifest": manifest, "artifact": {**record, "bytes": 2**64}})
        assert r.status_code == 422
        inst = register_agent(c, "typed")
        lease = lease_job(c, "typed", inst)
        for bad, message in (({**int8_report, "latency_ms": {**int8_report["latency_ms"], "max": 10**30}},
                              "out of the 64-bit integer range"),
                             ({**int8_report, "power": {"available": False, "reason": "none",
                                                        "energy_mj_per_inference": 5}},
                              "unavailable power carries no readings")):
            r = post_result(c, lease, bad, "typed")
            assert r.status_code == 422 and message in r.json()["detail"], r.text
        assert post_result(c, lease, int8_report, "typed").status_code == 201
        stored = c.get(f"/v1/jobs/{job['id']}").json()
        assert c.get("/v1/report").status_code == 200
    assert stored["state"] == "done"
    with sqlite3.connect(server.db) as db:
        kept = json.loads(db.execute("SELECT manifest FROM artifacts").fetchone()[0])
    assert kept == manifest  # stored as sent: no fields added by validation


@pytest.mark.parametrize("field,value,message", [
    ("files", {"../../etc/passwd": "0" * 64}, "files"),
    ("files", {"model.tflite": "not-a-sha"}, "files"),
    ("target", "nested/dir/model.tflite", "target"),
    ("profile", "x86 cpu; rm -rf /", "profile"),
    ("options", {"power_command": "rm -rf /"}, "power_command"),
    ("options", {"runs": 10, "min_seconds": 2}, "not both"),
    ("max_attempts", 0, "max_attempts"),
])
def test_job_bodies_are_validated(serve, builds, field, value, message):
    server = serve()
    manifest = json.loads((builds["int8"] / "manifest.json").read_text())
    record = manifest["artifacts"][0]
    body = {"files": {"model.tflite": record["sha256"]}, "target": "model.tflite", "artifact": record,
            "manifest": manifest, "profile": "x86-cpu", field: value}
    with server.client() as c:
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 422 and message in r.text, r.text
        del body[field]
        body.update({"files": {"model.tflite": record["sha256"]}, "target": "model.tflite", "profile": "x86-cpu"})
        missing = c.post("/v1/jobs", json=body)
        assert missing.status_code == 409 and "not uploaded yet: model.tflite" in missing.json()["detail"]
        assert c.get("/v1/health").status_code == 200
