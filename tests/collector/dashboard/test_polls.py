"""What an open dashboard costs the record, counted (not timed): a poll of a page that did not
change reads nothing (SQLite) or one snapshot (PostgreSQL) and is answered 304; a change shows on
the next poll; a device that goes offline shows without any read. And how browser sessions end:
sign-out, idle time, lifetime, each back to the sign-in page with no data.

The collector here is the application `edgec serve` runs, on a real SQLite file or PostgreSQL
database, driven in this process so that its reads and its clock can be counted and moved."""

from __future__ import annotations

import re
import time

import pytest

from tests.helpers.fleet import register_device, upload_and_queue

FRAGMENTS = ("/fragments/fleet", "/fragments/queue", "/fragments/results")
OFFLINE_AFTER = 60.0


class _Counting:
    """A connection that records every SQL statement it runs."""

    def __init__(self, conn, log: list[str]):
        self._conn = conn
        self._log = log

    def execute(self, sql, *args):
        self._log.append(" ".join(sql.split())[:400])
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class Clock:
    """time.time() of the dashboard's pages, moved on by the test."""

    def __init__(self):
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def collector(request, tmp_path, monkeypatch):
    """(an HTTP client of the collector's application, its admin headers, the SQL run by the
    dashboard's reads, the pages' clock, the dashboard)."""
    from starlette.testclient import TestClient

    from edgec.collector import routes, server
    from edgec.collector.dashboard import pages
    from edgec.collector.storage.store import Store

    db = request.getfixturevalue("postgres_url") if request.param == "postgresql" else tmp_path / "c.db"
    clock = Clock()
    monkeypatch.setattr(pages, "time", clock)
    store = Store(db).open()
    settings = server.ServerSettings("admin-" + "t" * 40, tmp_path / "blobs", offline_after=OFFLINE_AFTER)
    site = routes.create_app(store, settings)
    dash = site.dashboard
    statements: list[str] = []
    plain_read = dash.read

    async def counted(fn, *args):
        return await plain_read(lambda conn, *a: fn(_Counting(conn, statements), *a), *args)

    dash.read = counted
    dash.reread_every_s = 0.0  # every change shows on the next poll (the hold has its own tests)
    dash.refresh_share = 0.0
    try:
        with TestClient(site, base_url="http://127.0.0.1") as client:
            yield client, {"Authorization": f"Bearer {settings.token}"}, statements, clock, dash
    finally:
        store.close()


def _signed_in(client, dash) -> str:
    assert client.get(dash.sign_in_path()).status_code == 200
    page = client.get("/queue")
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_an_unchanged_poll_reads_nothing_and_a_change_shows_next(collector, builds, request):
    client, admin, statements, clock, dash = collector
    postgres = "postgresql" in request.node.callspec.id
    register_device(client_with(client, admin), "dev-a")
    with client_with(client, admin) as api:
        (first,) = upload_and_queue(api, builds["int8"], profile="rpi5")
    _signed_in(client, dash)

    tags = {}
    for path in FRAGMENTS:
        got = client.get(path)
        assert got.status_code == 200 and got.headers["etag"], path
        tags[path] = got.headers["etag"]
    for path in FRAGMENTS:
        statements.clear()
        again = client.get(path, headers={"If-None-Match": tags[path]})
        assert again.status_code == 304 and again.content == b"", path
        assert again.headers["etag"] == tags[path]
        # SQLite: the collector's own count of commits says nothing changed; PostgreSQL: one
        # snapshot of the database (any collector's commit moves it)
        assert len(statements) == (1 if postgres else 0), (path, statements)
        if postgres:
            assert "pg_current_snapshot" in statements[0]
        # a client that sends no ETag gets the page made from the rows kept, none read again
        statements.clear()
        full = client.get(path)
        assert full.status_code == 200 and len(statements) == (1 if postgres else 0), (path, statements)

    # changes: a device registers, a job is queued: the next poll of the old ETag shows them
    register_device(client_with(client, admin), "dev-b")
    fleet = client.get("/fragments/fleet", headers={"If-None-Match": tags["/fragments/fleet"]})
    assert fleet.status_code == 200 and 'data-device="dev-b"' in fleet.text
    assert fleet.headers["etag"] != tags["/fragments/fleet"]
    # the Fleet page reads three statements whatever the number of devices, and no job spec
    assert sum("FROM devices" in s or "FROM jobs" in s or "FROM credentials" in s for s in statements) == 3
    assert not any("spec" in s or "j.*" in s for s in statements), statements
    # the record changed, not what the Queue shows: one cheap probe of its jobs, no rows, a 304
    statements.clear()
    same = client.get("/fragments/queue", headers={"If-None-Match": tags["/fragments/queue"]})
    assert same.status_code == 304 and len(statements) == (2 if postgres else 1), statements
    assert statements[-1].startswith("SELECT COUNT(*), MAX(id), SUM(updated) FROM (SELECT id, updated FROM jobs")
    with client_with(client, admin) as api:
        (second,) = upload_and_queue(api, builds["int8"], profile="rpi5")
    statements.clear()
    queue = client.get("/fragments/queue", headers={"If-None-Match": tags["/fragments/queue"]})
    assert queue.status_code == 200 and f'data-job="{second["id"]}"' in queue.text
    assert f'data-job="{first["id"]}"' in queue.text
    assert not any("spec" in s or "j.*" in s for s in statements), statements

    # time alone: a device goes offline; shown without a read of the record
    tag = client.get("/fragments/fleet").headers["etag"]  # the job queued since moved the mark
    assert client.get("/fragments/fleet", headers={"If-None-Match": tag}).status_code == 304
    clock.ahead = OFFLINE_AFTER + 5
    statements.clear()
    later = client.get("/fragments/fleet", headers={"If-None-Match": tag})
    assert later.status_code == 200 and len(statements) == (1 if postgres else 0)
    assert re.search(r'data-device="dev-b">.*?class="state offline"', later.text, re.S)


