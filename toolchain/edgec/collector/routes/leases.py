"""The agents' loop on their device: the long poll that leases a job, and the heartbeat that
renews the leases held (the collector's most frequent calls after results)."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from edgec.collector import API, storage
from edgec.collector.bodies import StrictRoute
from edgec.collector.guard import as_device
from edgec.collector.loop import wait_change
from edgec.collector.messages import Heartbeat, HeartbeatAnswer, LeaseGranted, LeaseRequest
from edgec.collector.routes.shared import CONFLICT, NOT_FOUND, DeviceId, Shared

router = APIRouter(route_class=StrictRoute)


@router.post(API + "/devices/{device}/lease", tags=["agents"],
             responses={200: {"model": LeaseGranted}, 204: {"description": "no job within the wait"},
                        **NOT_FOUND, **CONFLICT})
async def lease(device: DeviceId, body: LeaseRequest, request: Request, c: Shared):
    """Long poll: the oldest queued job this device can run, leased to it."""
    as_device(request, device)
    deadline = time.monotonic() + min(body.wait, c.settings.max_poll)
    while True:
        event = c.changes.snapshot_queue()
        granted = await c.write(storage.jobs.lease, device, body.instance)
        if granted:
            return granted
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Response(status_code=204)
        if await wait_change(request, event, min(remaining, 5.0)):
            return Response(status_code=204)  # the agent is gone: lease nothing to it


@router.post(API + "/devices/{device}/heartbeat", tags=["agents"], response_model=HeartbeatAnswer,
             responses={**NOT_FOUND, **CONFLICT})
async def heartbeat(device: DeviceId, body: Heartbeat, request: Request, c: Shared) -> dict[str, Any]:
    """The agent is alive: renews the leases it still holds, says which ones it lost."""
    as_device(request, device)
    return await c.write(storage.jobs.heartbeat, device, body.instance, body.leases)
