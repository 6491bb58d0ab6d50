"""The collector's ASGI application: one :class:`~.shared.Collector` (the shared state), the
resource routers, the error answers, the lifespan (blobs directory, lease renewal after a restart,
notifications from other collectors, the reaper), the dashboard beside the API and the
:class:`~edgec.collector.guard.Guard` around it."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import asyncio
import contextlib
import functools
import logging
import threading
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edgec.collector import API, storage
from edgec.collector.bodies import StrictRoute, validation_detail
from edgec.collector.dashboard import Dashboard
from edgec.collector.guard import Guard
from edgec.collector.loop import Changes
from edgec.collector.routes import blobs, devices, health, jobs, leases, results
from edgec.collector.routes.reaper import reaper
from edgec.collector.routes.shared import ERRORS, Collector
from edgec.collector.server import ServerSettings
from edgec.collector.storage.errors import RecordRefused, StoreFailed
from edgec.collector.storage.store import Store
from edgec.version import __version__

log = logging.getLogger(__name__)

DESCRIPTION = ("Devices, jobs (leased to one agent at a time), artifacts by sha256 and results of the edgec "
               "device fleet. Every request needs 'Authorization: Bearer TOKEN': the admin token, or a "
               "device's own credential for the agent's routes.")
#: the routers in the order of the API's document; the agents' frequent calls are tried first
ROUTERS = (health.router, blobs.router, jobs.router, devices.router, leases.router, results.router)
HOT = (leases.router, results.router)


def create_app(store: Store, settings: ServerSettings, search_storage: str | None = None):
    """The collector as an ASGI application: :class:`Guard` around the FastAPI app, the dashboard
    (:mod:`edgec.collector.dashboard`) beside it."""
    c = Collector(store, settings, search_storage)
    app = FastAPI(title="edgec collector", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description=DESCRIPTION, responses=ERRORS)
    app.state.collector = c
    app.router.route_class = StrictRoute
    app.openapi = functools.partial(openapi, app)
    app.add_exception_handler(RecordRefused, refused)
    app.add_exception_handler(StoreFailed, store_failed)
    app.add_exception_handler(RequestValidationError, invalid)
    for router in ROUTERS:
        app.include_router(router)
    dashboard = Dashboard(settings, c.read, c.write, notify=c.notify, forget=c.credentials.forget,
                          search_storage=search_storage, store=store)
    app.include_router(dashboard.api_router())
    # Routes are tried in order: the agents' frequent calls first.
    app.router.routes.sort(key=lambda route: getattr(route, "original_router", None) not in HOT)
    fast = {("POST", API + "/results"): functools.partial(results.fast_post_result, c)}
    return dashboard.wrap(Guard(app, settings.token, settings.max_body, settings.max_upload, c.credentials,
                                fast=fast))


def openapi(app: FastAPI) -> dict[str, Any]:
    """The API's document, with the bearer scheme the guard checks before any route (no
    per-request dependency needed for that)."""
    if app.openapi_schema is None:
        doc = FastAPI.openapi(app)
        doc.setdefault("components", {})["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "the admin token of 'edgec serve', or a device credential for the agent's routes"}}
        doc["security"] = [{"bearer": []}]
    return app.openapi_schema


async def refused(request: Request, exc: RecordRefused):
    return JSONResponse({"detail": exc.message}, status_code=exc.status)


async def store_failed(request: Request, exc: StoreFailed):
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def invalid(request: Request, exc: RequestValidationError):
    detail = validation_detail(exc)
    if detail and detail[0]["type"] == "json_invalid":  # the body is not JSON the record can keep
        return JSONResponse({"detail": "invalid JSON body: " + detail[0]["msg"].removeprefix(
            "JSON decode error: ")}, status_code=422)
    return JSONResponse({"detail": detail}, status_code=422)


def prepare_blobs(settings: ServerSettings) -> None:
    """Create the blobs directory (uploads are refused when it cannot be) and remove the partial
    uploads an earlier run left."""
    try:
        settings.blobs.prepare()
    except OSError as exc:
        log.error("cannot create the blobs directory %s: %s; uploads will be refused", settings.blobs.root,
                  exc.strerror or exc)
    removed = settings.blobs.clean()
    if removed:
        log.warning("removed %d partial upload(s) left by an earlier run", removed)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    """Start: blobs directory, leases renewed (SQLite), notifications, reaper. Stop: the record closed."""
    c: Collector = app.state.collector
    store = c.store
    prepare_blobs(c.settings)
    c.changes = Changes()
    if store.dialect == "sqlite":
        renewed = await c.write(storage.jobs.renew_after_restart)
        if renewed:
            log.warning("%d job(s) were leased when the collector stopped: each lease runs again from now", renewed)
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    # another collector stored a result ("done"): nothing to lease, only waiters on jobs are woken
    store.listen(lambda payload: loop.call_soon_threadsafe(
        c.changes.notify_finished if payload == "done" else c.changes.notify), stop)
    task = asyncio.create_task(reaper(c))
    yield
    task.cancel()
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # uvicorn re-raises SIGTERM/SIGINT once it has stopped: the record is closed here, where
    # the SQLite WAL is checkpointed into the database file.
    if c.async_results is not None:
        await c.async_results.close()
    await anyio.to_thread.run_sync(store.close)