def test_a_streaming_record_is_read_again_at_most_once_per_interval(collector):
    """While the record keeps changing, the pages' rows are read again once per interval, not
    once per poll: an open dashboard costs per second, not per result."""
    client, admin, statements, _, dash = collector
    now = [1000.0]
    dash.clock = lambda: now[0]
    dash.reread_every_s = 5.0
    _signed_in(client, dash)
    register_device(client_with(client, admin), "dev-a")
    first = client.get("/fragments/fleet")
    assert 'data-device="dev-a"' in first.text  # a first change after a quiet spell shows at once
    tag = first.headers["etag"]
    now[0] += 1.0
    register_device(client_with(client, admin), "dev-b")
    statements.clear()
    held = client.get("/fragments/fleet", headers={"If-None-Match": tag})
    assert held.status_code == 304  # within the interval: the rows kept
    assert not any("FROM devices" in s for s in statements), statements
    now[0] += 4.0
    shown = client.get("/fragments/fleet", headers={"If-None-Match": tag})
    assert shown.status_code == 200 and 'data-device="dev-b"' in shown.text


def test_what_the_pages_cost_spaces_their_reads(collector):
    """While the record keeps changing, the next read waits until the CPU time the pages took
    (reads and renders, counted by the dashboard) is at most its share of one core since; the
    first change after a quiet spell still shows at once."""
    client, admin, statements, _, dash = collector
    now = [1000.0]
    dash.clock = lambda: now[0]
    dash.reread_every_s = 5.0
    dash.refresh_share = 0.005
    _signed_in(client, dash)
    register_device(client_with(client, admin), "dev-a")
    first = client.get("/fragments/fleet")
    assert 'data-device="dev-a"' in first.text
    tag = first.headers["etag"]
    dash.spent(0.1)  # as if the reads and renders since took 100 ms: 0.1 / 0.005 = 20 s
    assert dash.hold() >= 20.0
    # results stream in: a change between every two polls, 2 s apart; held past the 5 s
    for n in range(9):
        now[0] += 2.0
        register_device(client_with(client, admin), f"dev-s{n}")
        statements.clear()
        held = client.get("/fragments/fleet", headers={"If-None-Match": tag})
        assert held.status_code == 304, n
        assert not any("FROM devices" in s for s in statements), statements
    now[0] = 1000.0 + dash.hold() + 0.5
    shown = client.get("/fragments/fleet", headers={"If-None-Match": tag})
    assert shown.status_code == 200 and 'data-device="dev-s8"' in shown.text
    tag = shown.headers["etag"]
    # a quiet spell of 6 s (polls see no change), then one change: shown at once, however much
    # the last read took
    dash.spent(1.0)
    now[0] += 3.0
    assert client.get("/fragments/fleet", headers={"If-None-Match": tag}).status_code == 304
    now[0] += 3.0
    assert client.get("/fragments/fleet", headers={"If-None-Match": tag}).status_code == 304
    register_device(client_with(client, admin), "dev-late")
    late = client.get("/fragments/fleet", headers={"If-None-Match": tag})
    assert late.status_code == 200 and 'data-device="dev-late"' in late.text
    # the hold is capped: a streaming record is shown at least once a minute
    dash.spent(100.0)
    assert dash.hold() == dash.max_hold_s


