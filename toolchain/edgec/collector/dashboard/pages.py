"""The dashboard's routes: pages (Fleet, Queue, Results, Search), the fragments their script
polls, the charts, the sign-in link, and the two actions (cancel a job, revoke a device).

The session was checked before any of these runs (:class:`edgec.collector.dashboard.Dashboard`);
the actions also need the session's CSRF token. Templates escape everything they show.
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import hashlib
import logging
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from edgec.collector import storage
from edgec.collector.dashboard import charts, views
from edgec.collector.dashboard.paths import PAGE_PATHS
from edgec.collector.dashboard.sessions import COOKIE
from edgec.collector.messages import NAME_PATTERN, SHA256_PATTERN
from edgec.collector.storage.errors import RecordRefused, StoreFailed

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PAGES = tuple(zip(PAGE_PATHS, ("Fleet", "Queue", "Results", "Search"), strict=True))
REFRESH_S = {"fleet": 2, "queue": 2, "results": 3, "search": 10}
FRAGMENTS_KEPT = 16
SEARCH_SHARE = 0.005  # the Search page's reads of its storage: at most this share of one core
_ENV = None


def templates():
    """The Jinja2 environment (autoescaped, undefined names are errors)."""
    global _ENV
    if _ENV is None:
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                 undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        env.filters["ago"] = _ago
        env.filters["num"] = lambda v, fmt="{:.4f}": "-" if v is None else fmt.format(v)
        env.filters["pairs"] = lambda d: ", ".join(f"{k}={v}" for k, v in sorted((d or {}).items()))
        env.globals["pages"] = PAGES
        _ENV = env
    return _ENV


def render(name: str, **context: Any) -> str:
    return templates().get_template(name).render(**context)


def sign_in_page(scope, note: str | None = None) -> str:
    """What a browser without a session sees: how to get a link, and no data."""
    return render("signin.html", note=note, active=None)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def create_pages(dash) -> FastAPI:
    """The dashboard application of :class:`~edgec.collector.dashboard.Dashboard` ``dash``: a
    router per page (its page, fragment, charts and action) and one for signing in and out."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    site = Site(dash)

    async def store_failed(request: Request, exc: StoreFailed):
        return HTMLResponse(render("problem.html", active=None, problem=f"the collector's database fails: {exc}"),
                            status_code=503)

    app.add_exception_handler(StoreFailed, store_failed)
    for router in (sign_in_router, fleet_router, queue_router, results_router, search_router):
        app.include_router(router(site))
    return app


class Site:
    """What the pages' routers share: the dashboard, reads and renders whose CPU time it counts
    (:meth:`Dashboard.spent`), the fragments and charts already made, and the form checks.

    Args:
        dash: the :class:`~edgec.collector.dashboard.Dashboard`.
    """

    def __init__(self, dash):
        self.dash = dash
        self.charts = charts.ChartCache()
        # rendered fragments by (template, ETag): the ETag names everything one was made from,
        # so a second browser, or a tab opened again, gets the HTML without a render
        self.fragments = charts.ChartCache(FRAGMENTS_KEPT)
        self.throttle = charts.Throttle(held=dash.held_s)

    async def read(self, fn, *args):
        return await self.dash.read_costed(fn, *args)

    def render(self, name: str, **context: Any) -> str:
        started = time.thread_time()
        try:
            return render(name, **context)
        finally:
            self.dash.spent(time.thread_time() - started)

    def page(self, request: Request, name: str, active: str, **context: Any) -> HTMLResponse:
        session = request.scope["edgec.session"]
        html = self.render(name, active=active, csrf=session.csrf, note=request.query_params.get("note"),
                           refresh=REFRESH_S, server_now=f"{time.time():.3f}", **context)
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    def fragment(self, request: Request, name: str, tag: str | None = None, context=None) -> Response:
        """A fragment: ``304`` when the browser shows ``tag`` already, else the HTML made with
        ``context()`` (a dict), or kept from the last time it was made with that tag. The page's
        script sends the ETag of what it shows: unchanged, nothing is read or rendered."""
        headers = {"cache-control": "no-store"}
        if tag is None:
            return HTMLResponse(self.render(name, **context()), headers=headers)
        headers["etag"] = tag
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        html = self.fragments.get((name, tag))
        if html is None:
            html = self.render(name, **context()).encode()
            self.fragments.put((name, tag), html)
        return Response(html, media_type="text/html; charset=utf-8", headers=headers)

    async def csrf_ok(self, request: Request) -> bool:
        # the forms are application/x-www-form-urlencoded with one field, read here without a
        # multipart parser; the body was capped before it got here
        try:
            form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=8)
        except ValueError:
            return False
        return self.dash.sessions.csrf_ok(request.scope["edgec.session"], (form.get("csrf") or [""])[0])


