"""A real agent working through a queue while its collector is stopped, killed and started again,
and while the wall clocks of both step by an hour: every job ends with exactly one result."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import httpx

from tests.helpers.fleet import SHIFTED, upload_and_queue, wait_for

JOBS = 6


def _done(server) -> list[dict]:
    try:
        with server.client() as c:
            return c.get("/v1/jobs", params={"state": "done", "limit": 100}).json()["jobs"]
    except httpx.HTTPError:
        return []  # the collector is down just now


def test_the_agent_survives_restarts_and_clock_steps_without_losing_or_doubling_a_result(
        serve, agents, builds, monkeypatch):
    # both processes load the shifted clock: SIGUSR1 steps their wall clock by an hour
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(SHIFTED), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("EDGEC_TEST_CLOCK_STEP", "3600")
    server = serve()
    port = int(server.url.rsplit(":", 1)[1])
    with server.client() as c:
        jobs = upload_and_queue(c, builds["int8"], count=JOBS, options={"runs": 20})
    agent = agents(server, "survivor", "--profile", "x86-cpu")

    wait_for(lambda: len(_done(server)) >= 1, 120, "the first result")
    os.kill(server.proc.pid, signal.SIGUSR1)
    os.kill(agent.proc.pid, signal.SIGUSR1)
    wait_for(lambda: len(_done(server)) >= 2, 120, "a result after the clock step")
    server.stop()  # SIGTERM; the new process's clock is an hour behind the old one's
    time.sleep(1.5)
    server.start(port=port)
    wait_for(lambda: len(_done(server)) >= 4, 120, "results after the restart")
    server.kill()  # no shutdown at all
    time.sleep(1.5)
    server.start(port=port)
    done = wait_for(lambda: (d := _done(server)) and len(d) == JOBS and d, 180, "every job's result")

    assert agent.proc.poll() is None, agent.text()[-2000:]
    assert sorted(j["id"] for j in done) == sorted(j["id"] for j in jobs)
    assert len({j["result_id"] for j in done}) == JOBS
    with server.client() as c:
        for job in done:
            doc = c.get(f"/v1/jobs/{job['id']}").json()
            # no lease was lost to a step of either clock or to a restart: one attempt each
            assert [(x["device"], x["outcome"]) for x in doc["leases"]] == [("survivor", "done")], doc["leases"]
    server.stop()
    with sqlite3.connect(server.db) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == JOBS