class client_with:  # noqa: N801 - used like a function
    """The same client with the admin token on each request: the agents' and host commands' API."""

    def __init__(self, client, headers: dict[str, str]):
        self.client = client
        self.headers = headers

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __getattr__(self, method: str):
        call = getattr(self.client, method)
        return lambda url, **kw: call(url, **{**kw, "headers": {**self.headers, **kw.get("headers", {})}})


def test_sessions_end_signed_out_idle_or_old(collector):
    from edgec.collector.dashboard.sessions import Sessions

    client, admin, _, _, dash = collector
    register_device(client_with(client, admin), "dev-secret")
    now = [1000.0]
    dash.sessions = Sessions(clock=lambda: now[0], ttl=600.0, idle=60.0)

    def sees_data() -> bool:
        page = client.get("/")
        fragment = client.get("/fragments/fleet")
        if 'id="signin"' in page.text:  # the sign-in page, and nothing of the record
            assert page.status_code == 200 and fragment.status_code == 401
            assert "dev-secret" not in page.text + fragment.text and 'id="fleet"' not in page.text
            return False
        assert fragment.status_code == 200 and "dev-secret" in page.text
        return True

    # idle: a request within the idle time keeps it, a longer pause ends it
    _signed_in(client, dash)
    assert sees_data()
    now[0] += 50
    assert sees_data()
    now[0] += 50  # 50 s since the last request, 100 s since sign-in
    assert sees_data()
    now[0] += 61
    assert not sees_data()
    client.cookies.clear()

    # lifetime: polling every 30 s does not keep it past its end
    _signed_in(client, dash)
    for _ in range(19):
        now[0] += 30
        assert sees_data()
    now[0] += 31  # 601 s since sign-in
    assert not sees_data()
    client.cookies.clear()

    # sign-out: the cookie's session is gone, even if the browser kept the cookie
    csrf = _signed_in(client, dash)
    kept = dict(client.cookies)
    assert client.post("/logout", data={"csrf": "wrong"}).status_code == 403 and sees_data()
    out = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and "edgec_session=" in out.headers["set-cookie"]
    client.cookies.clear()
    client.cookies.update(kept)
    assert not sees_data()


def test_charts_wait_for_results_to_pause():
    from edgec.collector.dashboard.charts import Throttle

    now = [0.0]
    throttle = Throttle(every=5.0, share=0.01, quiet=2.0, lag=120.0, clock=lambda: now[0])
    assert throttle.version("1") == "1"  # the first version is drawn at once
    throttle.drew(0.3)
    # results stream in (a new version at every poll, 3 s apart): the chart stays
    for n in range(2, 41):
        now[0] += 3.0
        assert throttle.version(str(n)) == "1", n
    # past the longest lag (120 s) it moves on all the same, once
    now[0] += 3.0
    assert throttle.version("41") == "41"
    now[0] += 3.0
    assert throttle.version("42") == "41"
    # the results pause: the next poll that sees the same version moves the chart
    now[0] += 3.0
    assert throttle.version("42") == "42"
    # a slow drawing (3 s) keeps the next move 3 / 0.01 = 300 s away, paused or not
    throttle.drew(3.0)
    now[0] += 3.0
    assert throttle.version("43") == "42"
    now[0] += 100.0
    assert throttle.version("43") == "42"
    now[0] += 200.0
    assert throttle.version("43") == "43"


def test_a_held_mark_does_not_look_like_a_pause_to_the_charts():
    """The charts redraw once results pause; the dashboard holds a streaming record's mark for
    REREAD_EVERY_S, so a pause must be longer than two holds to be told apart from one."""
    from edgec.collector.dashboard import REREAD_EVERY_S
    from edgec.collector.dashboard.charts import QUIET_S, Throttle

    assert QUIET_S > 2 * REREAD_EVERY_S
    # a hold made longer by what the reads cost (20 s) makes the pause longer with it
    now = [0.0]
    throttle = Throttle(every=5.0, share=0.01, quiet=QUIET_S, lag=600.0, clock=lambda: now[0], held=lambda: 20.0)
    assert throttle.version("1") == "1"
    now[0] += 3.0
    assert throttle.version("2") == "1"
    for _ in range(13):  # the same version for 39 s: held twice, not paused
        now[0] += 3.0
        assert throttle.version("2") == "1"
    now[0] += 9.0
    assert throttle.version("2") == "2"
