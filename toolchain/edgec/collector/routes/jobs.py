"""``/v1/jobs``: measurements queued, listed, waited for, cancelled, and an agent's failure."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from edgec.agent.vocab import JOB_STATES, JOB_TERMINAL_STATES
from edgec.collector import API, storage
from edgec.collector.bodies import StrictRoute
from edgec.collector.guard import as_device
from edgec.collector.loop import wait_change
from edgec.collector.messages import Failure, JobCreate
from edgec.collector.routes.shared import CONFLICT, NOT_FOUND, JobId, Shared

router = APIRouter(route_class=StrictRoute)


@router.post(API + "/jobs", tags=["jobs"], status_code=201, responses=CONFLICT)
async def create_job(body: JobCreate, c: Shared) -> dict[str, Any]:
    """Queue a measurement of uploaded files on a device of a profile, or on one device."""
    spec = body.model_dump()
    # the documents as they were sent (no defaults filled in)
    spec["manifest"] = body.manifest.model_dump(exclude_unset=True)
    spec["artifact"] = body.artifact.model_dump(exclude_unset=True)
    # a file the record knows but whose bytes are gone would fail every attempt
    missing = [name for name, sha in body.files.items() if not c.settings.blobs.has(sha)]
    doc = await c.write(storage.jobs.create_job, spec, c.settings.lease_seconds, missing)
    c.notify()
    return doc


@router.get(API + "/jobs", tags=["jobs"])
async def list_jobs(c: Shared, state: Literal[JOB_STATES] | None = None,
                    limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
    """The latest jobs, newest first."""
    return {"jobs": await c.read(storage.reads.list_jobs, state, limit)}


@router.get(API + "/jobs/{job_id}", tags=["jobs"], responses=NOT_FOUND)
async def get_job(job_id: JobId, request: Request, c: Shared,
                  wait: Annotated[float, Query(ge=0, le=60, allow_inf_nan=False)] = 0) -> dict[str, Any]:
    """One job with its attempts; with ``wait``, answers once it is finished or the time is up."""
    deadline = time.monotonic() + min(wait, c.settings.max_poll)
    while True:
        event = c.changes.snapshot()
        doc = await c.read(storage.reads.job_doc, job_id)
        if doc is None:
            raise HTTPException(404, f"no job {job_id}")
        remaining = deadline - time.monotonic()
        if doc["state"] in JOB_TERMINAL_STATES or remaining <= 0:
            return doc
        if await wait_change(request, event, min(remaining, 5.0)):
            return Response(status_code=204)  # the client is gone; nobody reads this


@router.post(API + "/jobs/{job_id}/cancel", tags=["jobs"], responses={**NOT_FOUND, **CONFLICT})
async def cancel_job(job_id: JobId, c: Shared) -> dict[str, Any]:
    """Cancel a queued or running job (a result that arrives later is not stored)."""
    doc = await c.write(storage.jobs.cancel_job, job_id)
    c.notify()
    return doc


@router.post(API + "/jobs/{job_id}/failure", tags=["agents"], responses={**NOT_FOUND, **CONFLICT})
async def job_failure(job_id: JobId, body: Failure, request: Request, c: Shared) -> dict[str, Any]:
    """An agent could not run its job: re-queued (retry, attempts left) or failed."""
    as_device(request, body.device)
    doc = await c.write(storage.jobs.fail_job, job_id, body.lease_id, body.device, body.error, body.retry,
                        body.instance)
    c.notify()
    return doc
