"""The dashboard in headless Chromium against a real `edgec serve` fed by a real agent on
loopback: sign in through the printed link, see the device and its result, watch a new result
arrive without a reload, cancel a job; an anonymous browser sees nothing; no console errors.
Hostile text from agents is shown as text on every page and never runs."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.helpers.dashboard import screenshot, sign_in_link
from tests.helpers.fleet import lease_job, post_result, upload_and_queue, wait_for

PAGES = ("/", "/queue", "/results", "/search")
WAIT = 90_000  # ms: an agent's measurement on a busy machine


def _job_state(server, job_id: int) -> str:
    with server.client() as c:
        return c.get(f"/v1/jobs/{job_id}").json()["state"]


def _no_reload_marker(page) -> None:
    page.evaluate("window.__sameDocument = 42")


def _same_document(page) -> bool:
    return page.evaluate("window.__sameDocument") == 42


def test_signed_in_browser_follows_the_fleet_live(serve, agents, builds, open_page, tmp_path):
    server = serve()
    agent = agents(server, "cpu-1", "--profile", "x86-cpu", "--labels", "lab=ci,rack=2")
    with server.client() as c:
        (first,) = upload_and_queue(c, builds["fp32"])
    wait_for(lambda: _job_state(server, first["id"]) == "done", 120, "the first measurement")
    with server.client() as c:
        first_result = c.get(f"/v1/jobs/{first['id']}").json()["result_id"]

    # an anonymous browser gets the sign-in page everywhere, and no data
    anon = open_page()
    for path in PAGES:
        response = anon.page.goto(server.url + path)
        assert response.status == 200
        anon.page.wait_for_selector("#signin")
        assert "cpu-1" not in anon.page.content() and "x86-cpu" not in anon.page.content()
    for path in ("/fragments/fleet", "/fragments/results", "/charts/report.svg", "/charts/history.svg"):
        got = anon.context.request.get(server.url + path)
        assert got.status == 401 and "cpu-1" not in got.text()
    screenshot(anon.page, "signin", tmp_path)

    # sign in through the link serve printed; the cookie is HttpOnly and SameSite=Strict
    me = open_page()
    me.page.goto(sign_in_link(server))
    me.page.wait_for_url(server.url + "/")
    (cookie,) = me.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    row = me.page.wait_for_selector('tr.device[data-device="cpu-1"]')
    assert "online" in row.inner_text() and "lab=ci" in row.inner_text() and "litert" in row.inner_text()
    assert "no sensor" in row.inner_text()  # the container has no power sensor
    screenshot(me.page, "fleet", tmp_path)
    # the link was for one sign-in only
    used = anon.context.request.get(sign_in_link(server))
    assert used.status == 401 and "already used" in used.text() and "set-cookie" not in used.headers

    # the result is there; a new one appears without a reload
    me.page.goto(server.url + "/results")
    me.page.wait_for_selector(f'tr.result[data-result="{first_result}"]')
    assert me.page.locator("tr.result").count() == 1
    _no_reload_marker(me.page)
    me.page.wait_for_function("() => document.querySelector('#report-chart').naturalWidth > 0")
    chart = me.page.get_attribute("#report-chart", "src")
    with server.client() as c:
        (second,) = upload_and_queue(c, builds["int8"])
    me.page.wait_for_function("() => document.querySelectorAll('tr.result').length === 2", timeout=WAIT)
    # the charts follow too (redrawn at most every 30 s while results arrive)
    me.page.wait_for_function(f"() => document.querySelector('#report-chart').getAttribute('src') !== '{chart}'",
                              timeout=WAIT)
    assert _same_document(me.page)
    text = me.page.inner_text("#result-rows")
    assert "int8" in text and "fp32" in text and "no sensor" in text
    me.page.wait_for_selector("#compare")  # the two builds side by side: speed-up against its fp32
    compare = me.page.inner_text("#compare")
    assert "speed-up vs its fp32" in compare and "1.00x" in compare
    for chart in ("#history-chart", "#report-chart"):
        me.page.wait_for_function(f"() => document.querySelector('{chart}').naturalWidth > 0")
    screenshot(me.page, "results", tmp_path)

    # cancel a job no device can run, from the queue page
    with server.client() as c:
        (stuck,) = upload_and_queue(c, builds["int8"], profile="rpi5")
    me.page.goto(server.url + "/queue")
    me.page.wait_for_selector(f'tr.job[data-job="{stuck["id"]}"][data-state="queued"]')
    screenshot(me.page, "queue", tmp_path)
    me.page.click(f'tr.job[data-job="{stuck["id"]}"] button')
    me.page.wait_for_selector(f'tr.job[data-job="{stuck["id"]}"][data-state="cancelled"]')
    assert f"job {stuck['id']} cancelled" in me.page.inner_text("#note")
    assert _job_state(server, stuck["id"]) == "cancelled"

    # the queue refreshes by itself too: a new job shows up without a reload
    _no_reload_marker(me.page)
    with server.client() as c:
        (later,) = upload_and_queue(c, builds["int8"], profile="rpi5")
    me.page.wait_for_selector(f'tr.job[data-job="{later["id"]}"]', timeout=WAIT)
    assert _same_document(me.page)
    # while nothing changes the script's polls are answered 304 (nothing read or rendered), and
    # the ages it shows go on counting
    statuses: list[int] = []
    me.page.on("response", lambda r: statuses.append(r.status) if "/fragments/queue" in r.url else None)
    age = f'tr.job[data-job="{later["id"]}"] time'
    shown = me.page.inner_text(age)
    me.page.wait_for_function(f"() => document.querySelector('{age}').textContent !== '{shown}'", timeout=WAIT)
    for _ in range(60):  # Playwright delivers the page's events while it is called
        if 304 in statuses:
            break
        me.page.wait_for_timeout(500)
    assert 304 in statuses, statuses
    assert _same_document(me.page)

    me.page.goto(server.url + "/search")
    me.page.wait_for_selector("#search")
    assert "--search-storage" in me.page.inner_text("#search")
    assert me.errors == [] and anon.errors == [], me.errors + anon.errors
    assert agent.proc.poll() is None and "Traceback" not in server.log.read_text()
    assert second["id"] > first["id"]


def test_a_printed_link_signs_in_and_sign_out_ends_the_session(serve, builds, open_page):
    server = serve()
    with server.client() as c:
        (job,) = upload_and_queue(c, builds["int8"], profile="rpi5")
    proc = server.cli("dashboard", "--server", server.url)  # a fresh link, made with the admin token
    assert proc.returncode == 0, proc.stderr
    me = open_page()
    me.page.goto(proc.stdout.strip().split("dashboard: ", 1)[1])
    me.page.wait_for_selector("#fleet")
    # a form post without the session's CSRF token changes nothing
    post = me.context.request.post(f"{server.url}/jobs/{job['id']}/cancel", form={"csrf": "wrong"},
                                   max_redirects=0)
    assert post.status == 403 and _job_state(server, job["id"]) == "queued"
    me.page.click("form.logout button")
    me.page.wait_for_selector("#signin")
    assert me.context.request.get(server.url + "/fragments/queue").status == 401
    assert me.errors == [], me.errors


HOSTILE = "<script>document.body.appendChild(document.createElement('p'))</script>"
PWN = "<img src=x onerror=window.__pwned=1><script>window.__pwned=1</script>"


def test_hostile_text_from_agents_never_runs(serve, builds, int8_report, open_page, tmp_path):
    server = serve("--search-storage", str(make_study(tmp_path / "search.db", PWN)))
    manifest = json.loads((builds["int8"] / "manifest.json").read_text())
    manifest["source"]["name"] = "<b id=pwned-model>m</b>" + PWN
    instance = uuid.uuid4().hex
    with server.client() as c:
        registered = c.post("/v1/devices/register", json={
            "device": "x-1", "instance": instance, "profile": "x86-cpu", "schema_version": 1,
            "labels": {"note": HOSTILE, "rack": "<i>2</i>"},
            "runtimes": {"litert": "<b>2</b><script>window.__pwned=1</script>"},
            "power": {"available": True, "sensor": PWN}, "detected": {"model": "<svg onload=window.__pwned=1>"}})
        assert registered.status_code == 200, registered.text
        (job,) = upload_and_queue(c, builds["int8"], device="x-1", manifest=manifest)
        lease = lease_job(c, "x-1", instance)
        report = {**int8_report, "device": {**int8_report["device"], "model": PWN, "os": HOSTILE}}
        stored = post_result(c, lease, report, "x-1")
        assert stored.status_code == 201, stored.text
        (failing,) = upload_and_queue(c, builds["int8"], device="x-1")
        lease = lease_job(c, "x-1", instance)
        failed = c.post(f"/v1/jobs/{failing['id']}/failure", json={
            "device": "x-1", "lease_id": lease["lease_id"], "instance": instance, "error": PWN, "retry": False})
        assert failed.status_code == 200, failed.text

    me = open_page()
    me.page.goto(sign_in_link(server))
    me.page.wait_for_selector("#fleet")
    expect = {"/": ("#devices", "<svg onload"), "/queue": ("tr.job", "onerror=window.__pwned=1"),
              "/results": ("#result-rows", "<b id=pwned-model>"), "/search": ("#trials", "onerror=window.__pwned=1")}
    for path in PAGES:
        me.page.goto(server.url + path)
        me.page.wait_for_selector("main h1")
        if path in expect:
            selector, shown = expect[path]
            me.page.wait_for_selector(selector)
            assert shown in me.page.inner_text("main")  # shown as text
        if path != "/search":  # one fragment round (2-3 s; Search's is 10 s), so that refreshed HTML is checked too
            me.page.wait_for_function("() => document.querySelector('[data-refresh]').dataset.busy === '0'",
                                      timeout=30_000)
        structure = me.page.evaluate("""() => ({
            pwned: window.__pwned === undefined ? null : window.__pwned,
            scripts: Array.from(document.scripts).map(s => s.getAttribute('src')),
            injected: document.querySelectorAll('main p:not(.note):not(.empty):not(.muted):not(#study-summary)'
                + ':not(#studies), b, i, svg, img:not(.chart), #pwned-model, [onerror], [onload]').length,
            bodyChildren: Array.from(document.body.children).map(e => e.tagName)})""")
        assert structure == {"pwned": None, "scripts": ["/static/dashboard.js"], "injected": 0,
                             "bodyChildren": ["HEADER", "MAIN"]}, (path, structure)
    assert me.errors == [], me.errors  # a blocked inline script would be a CSP console error
    with server.client() as c:
        assert c.get(f"/v1/jobs/{job['id']}").json()["state"] == "done"


def make_study(path, label_suffix: str = ""):
    """A real Optuna storage holding a small finished study, as `edgec search` leaves it."""
    optuna = pytest.importorskip("optuna")
    from edgec.search.study import SETTINGS_ATTR

    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="digits-int8",
                                directions=["maximize", "minimize", "minimize"])
    study.set_user_attr(SETTINGS_ATTR, {"objectives": ["accuracy", "latency", "size"], "target": "x86-cpu",
                                        "device": {"where": "local"}})
    points = [(97.9, 0.21, 41_000), (97.1, 0.12, 22_000), (96.0, 0.30, 52_000), (98.4, 0.35, 90_000)]
    for n, (acc, ms, zstd) in enumerate(points):
        result = {"accuracy": acc, "drop": 0.3, "latency": {"p50_ms": ms, "p90_ms": ms * 1.1, "ci_ms": [ms, ms],
                                                             "energy_mj": None, "devices": ["local"]},
                  "bytes": zstd * 3, "zstd_bytes": zstd, "nonzero_params": 10_000, "compression": None,
                  "file": "model.tflite", "sha256": f"{n:064x}", "build_dir": f"/runs/trial-{n}{label_suffix}"}
        study.add_trial(optuna.trial.create_trial(values=[acc, ms, zstd], user_attrs={
            "result": result, "key": f"k{n}", "label": f"int8 prune {n * 0.2:.1f}{label_suffix}"}))
    return path


@pytest.fixture
def study_storage(tmp_path):
    return make_study(tmp_path / "search.db")


def test_search_page_shows_the_front(serve, study_storage, open_page, tmp_path):
    server = serve("--search-storage", str(study_storage))
    me = open_page()
    me.page.goto(sign_in_link(server))
    me.page.wait_for_selector("#fleet")
    me.page.goto(server.url + "/search")
    me.page.wait_for_selector("#trials")
    assert "digits-int8" in me.page.inner_text("#study-summary")
    assert me.page.locator("tr.trial").count() == 4
    # trial 2 is beaten on every objective by trial 0; the others are the front
    front = me.page.eval_on_selector_all("tr.trial.front", "rows => rows.map(r => r.dataset.trial)")
    assert front == ["0", "1", "3"]
    assert "/runs/trial-1/model.tflite" in me.page.inner_text('tr.trial[data-trial="1"]')
    me.page.wait_for_function("() => document.querySelector('#front-chart').naturalWidth > 0")
    assert me.page.evaluate("window.__pwned") is None
    screenshot(me.page, "search", tmp_path)
    assert me.errors == [], me.errors
