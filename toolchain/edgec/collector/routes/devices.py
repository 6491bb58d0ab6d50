"""``/v1/devices`` and ``/v1/enroll``: devices registered by their agents, listed, enrolled (a
one-time token traded for the device's own credential) and revoked."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException

from edgec.collector import API, storage
from edgec.collector.bodies import StrictRoute
from edgec.collector.guard import as_device
from edgec.collector.messages import (
    CredentialIssued,
    EnrollmentIssued,
    EnrollRequest,
    Exchange,
    Problem,
    Register,
    Revoked,
)
from edgec.collector.routes.shared import NOT_FOUND, DeviceId, Shared

log = logging.getLogger(__name__)

ENROLL_TTL = 24 * 3600.0

router = APIRouter(route_class=StrictRoute)


@router.post(API + "/devices/register", tags=["agents"], responses={403: {"model": Problem}})
async def register(body: Register, request: Request, c: Shared) -> dict[str, Any]:
    """An agent registers its device; jobs held by a previous instance are released."""
    as_device(request, body.device)
    address = request.client.host if request.client else None
    out = await c.write(storage.jobs.register, body.model_dump(), address)
    if out["released"]:
        log.warning("device %s re-registered: released jobs %s", body.device, out["released"])
        c.notify()
    return {"device": out["device"], "released": [job for job, _ in out["released"]],
            "lease_seconds": c.settings.lease_seconds}


@router.get(API + "/devices", tags=["devices"])
async def list_devices(c: Shared) -> dict[str, Any]:
    """Registered devices: profile, labels, runtimes, power sensor, last seen, jobs held."""
    return {"devices": await c.read(storage.reads.list_devices, c.settings.offline_after)}


@router.post(API + "/devices/{device}/enroll", tags=["devices"], status_code=201,
             response_model=EnrollmentIssued)
async def enroll(device: DeviceId, c: Shared, body: EnrollRequest | None = None) -> dict[str, Any]:
    """A one-time enrollment token for a device: its agent trades it for the device's own credential."""
    expires = body.expires_s if body and body.expires_s is not None else ENROLL_TTL
    return await c.write(storage.credentials.enroll, device, expires)


@router.post(API + "/enroll", tags=["agents"], status_code=201, response_model=CredentialIssued,
             responses={403: {"model": Problem}})
async def exchange(body: Exchange, request: Request, c: Shared) -> dict[str, Any]:
    """An agent trades its enrollment token (the bearer token of this request) for its device's credential."""
    cid = request.scope.get("edgec.credential")
    if cid is None:
        raise HTTPException(403, "send the enrollment token as the bearer token ('edgec devices enroll NAME')")
    out = await c.write(storage.credentials.exchange, cid, body.device)
    c.credentials.forget()
    log.warning("device %s enrolled: it now has its own credential", body.device)
    return out


@router.post(API + "/devices/{device}/revoke", tags=["devices"], response_model=Revoked, responses=NOT_FOUND)
async def revoke(device: DeviceId, c: Shared) -> dict[str, Any]:
    """Cut one device off: its credential stops working and the jobs it holds are re-queued."""
    out = await c.write(storage.credentials.revoke, device)
    c.credentials.forget()
    if out["released"]:
        c.notify()
    log.warning("device %s revoked; released jobs %s", device, out["released"])
    return out