def _back(where: str, note: str) -> RedirectResponse:
    return RedirectResponse(f"{where}?{urllib.parse.urlencode({'note': note})}", status_code=303)


def sign_in_router(site: Site) -> APIRouter:
    """The one-time sign-in link and signing out."""
    router = APIRouter()
    dash = site.dash

    @router.get("/login")
    async def login(request: Request, token: Annotated[str, Query(max_length=128)] = ""):
        opened = dash.sessions.sign_in(token) if token else None
        if opened is None:
            html = sign_in_page(request.scope, note="this sign-in link was already used or has expired; "
                                                    "print a fresh one with 'edgec dashboard --server URL'")
            return HTMLResponse(html, status_code=401, headers={"cache-control": "no-store"})
        sid, _ = opened
        # a page of our own that moves on: the cookie then goes with a same-site navigation even
        # when the link was opened from another site (SameSite=Strict)
        response = HTMLResponse(render("signedin.html", active=None), headers={"cache-control": "no-store"})
        response.set_cookie(COOKIE, sid, max_age=int(dash.sessions.ttl), httponly=True, samesite="strict",
                            secure=dash.tls or request.url.scheme == "https", path="/")
        return response

    @router.post("/logout")
    async def logout(request: Request):
        if not await site.csrf_ok(request):
            return Response("missing or wrong CSRF token", status_code=403)
        dash.sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return router


# Fleet and Queue: the rows are read again only when the record's mark moved; what changes with
# time alone (ages, a device going offline) is worked out from the kept rows


def fleet_router(site: Site) -> APIRouter:
    """The Fleet page, its fragment, and revoking a device."""
    router = APIRouter()
    dash = site.dash
    rows_kept = Snapshot(views.fleet_rows)
    offline_after = dash.settings.offline_after

    async def fleet_tag(request: Request) -> tuple[str, list[dict[str, Any]], float]:
        version, rows = await rows_kept.get(await dash.mark(), site.read)
        now = time.time()
        return _etag("fleet", version, views.online(rows, offline_after, now), _csrf(request)), rows, now

    @router.get("/")
    async def fleet_page(request: Request):
        tag, rows, now = await fleet_tag(request)
        return site.page(request, "fleet.html", "/", etag=tag, **views.fleet(rows, offline_after, now))

    @router.get("/fragments/fleet")
    async def fleet_fragment(request: Request):
        tag, rows, now = await fleet_tag(request)
        return site.fragment(request, "_fleet.html", tag,
                             lambda: {"csrf": _csrf(request), **views.fleet(rows, offline_after, now)})

    @router.post("/devices/{device}/revoke")
    async def revoke(request: Request, device: Annotated[str, PathParam(pattern=NAME_PATTERN)]):
        if not await site.csrf_ok(request):
            return Response("missing or wrong CSRF token; reload the page", status_code=403)
        try:
            out = await dash.write(storage.credentials.revoke, device)
        except RecordRefused as exc:
            return _back("/", exc.message)
        dash.forget()
        if out["released"]:
            dash.notify()
        log.warning("device %s revoked from the dashboard; released jobs %s", device, out["released"])
        return _back("/", f"device {device} revoked")

    return router


def queue_router(site: Site) -> APIRouter:
    """The Queue page, its fragment, and cancelling a job."""
    router = APIRouter()
    dash = site.dash
    rows_kept = Snapshot(views.queue_rows, views.queue_mark)

    async def queue_tag(request: Request) -> tuple[str, list[dict[str, Any]]]:
        version, rows = await rows_kept.get(await dash.mark(), site.read)
        return _etag("queue", version, _csrf(request)), rows

    @router.get("/queue")
    async def queue_page(request: Request):
        tag, rows = await queue_tag(request)
        return site.page(request, "queue.html", "/queue", etag=tag, **views.queue(rows, time.time()))

    @router.get("/fragments/queue")
    async def queue_fragment(request: Request):
        tag, rows = await queue_tag(request)
        return site.fragment(request, "_queue.html", tag,
                             lambda: {"csrf": _csrf(request), **views.queue(rows, time.time())})

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: Annotated[int, PathParam(ge=1, le=2**62)]):
        if not await site.csrf_ok(request):
            return Response("missing or wrong CSRF token; reload the page", status_code=403)
        try:
            await dash.write(storage.jobs.cancel_job, job_id)
        except RecordRefused as exc:
            return _back("/queue", exc.message)
        dash.notify()
        log.warning("job %d cancelled from the dashboard", job_id)
        return _back("/queue", f"job {job_id} cancelled")

    return router


