"""A collector left running: idle, then a few thousand of the fleet's requests, must end holding
what it held at the start (open files, memory, database connections), and never more database
connections than its pool allows."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.collector import soak

POOL = 3
# Fixed allowances, far below what a leak does in the same time (a read connection per reaper
# round and per request: hundreds of descriptors and connections, hundreds of MiB).
FDS_ALLOWED = 8
RSS_ALLOWED_MB = 24.0
IDLE_S = 6.0
REQUESTS = 2000
# PostgreSQL: the read pool, 4 writers, at most 4 result connections, the listener.
PG_FIXED = 4 + 4 + 1


def _soak(server, builds, report, url=None) -> None:
    pid = server.proc.pid
    work = soak.Workload(server.url, server.token, builds["int8"], report, threads=4)
    work.run(200)  # warm: imports, caches, the pool's connections made once
    start = soak.sample(pid, url)
    time.sleep(IDLE_S)  # the lease reaper reads the record four times a second meanwhile
    idle = soak.sample(pid, url)
    work.run(REQUESTS)
    end = soak.sample(pid, url)
    assert not work.errors, work.errors[:5]
    assert work.requests >= REQUESTS
    health = httpx.get(server.url + "/v1/health", headers=server.auth, timeout=30).json()
    pool = health["database"]["pool"]
    # at most the lease reaper's read may be under way while health answers
    assert pool["size"] == POOL and pool["open"] <= POOL and pool["in_use"] <= 1, pool
    growth = f"start {start}, after {IDLE_S:g} s idle {idle}, after {work.requests} requests {end}"
    assert idle["fds"] - start["fds"] <= FDS_ALLOWED, growth
    assert end["fds"] - start["fds"] <= FDS_ALLOWED, growth
    assert end["rss_mb"] - start["rss_mb"] <= RSS_ALLOWED_MB, growth
    if url:
        assert max(start["db"], idle["db"], end["db"]) <= POOL + PG_FIXED, growth


def test_sqlite_collector_holds_no_more_after_idling_and_thousands_of_requests(serve, builds, int8_report):
    _soak(serve("--db-pool", str(POOL)), builds, int8_report)


def test_postgres_collector_holds_no_more_than_its_pool(serve, builds, int8_report, postgres_url):
    _soak(serve("--db-pool", str(POOL), db=postgres_url), builds, int8_report, postgres_url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_health_reports_the_pool(backend, serve, request):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    server = serve("--db-pool", "2", db=url)
    pool = httpx.get(server.url + "/v1/health", headers=server.auth, timeout=30).json()["database"]["pool"]
    assert pool["size"] == 2 and 1 <= pool["open"] <= 2 and pool["in_use"] <= 1, pool
