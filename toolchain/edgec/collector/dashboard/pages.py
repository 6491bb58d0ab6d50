"""The dashboard's routes: pages (Fleet, Queue, Results, Search), the fragments their script
polls, the charts, the sign-in link, and the two actions (cancel a job, revoke a device).

The session was checked before any of these runs (:class:`edgec.collector.dashboard.Dashboard`);
the actions also need the session's CSRF token. Templates escape everything they show.
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import logging
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from edgec.collector import storage
from edgec.collector.dashboard import PAGE_PATHS, charts, views
from edgec.collector.dashboard.sessions import COOKIE, SESSION_TTL
from edgec.collector.messages import NAME_PATTERN, SHA256_PATTERN
from edgec.collector.storage.errors import RecordRefused, StoreFailed

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PAGES = tuple(zip(PAGE_PATHS, ("Fleet", "Queue", "Results", "Search"), strict=True))
REFRESH_S = {"fleet": 2, "queue": 2, "results": 3, "search": 10}
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
    """The dashboard application of :class:`~edgec.collector.dashboard.Dashboard` ``dash``."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    cache = charts.ChartCache()
    rows_cache = charts.ChartCache(8)  # the Results page's rows, per version of the record
    throttle = charts.Throttle()
    search_state: dict[str, Any] = {}

    async def read(fn, *args):
        return await dash.read(fn, *args)

    def page(request: Request, name: str, active: str, **context: Any) -> HTMLResponse:
        session = request.scope["edgec.session"]
        html = render(name, active=active, csrf=session.csrf, note=request.query_params.get("note"),
                      refresh=REFRESH_S, **context)
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    def fragment(name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(render(name, **context), headers={"cache-control": "no-store"})

    @app.exception_handler(StoreFailed)
    async def store_failed(request: Request, exc: StoreFailed):
        return HTMLResponse(render("problem.html", active=None, problem=f"the collector's database fails: {exc}"),
                            status_code=503)

    async def csrf_ok(request: Request) -> bool:
        # the forms are application/x-www-form-urlencoded with one field, read here without a
        # multipart parser; the body was capped before it got here
        try:
            form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=8)
        except ValueError:
            return False
        return dash.sessions.csrf_ok(request.scope["edgec.session"], (form.get("csrf") or [""])[0])

    # ------------------------------------------------------------------ sign-in

    @app.get("/login")
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
        response.set_cookie(COOKIE, sid, max_age=int(SESSION_TTL), httponly=True, samesite="strict",
                            secure=dash.tls or request.url.scheme == "https", path="/")
        return response

    @app.post("/logout")
    async def logout(request: Request):
        if not await csrf_ok(request):
            return Response("missing or wrong CSRF token", status_code=403)
        dash.sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------------ pages and fragments

    @app.get("/")
    async def fleet_page(request: Request):
        return page(request, "fleet.html", "/", **await read(views.fleet, dash.settings.offline_after))

    @app.get("/fragments/fleet")
    async def fleet_fragment(request: Request):
        return fragment("_fleet.html", csrf=request.scope["edgec.session"].csrf,
                        **await read(views.fleet, dash.settings.offline_after))

    @app.get("/queue")
    async def queue_page(request: Request):
        return page(request, "queue.html", "/queue", **await read(views.queue))

    @app.get("/fragments/queue")
    async def queue_fragment(request: Request):
        return fragment("_queue.html", csrf=request.scope["edgec.session"].csrf, **await read(views.queue))

    Pick = Annotated[int | None, Query(ge=1, le=2**62)]

    Sha = Annotated[str | None, Query(pattern=SHA256_PATTERN)]

    async def results_doc(a, b, artifact) -> dict[str, Any]:
        # the rows of edgec report pair results with their baselines: computed once per version
        # of the record, not once per poll of every open browser
        version = await read(views.version)
        key = ("results", version, a, b, artifact)
        doc = rows_cache.get(key)
        if doc is None:
            doc = await read(views.results, a, b, artifact)
            rows_cache.put(key, doc)
        return doc

    @app.get("/results")
    async def results_page(request: Request, a: Pick = None, b: Pick = None, artifact: Sha = None):
        doc = await results_doc(a, b, artifact)
        return page(request, "results.html", "/results", query=_query(a, b, artifact),
                    chart_version=throttle.version(doc["version"]), **doc)

    @app.get("/fragments/results")
    async def results_fragment(a: Pick = None, b: Pick = None, artifact: Sha = None):
        doc = await results_doc(a, b, artifact)
        return fragment("_results.html", query=_query(a, b, artifact), chart_version=throttle.version(doc["version"]),
                        **doc)

    @app.get("/search")
    async def search_page(request: Request, study: Annotated[str | None, Query(max_length=256)] = None):
        return page(request, "search.html", "/search", **await search_doc(study))

    @app.get("/fragments/search")
    async def search_fragment(study: Annotated[str | None, Query(max_length=256)] = None):
        return fragment("_search.html", **await search_doc(study))

    async def search_doc(study: str | None) -> dict[str, Any]:
        if not dash.search_storage:
            return {"configured": False, "problem": None, "studies": [], "doc": None, "study_query": ""}
        try:
            if "storage" not in search_state:
                search_state["storage"] = await anyio.to_thread.run_sync(views.open_search, dash.search_storage)
            found = await anyio.to_thread.run_sync(views.search, search_state["storage"], study)
        except Exception as exc:  # noqa: BLE001 - a storage that fails is shown, the page still answers
            from edgec.errors import EdgecError

            problem = str(exc) if isinstance(exc, EdgecError) else f"{type(exc).__name__}: {exc}"
            return {"configured": True, "problem": problem, "studies": [], "doc": None, "study_query": ""}
        doc = found["doc"]
        query = urllib.parse.urlencode({"study": doc["study"]}) if doc else ""
        return {"configured": True, "problem": None, **found, "study_query": query,
                "version": _search_version(doc)}

    # ------------------------------------------------------------------ charts

    @app.get("/charts/report.svg")
    async def report_chart(v: Annotated[str, Query(max_length=64)] = ""):
        return await chart(("report", None), views.latest, charts.report_svg)

    @app.get("/charts/history.svg")
    async def history_chart(v: Annotated[str, Query(max_length=64)] = ""):
        return await chart(("history", None), views.history, charts.history_svg)

    async def chart(key, reader, draw) -> Response:
        version = throttle.shown or throttle.version(await read(views.version))
        data = cache.get((*key, version))
        if data is None:
            rows = await read(reader)
            data, took = await anyio.to_thread.run_sync(_timed, draw, rows)
            throttle.drew(took)
            cache.put((*key, version), data)
        return charts.response(data)

    @app.get("/charts/search.svg")
    async def search_chart(study: Annotated[str | None, Query(max_length=256)] = None,
                           v: Annotated[str, Query(max_length=64)] = ""):
        found = await search_doc(study)
        if found["doc"] is None:
            return Response("no study", status_code=404)
        key = ("search", found["doc"]["study"], found["version"])
        data = cache.get(key)
        if data is None:
            data = await anyio.to_thread.run_sync(charts.search_svg, found["doc"])
            cache.put(key, data)
        return charts.response(data)

    # ------------------------------------------------------------------ actions

    def back(where: str, note: str) -> RedirectResponse:
        return RedirectResponse(f"{where}?{urllib.parse.urlencode({'note': note})}", status_code=303)

    @app.post("/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: Annotated[int, PathParam(ge=1, le=2**62)],
                     ):
        if not await csrf_ok(request):
            return Response("missing or wrong CSRF token; reload the page", status_code=403)
        try:
            await dash.write(storage.jobs.cancel_job, job_id)
        except RecordRefused as exc:
            return back("/queue", exc.message)
        dash.notify()
        log.warning("job %d cancelled from the dashboard", job_id)
        return back("/queue", f"job {job_id} cancelled")

    @app.post("/devices/{device}/revoke")
    async def revoke(request: Request, device: Annotated[str, PathParam(pattern=NAME_PATTERN)],
                     ):
        if not await csrf_ok(request):
            return Response("missing or wrong CSRF token; reload the page", status_code=403)
        try:
            out = await dash.write(storage.credentials.revoke, device)
        except RecordRefused as exc:
            return back("/", exc.message)
        dash.forget()
        if out["released"]:
            dash.notify()
        log.warning("device %s revoked from the dashboard; released jobs %s", device, out["released"])
        return back("/", f"device {device} revoked")

    return app


def _timed(draw, rows) -> tuple[bytes, float]:
    """A chart and the CPU time its thread took to draw it."""
    started = time.thread_time()
    data = draw(rows)
    return data, time.thread_time() - started


def _query(a: int | None, b: int | None, artifact: str | None = None) -> str:
    return urllib.parse.urlencode({k: v for k, v in (("a", a), ("b", b), ("artifact", artifact)) if v})


def _search_version(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return "0"
    return f"{len(doc['trials'])}-{doc['counts'].get('finished', 0)}-{len(doc['front'])}"
