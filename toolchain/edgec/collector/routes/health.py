"""``/v1/health``: liveness, versions, the server's time and the state of the database."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from edgec.agent import schema as report_schema
from edgec.collector import API, storage
from edgec.collector.bodies import StrictRoute
from edgec.collector.routes.shared import Shared
from edgec.collector.storage.errors import StoreFailed
from edgec.version import __version__

router = APIRouter(route_class=StrictRoute)


@router.get(API + "/health", tags=["server"], responses={503: {"description": "the database fails"}})
async def health(c: Shared) -> dict[str, Any]:
    """Liveness, versions, the time on the server and the state of the database (503 when it fails)."""
    store = c.store
    doc = {"status": "ok", "version": __version__, "report_schema": report_schema.SCHEMA_VERSION,
           "time": time.time(), "database": {"backend": store.dialect}}
    try:
        doc["database"].update(await c.read(storage.reads.probe), state="ok")
    except StoreFailed:
        doc["database"]["pool"] = store.pool.stats()
        doc["status"] = "failing"
        doc["database"].update(state="failing", error=store.last_error)
        return JSONResponse(doc, status_code=503)
    doc["database"]["pool"] = store.pool.stats()  # read after the probe has given its connection back
    if store.last_error:
        doc["database"]["last_error"] = store.last_error
    return doc
