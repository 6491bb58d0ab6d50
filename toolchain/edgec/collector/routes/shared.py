"""What every route of the collector shares: the :class:`Collector` (the record, the settings, the
long polls' wake-ups, the credential cache), the dependency that hands it to a route, the path
parameters and the documented error answers."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi import Path as PathParam

from edgec.collector.guard import Credentials
from edgec.collector.loop import Changes, LoopWriter
from edgec.collector.messages import NAME_PATTERN, SHA256_PATTERN, Problem
from edgec.collector.server import ServerSettings
from edgec.collector.storage.results import AsyncResults
from edgec.collector.storage.store import Store


class Collector:
    """The state of one collector application, shared by its routes (``app.state.collector``).

    Args:
        store: the open record.
        settings: the server's settings.
        search_storage: an Optuna storage URL whose studies the dashboard shows.
    """

    def __init__(self, store: Store, settings: ServerSettings, search_storage: str | None = None):
        self.store = store
        self.settings = settings
        self.search_storage = search_storage
        # SQLite: the changes of one turn of the loop in one transaction; PostgreSQL: results
        # stored from the loop on asynchronous connections
        self.batcher = LoopWriter(store) if store.dialect == "sqlite" else None
        self.async_results = AsyncResults(store) if store.dialect == "postgresql" else None
        self.credentials = Credentials(self.read)
        self.changes: Changes | None = None  # made on the application's event loop (lifespan)

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` as a change of the record; answers once it is committed."""
        if self.batcher is not None:
            return await self.batcher.write(fn, *args)
        return await asyncio.wrap_future(self.store.submit(fn, *args))

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` on a pooled read connection, off the event loop."""
        return await anyio.to_thread.run_sync(self.store.read, fn, *args)

    def notify(self) -> None:
        """Jobs changed: wake the long polls (leases and waits on a job's end)."""
        self.changes.notify()


async def collector(request: Request) -> Collector:
    """The application's :class:`Collector` (a FastAPI dependency; a coroutine, so that it runs on
    the event loop and not in a worker thread)."""
    return request.app.state.collector


Shared = Annotated[Collector, Depends(collector)]
DeviceId = Annotated[str, PathParam(pattern=NAME_PATTERN, description="device id")]
JobId = Annotated[int, PathParam(ge=1, le=2**62)]
Sha = Annotated[str, PathParam(pattern=SHA256_PATTERN)]

ERRORS = {400: {"model": Problem, "description": "the body cannot be read (not UTF-8 JSON text)"},
          401: {"model": Problem, "description": "missing, wrong or revoked bearer token"},
          403: {"model": Problem, "description": "a device credential, for another device or an admin route"},
          413: {"model": Problem, "description": "body larger than the collector accepts"},
          422: {"model": Problem, "description": "the body or a parameter does not validate"},
          503: {"model": Problem, "description": "the collector's database or blob directory failed"}}
NOT_FOUND = {404: {"model": Problem, "description": "no such object"}}
CONFLICT = {409: {"model": Problem, "description": "conflicts with the record"}}
