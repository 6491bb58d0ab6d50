"""Leases expire on one clock that cannot step: a wall-clock step on the collector's host
(SQLite) and collectors whose clocks disagree (PostgreSQL) never expire a live lease, while a
lease without heartbeats still expires."""

from __future__ import annotations

import os
import signal
import time

from tests.helpers.fleet import SHIFTED, register_device, upload_and_queue, wait_for


def _clock_env(shift: float = 0.0, step: float = 0.0) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SHIFTED), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "EDGEC_TEST_CLOCK_SHIFT": str(shift), "EDGEC_TEST_CLOCK_STEP": str(step)}



def _beat(client, name: str, instance: str, lease_id: str) -> str:
    r = client.post(f"/v1/devices/{name}/heartbeat", json={"instance": instance, "leases": [lease_id]})
    assert r.status_code == 200, r.text
    return r.json()["leases"][lease_id]


def test_a_wall_clock_step_does_not_expire_a_live_lease_on_sqlite(serve, builds):
    server = serve("--lease-seconds", "2", env=_clock_env(step=3600))
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"])
        inst = register_device(c, "steady")
        lease = c.post("/v1/devices/steady/lease", json={"instance": inst}).json()
        before = c.get("/v1/health").json()["time"]
        os.kill(server.proc.pid, signal.SIGUSR1)  # the server's wall clock jumps one hour ahead
        wait_for(lambda: c.get("/v1/health").json()["time"] - before > 3000, 10, "the clock step")
        time.sleep(0.75)  # a few rounds of the lease reaper, well within the 2 s lease
        beats = []
        for _ in range(12):  # 3 s of heartbeats: longer than the lease
            beats.append(_beat(c, "steady", inst, lease["lease_id"]))
            time.sleep(0.25)
        doc = c.get(f"/v1/jobs/{job['id']}").json()
        assert set(beats) == {"active"}, beats
        assert doc["state"] == "leased" and doc["leases"][0]["outcome"] is None, doc
        # without heartbeats the lease still ends, one lease after the last
        expired = wait_for(lambda: (j := c.get(f"/v1/jobs/{job['id']}").json())["state"] == "queued" and j, 10,
                           "the abandoned lease to expire")
    assert expired["leases"][0]["outcome"] == "expired"


def test_collectors_whose_clocks_disagree_share_the_database_clock(serve, builds, postgres_url):
    on_time = serve(db=postgres_url)
    ahead = serve(db=postgres_url, env=_clock_env(shift=120))  # its clock runs 120 s ahead
    with on_time.client() as c, ahead.client() as fast:
        assert fast.get("/v1/health").json()["time"] - c.get("/v1/health").json()["time"] > 100
        (job,) = upload_and_queue(c, builds["int8"], lease_seconds=30)
        inst = register_device(c, "shared")
        lease = c.post("/v1/devices/shared/lease", json={"instance": inst}).json()
        assert lease["job_id"] == job["id"]
        beats = []
        for i in range(12):  # 3 s, heartbeats to both collectors in turn
            beats.append(_beat(c if i % 2 else fast, "shared", inst, lease["lease_id"]))
            time.sleep(0.25)
        assert set(beats) == {"active"}, beats
        doc = fast.get(f"/v1/jobs/{job['id']}").json()
        assert doc["state"] == "leased" and doc["leases"][0]["outcome"] is None, doc
        # a lease nobody renews still expires (the reaper of either collector sees it)
        (other,) = upload_and_queue(c, builds["int8"], lease_seconds=1)
        quiet = register_device(c, "quiet")
        assert c.post("/v1/devices/quiet/lease", json={"instance": quiet}).json()["job_id"] == other["id"]
        expired = wait_for(lambda: (j := c.get(f"/v1/jobs/{other['id']}").json())["state"] == "queued" and j, 15,
                           "the abandoned lease to expire")
    assert expired["leases"][0]["outcome"] == "expired"
    assert expired["leases"][0]["detail"] == "no heartbeat from quiet for 1 s"