Pick = Annotated[int | None, Query(ge=1, le=2**62)]
Sha = Annotated[str | None, Query(pattern=SHA256_PATTERN)]
Version = Annotated[str, Query(max_length=64)]
Study = Annotated[str | None, Query(max_length=256)]


def results_router(site: Site) -> APIRouter:
    """The Results page, its fragment and its two charts."""
    router = APIRouter()
    dash = site.dash
    mark_kept = Snapshot(None, storage.reads.results_mark)  # the Results page and its charts
    rows_cache = charts.ChartCache(8)  # the Results page's rows, per mark of the record

    async def results_doc(a, b, artifact) -> tuple[str, str, dict[str, Any]]:
        # the rows of edgec report pair results with their baselines: computed once per mark
        # of the record, not once per poll of every open browser
        mark, _ = await mark_kept.get(await dash.mark(), site.read)
        key = ("results", mark, a, b, artifact)
        doc = rows_cache.get(key)
        if doc is None:
            doc = await site.read(views.results, a, b, artifact)
            rows_cache.put(key, doc)
        shown = site.throttle.version(str(mark))
        return _etag("results", mark, shown, _query(a, b, artifact)), shown, doc

    @router.get("/results")
    async def results_page(request: Request, a: Pick = None, b: Pick = None, artifact: Sha = None):
        tag, shown, doc = await results_doc(a, b, artifact)
        return site.page(request, "results.html", "/results", query=_query(a, b, artifact), etag=tag,
                         chart_version=shown, **doc)

    @router.get("/fragments/results")
    async def results_fragment(request: Request, a: Pick = None, b: Pick = None, artifact: Sha = None):
        tag, shown, doc = await results_doc(a, b, artifact)
        return site.fragment(request, "_results.html", tag,
                             lambda: {"query": _query(a, b, artifact), "chart_version": shown, **doc})

    async def chart(key, reader, draw) -> Response:
        throttle = site.throttle
        version = throttle.shown or throttle.version(str((await mark_kept.get(await dash.mark(), site.read))[0]))
        data = site.charts.get((*key, version))
        if data is None:
            rows = await site.read(reader)
            data, took = await anyio.to_thread.run_sync(_timed, draw, rows)
            throttle.drew(took)
            site.charts.put((*key, version), data)
        return charts.response(data)

    @router.get("/charts/report.svg")
    async def report_chart(v: Version = ""):
        return await chart(("report", None), views.latest, charts.report_svg)

    @router.get("/charts/history.svg")
    async def history_chart(v: Version = ""):
        return await chart(("history", None), views.history, charts.history_svg)

    return router


def search_router(site: Site) -> APIRouter:
    """The Search page, its fragment and its front chart."""
    router = APIRouter()
    found_kept = SearchReads(site.dash.search_storage)

    async def search_doc(study: str | None) -> tuple[str, dict[str, Any]]:
        doc = await found_kept.get(study)
        return _etag("search", doc["configured"], doc["problem"], doc["studies"], doc.get("version"),
                     doc["study_query"]), doc

    @router.get("/search")
    async def search_page(request: Request, study: Study = None):
        tag, doc = await search_doc(study)
        return site.page(request, "search.html", "/search", etag=tag, **doc)

    @router.get("/fragments/search")
    async def search_fragment(request: Request, study: Study = None):
        tag, doc = await search_doc(study)
        return site.fragment(request, "_search.html", tag, lambda: doc)

    @router.get("/charts/search.svg")
    async def search_chart(study: Study = None, v: Version = ""):
        _, found = await search_doc(study)
        if found["doc"] is None:
            return Response("no study", status_code=404)
        key = ("search", found["doc"]["study"], found["version"])
        data = site.charts.get(key)
        if data is None:
            data = await anyio.to_thread.run_sync(charts.search_svg, found["doc"])
            site.charts.put(key, data)
        return charts.response(data)

    return router


