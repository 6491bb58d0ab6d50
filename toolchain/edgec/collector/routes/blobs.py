"""``/v1/blobs/{sha256}``: artifacts uploaded, checked and served by their sha256."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import hashlib
import logging
import os

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from edgec.collector import API, storage
from edgec.collector.bodies import StrictRoute
from edgec.collector.messages import BlobStored
from edgec.collector.routes.shared import NOT_FOUND, Collector, Sha, Shared
from edgec.collector.storage.errors import RecordRefused

log = logging.getLogger(__name__)

router = APIRouter(route_class=StrictRoute)


def unwritable(c: Collector, exc: OSError) -> HTTPException:
    """The 503 of a blobs directory that cannot be written (logged on the server too)."""
    log.error("cannot write the blobs directory %s: %s", c.settings.blobs.root, exc)
    return HTTPException(503, f"the collector cannot write its blobs directory ({exc.strerror or exc}); "
                              "free space or fix its permissions on the collector's host")


@router.put(API + "/blobs/{sha256}", tags=["artifacts"], status_code=201, response_model=BlobStored,
            responses={200: {"model": BlobStored, "description": "already stored"}},
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_blob(sha256: Sha, request: Request, c: Shared):
    """Upload a file; stored under its sha256, which the body must have."""
    blobs = c.settings.blobs
    size = await c.read(storage.blobs.blob_size, sha256)
    if size is not None and blobs.has(sha256):
        return JSONResponse({"sha256": sha256, "bytes": size, "created": False}, status_code=200)
    try:
        temp, fd = blobs.open_temp()
    except OSError as exc:
        raise unwritable(c, exc) from exc
    digest = hashlib.sha256()
    n = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                digest.update(chunk)
                fh.write(chunk)
                n += len(chunk)
            fh.flush()
            await anyio.to_thread.run_sync(os.fsync, fh.fileno())
        got = digest.hexdigest()
        if n == 0:
            raise RecordRefused(422, "empty body: upload the file's bytes (application/octet-stream)")
        if got != sha256:
            raise RecordRefused(422, f"the body has sha256 {got}, not {sha256} as the URL says; the upload "
                                     "is incomplete or the URL names another file")
        await anyio.to_thread.run_sync(blobs.commit, temp, sha256)
    except OSError as exc:
        raise unwritable(c, exc) from exc
    finally:
        temp.unlink(missing_ok=True)
    created = await c.write(storage.blobs.add_blob, sha256, n)
    return JSONResponse({"sha256": sha256, "bytes": n, "created": created}, status_code=201 if created else 200)


async def blob_file(c: Collector, sha256: str) -> FileResponse:
    """The stored file (404 when the record or the directory lacks it)."""
    size = await c.read(storage.blobs.blob_size, sha256)
    path = c.settings.blobs.path(sha256)
    if size is None or not path.is_file():
        raise HTTPException(404, f"no file with sha256 {sha256}; upload it first")
    return FileResponse(path, media_type="application/octet-stream", headers={"x-content-sha256": sha256})


@router.get(API + "/blobs/{sha256}", tags=["artifacts"], response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}, **NOT_FOUND})
async def get_blob(sha256: Sha, c: Shared):
    """Download a file by sha256 (agents verify the bytes before running them)."""
    return await blob_file(c, sha256)


@router.head(API + "/blobs/{sha256}", tags=["artifacts"], response_class=Response, responses=NOT_FOUND)
async def has_blob(sha256: Sha, c: Shared):
    """Whether the collector has a file (200) or not (404)."""
    return await blob_file(c, sha256)