class SearchReads:
    """What the Search page shows of the ``--search-storage``, read again only when a poll comes
    and what the last read of that study took (CPU time of its thread) is at most
    :data:`SEARCH_SHARE` of the time since, and never more often than the page polls: an Optuna
    storage has no cheap mark of a change, and its studies are read whole.

    Args:
        storage: the storage's URL or path (None: the page says how to give one).
    """

    def __init__(self, storage: str | None, share: float = SEARCH_SHARE, clock=time.monotonic):
        self.storage = storage
        self.share = share
        self.clock = clock
        self._opened = None
        self._kept: dict[str | None, tuple[float, float, dict[str, Any]]] = {}  # study: (at, CPU s, doc)

    async def get(self, study: str | None) -> dict[str, Any]:
        if not self.storage:
            return {"configured": False, "problem": None, "studies": [], "doc": None, "study_query": ""}
        now = self.clock()
        kept = self._kept.get(study)
        if kept is not None and now - kept[0] < max(REFRESH_S["search"] * 0.9, kept[1] / self.share):
            return kept[2]
        doc, took = await anyio.to_thread.run_sync(self._read, study)
        if len(self._kept) > FRAGMENTS_KEPT:
            self._kept.clear()
        self._kept[study] = (now, took, doc)
        return doc

    def _read(self, study: str | None) -> tuple[dict[str, Any], float]:
        started = time.thread_time()
        try:
            if self._opened is None:
                self._opened = views.open_search(self.storage)
            found = views.search(self._opened, study)
        except Exception as exc:  # noqa: BLE001 - a storage that fails is shown, the page still answers
            from edgec.errors import EdgecError

            problem = str(exc) if isinstance(exc, EdgecError) else f"{type(exc).__name__}: {exc}"
            return ({"configured": True, "problem": problem, "studies": [], "doc": None, "study_query": ""},
                    time.thread_time() - started)
        doc = found["doc"]
        query = urllib.parse.urlencode({"study": doc["study"]}) if doc else ""
        return ({"configured": True, "problem": None, **found, "study_query": query,
                 "version": _search_version(doc)}, time.thread_time() - started)


class Snapshot:
    """What one page shows of the record, read again only when it may have changed: nothing is
    read while the record's mark (:meth:`Dashboard.mark`) stays; when it moved, ``probe`` (a
    cheap query of what the page shows) is read, and the rows only when that moved too. The
    marks are taken before the rows are read, so a change committed in between moves the next
    mark and the rows are read again then.

    Args:
        reader: the rows (a function of a connection), or None for the probe alone.
        probe: a function of a connection; None: the record's mark is the page's.
    """

    def __init__(self, reader, probe=None):
        self.reader = reader
        self.probe = probe
        self.mark: str | None = None  # the record's
        self.version: Any = None  # the page's: the probe's, else the record's mark
        self.rows: Any = None

    async def get(self, mark: str, read) -> tuple[Any, Any]:
        """(the page's version, its rows)."""
        if mark != self.mark:
            if self.probe is None:
                version, rows = mark, await read(self.reader)
            else:
                version, rows = await read(_refresh, self.probe, self.reader, self.version)
                if rows is None:
                    rows = self.rows
            self.mark, self.version, self.rows = mark, version, rows
        return self.version, self.rows


def _refresh(conn, probe, reader, known):
    version = probe(conn)
    if version == known or reader is None:
        return version, None
    return version, reader(conn)


def _csrf(request: Request) -> str:
    return request.scope["edgec.session"].csrf


def _etag(*parts: Any) -> str:
    """The ETag of a fragment: of everything it was made from (the CSRF token of the session is
    in its forms, so one session's fragment is never another's)."""
    return '"' + hashlib.sha256(repr(parts).encode()).hexdigest()[:24] + '"'


def _timed(draw, rows) -> tuple[bytes, float]:
    """A chart and the CPU time its thread took to draw it (not the one-time import of
    matplotlib's modules, which would hold the charts back far longer than drawing does)."""
    import matplotlib.backends.backend_svg  # noqa: F401
    import matplotlib.dates  # noqa: F401
    import matplotlib.figure  # noqa: F401

    started = time.thread_time()
    data = draw(rows)
    return data, time.thread_time() - started


def _query(a: int | None, b: int | None, artifact: str | None = None) -> str:
    return urllib.parse.urlencode({k: v for k, v in (("a", a), ("b", b), ("artifact", artifact)) if v})


def _search_version(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return "0"
    return f"{len(doc['trials'])}-{doc['counts'].get('finished', 0)}-{len(doc['front'])}"
