"""The collector's application: the FastAPI routes of the API (health, artifacts, jobs, devices
and agents, results), the lease reaper, and the :class:`~edgec.collector.guard.Guard` around them.

JSON bodies are parsed strictly (:mod:`edgec.collector.bodies`) and validated by pydantic models
(:mod:`edgec.collector.messages`), agent reports by the one report validator; whatever is refused
gets a 422 that can always be encoded. Changes are committed by the store's writer before the
answer is sent. Agents long-poll for jobs; a reaper re-queues the jobs whose lease expired.
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio
from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from edgec import report
from edgec.agent.vocab import JOB_STATES, JOB_TERMINAL_STATES
from edgec.collector import API, storage
from edgec.collector.bodies import (
    StrictRoute,
    error_list,
    printable,
    strict_json,
    validation_detail,
)
from edgec.collector.dashboard import Dashboard
from edgec.collector.guard import Credentials, Guard, as_device, send_json, too_large_message
from edgec.collector.loop import Changes, LoopWriter, wait_change
from edgec.collector.messages import (
    NAME_PATTERN,
    SHA256_PATTERN,
    BlobStored,
    CredentialIssued,
    EnrollmentIssued,
    EnrollRequest,
    Exchange,
    Failure,
    Heartbeat,
    HeartbeatAnswer,
    JobCreate,
    LeaseGranted,
    LeaseRequest,
    Problem,
    Register,
    ResultPost,
    ResultStored,
    Revoked,
)
from edgec.collector.server import ServerSettings
from edgec.collector.storage.errors import RecordRefused, StoreFailed
from edgec.collector.storage.results import AsyncResults
from edgec.collector.storage.store import Store

log = logging.getLogger(__name__)

ENROLL_TTL = 24 * 3600.0


def create_app(store: Store, settings: ServerSettings, search_storage: str | None = None):
    """The collector as an ASGI application: :class:`Guard` around the FastAPI app, the dashboard
    (:mod:`edgec.collector.dashboard`) beside it."""
    from edgec.agent import schema as report_schema
    from edgec.version import __version__

    changes_holder: dict[str, Changes] = {}

    batcher = LoopWriter(store) if store.dialect == "sqlite" else None
    async_results = AsyncResults(store) if store.dialect == "postgresql" else None

    async def write(fn: Callable[..., Any], *args: Any) -> Any:
        if batcher is not None:
            return await batcher.write(fn, *args)
        return await asyncio.wrap_future(store.submit(fn, *args))

    async def read(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(store.read, fn, *args)

    credentials = Credentials(read)

    def changes() -> Changes:
        return changes_holder["changes"]

    async def reaper() -> None:
        while True:
            await asyncio.sleep(settings.reaper_interval)
            try:
                # on the record's lease clock, never this host's wall clock (it may step)
                until = await read(storage.jobs.next_expiry)
                if until is not None and until < 0:
                    changed = await write(storage.jobs.expire_leases)
                    for job_id, state in changed:
                        log.warning("job %d: lease expired, %s", job_id, "re-queued" if state == "queued" else state)
                    if changed:
                        changes().notify()
            except StoreFailed:
                await asyncio.sleep(5.0)  # reported by /v1/health; no log line every quarter second
            except Exception:  # noqa: BLE001 - the reaper must outlive one bad round
                log.exception("lease reaper")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            settings.blobs.prepare()
        except OSError as exc:
            log.error("cannot create the blobs directory %s: %s; uploads will be refused", settings.blobs.root,
                      exc.strerror or exc)
        removed = settings.blobs.clean()
        if removed:
            log.warning("removed %d partial upload(s) left by an earlier run", removed)
        changes_holder["changes"] = Changes()
        if store.dialect == "sqlite":
            renewed = await write(storage.jobs.renew_after_restart)
            if renewed:
                log.warning("%d job(s) were leased when the collector stopped: each lease runs again from now", renewed)
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        # another collector stored a result ("done"): nothing to lease, only waiters on jobs are woken
        store.listen(lambda payload: loop.call_soon_threadsafe(
            changes().notify_finished if payload == "done" else changes().notify), stop)
        task = asyncio.create_task(reaper())
        yield
        task.cancel()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # uvicorn re-raises SIGTERM/SIGINT once it has stopped: the record is closed here, where
        # the SQLite WAL is checkpointed into the database file.
        if async_results is not None:
            await async_results.close()
        await anyio.to_thread.run_sync(store.close)

    errors = {400: {"model": Problem, "description": "the body cannot be read (not UTF-8 JSON text)"},
              401: {"model": Problem, "description": "missing, wrong or revoked bearer token"},
              403: {"model": Problem, "description": "a device credential, for another device or an admin route"},
              413: {"model": Problem, "description": "body larger than the collector accepts"},
              422: {"model": Problem, "description": "the body or a parameter does not validate"},
              503: {"model": Problem, "description": "the collector's database or blob directory failed"}}
    app = FastAPI(title="edgec collector", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Devices, jobs (leased to one agent at a time), artifacts by sha256 and results of "
                              "the edgec device fleet. Every request needs 'Authorization: Bearer TOKEN': the "
                              "admin token, or a device's own credential for the agent's routes.",
                  responses=errors)
    app.router.route_class = StrictRoute

    def openapi() -> dict[str, Any]:
        # The Guard checks the token before any route; the document states the scheme (no
        # per-request dependency needed for that).
        if app.openapi_schema is None:
            doc = FastAPI.openapi(app)
            doc.setdefault("components", {})["securitySchemes"] = {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "the admin token of 'edgec serve', or a device credential for the agent's routes"}}
            doc["security"] = [{"bearer": []}]
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(RecordRefused)
    async def refused(request: Request, exc: RecordRefused):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(StoreFailed)
    async def store_failed(request: Request, exc: StoreFailed):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        detail = validation_detail(exc)
        if detail and detail[0]["type"] == "json_invalid":  # the body is not JSON the record can keep
            return JSONResponse({"detail": "invalid JSON body: " + detail[0]["msg"].removeprefix(
                "JSON decode error: ")}, status_code=422)
        return JSONResponse({"detail": detail}, status_code=422)

    DeviceId = Annotated[str, PathParam(pattern=NAME_PATTERN, description="device id")]
    JobId = Annotated[int, PathParam(ge=1, le=2**62)]
    Sha = Annotated[str, PathParam(pattern=SHA256_PATTERN)]
    not_found = {404: {"model": Problem, "description": "no such object"}}
    conflict = {409: {"model": Problem, "description": "conflicts with the record"}}

    @app.get(API + "/health", tags=["server"], responses={503: {"description": "the database fails"}})
    async def health() -> dict[str, Any]:
        """Liveness, versions, the time on the server and the state of the database (503 when it fails)."""
        doc = {"status": "ok", "version": __version__, "report_schema": report_schema.SCHEMA_VERSION,
               "time": time.time(), "database": {"backend": store.dialect}}
        try:
            doc["database"].update(await read(storage.reads.probe), state="ok")
        except StoreFailed:
            doc["database"]["pool"] = store.pool.stats()
            doc["status"] = "failing"
            doc["database"].update(state="failing", error=store.last_error)
            return JSONResponse(doc, status_code=503)
        doc["database"]["pool"] = store.pool.stats()  # read after the probe has given its connection back
        if store.last_error:
            doc["database"]["last_error"] = store.last_error
        return doc

    # ------------------------------------------------------------------ artifacts

    def unwritable(exc: OSError) -> HTTPException:
        log.error("cannot write the blobs directory %s: %s", settings.blobs.root, exc)
        return HTTPException(503, f"the collector cannot write its blobs directory ({exc.strerror or exc}); "
                                  "free space or fix its permissions on the collector's host")

    @app.put(API + "/blobs/{sha256}", tags=["artifacts"], status_code=201, response_model=BlobStored,
             responses={200: {"model": BlobStored, "description": "already stored"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put_blob(sha256: Sha, request: Request):
        """Upload a file; stored under its sha256, which the body must have."""
        blobs = settings.blobs
        size = await read(storage.blobs.blob_size, sha256)
        if size is not None and blobs.has(sha256):
            return JSONResponse({"sha256": sha256, "bytes": size, "created": False}, status_code=200)
        try:
            temp, fd = blobs.open_temp()
        except OSError as exc:
            raise unwritable(exc) from exc
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
            raise unwritable(exc) from exc
        finally:
            temp.unlink(missing_ok=True)
        created = await write(storage.blobs.add_blob, sha256, n)
        return JSONResponse({"sha256": sha256, "bytes": n, "created": created}, status_code=201 if created else 200)

    async def blob_file(sha256: str) -> FileResponse:
        size = await read(storage.blobs.blob_size, sha256)
        path = settings.blobs.path(sha256)
        if size is None or not path.is_file():
            raise HTTPException(404, f"no file with sha256 {sha256}; upload it first")
        return FileResponse(path, media_type="application/octet-stream", headers={"x-content-sha256": sha256})

    @app.get(API + "/blobs/{sha256}", tags=["artifacts"], response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}}}, **not_found})
    async def get_blob(sha256: Sha):
        """Download a file by sha256 (agents verify the bytes before running them)."""
        return await blob_file(sha256)

    @app.head(API + "/blobs/{sha256}", tags=["artifacts"], response_class=Response, responses=not_found)
    async def has_blob(sha256: Sha):
        """Whether the collector has a file (200) or not (404)."""
        return await blob_file(sha256)

    # ------------------------------------------------------------------ jobs

    @app.post(API + "/jobs", tags=["jobs"], status_code=201, responses=conflict)
    async def create_job(body: JobCreate) -> dict[str, Any]:
        """Queue a measurement of uploaded files on a device of a profile, or on one device."""
        spec = body.model_dump()
        # the documents as they were sent (no defaults filled in)
        spec["manifest"] = body.manifest.model_dump(exclude_unset=True)
        spec["artifact"] = body.artifact.model_dump(exclude_unset=True)
        # a file the record knows but whose bytes are gone would fail every attempt
        missing = [name for name, sha in body.files.items() if not settings.blobs.has(sha)]
        doc = await write(storage.jobs.create_job, spec, settings.lease_seconds, missing)
        changes().notify()
        return doc

    @app.get(API + "/jobs", tags=["jobs"])
    async def list_jobs(state: Literal[JOB_STATES] | None = None,
                        limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
        """The latest jobs, newest first."""
        return {"jobs": await read(storage.reads.list_jobs, state, limit)}

    @app.get(API + "/jobs/{job_id}", tags=["jobs"], responses=not_found)
    async def get_job(job_id: JobId, request: Request,
                      wait: Annotated[float, Query(ge=0, le=60, allow_inf_nan=False)] = 0) -> dict[str, Any]:
        """One job with its attempts; with ``wait``, answers once it is finished or the time is up."""
        deadline = time.monotonic() + min(wait, settings.max_poll)
        while True:
            event = changes().snapshot()
            doc = await read(storage.reads.job_doc, job_id)
            if doc is None:
                raise HTTPException(404, f"no job {job_id}")
            remaining = deadline - time.monotonic()
            if doc["state"] in JOB_TERMINAL_STATES or remaining <= 0:
                return doc
            if await wait_change(request, event, min(remaining, 5.0)):
                return Response(status_code=204)  # the client is gone; nobody reads this

    @app.post(API + "/jobs/{job_id}/cancel", tags=["jobs"], responses={**not_found, **conflict})
    async def cancel_job(job_id: JobId) -> dict[str, Any]:
        """Cancel a queued or running job (a result that arrives later is not stored)."""
        doc = await write(storage.jobs.cancel_job, job_id)
        changes().notify()
        return doc

    @app.post(API + "/jobs/{job_id}/failure", tags=["agents"], responses={**not_found, **conflict})
    async def job_failure(job_id: JobId, body: Failure, request: Request) -> dict[str, Any]:
        """An agent could not run its job: re-queued (retry, attempts left) or failed."""
        as_device(request, body.device)
        doc = await write(storage.jobs.fail_job, job_id, body.lease_id, body.device, body.error, body.retry,
                          body.instance)
        changes().notify()
        return doc

    # ------------------------------------------------------------------ devices and agents

    @app.post(API + "/devices/register", tags=["agents"], responses={403: {"model": Problem}})
    async def register(body: Register, request: Request) -> dict[str, Any]:
        """An agent registers its device; jobs held by a previous instance are released."""
        as_device(request, body.device)
        address = request.client.host if request.client else None
        out = await write(storage.jobs.register, body.model_dump(), address)
        if out["released"]:
            log.warning("device %s re-registered: released jobs %s", body.device, out["released"])
            changes().notify()
        return {"device": out["device"], "released": [job for job, _ in out["released"]],
                "lease_seconds": settings.lease_seconds}

    @app.get(API + "/devices", tags=["devices"])
    async def list_devices() -> dict[str, Any]:
        """Registered devices: profile, labels, runtimes, power sensor, last seen, jobs held."""
        return {"devices": await read(storage.reads.list_devices, settings.offline_after)}

    @app.post(API + "/devices/{device}/enroll", tags=["devices"], status_code=201, response_model=EnrollmentIssued)
    async def enroll(device: DeviceId, body: EnrollRequest | None = None) -> dict[str, Any]:
        """A one-time enrollment token for a device: its agent trades it for the device's own credential."""
        expires = body.expires_s if body and body.expires_s is not None else ENROLL_TTL
        return await write(storage.credentials.enroll, device, expires)

    @app.post(API + "/enroll", tags=["agents"], status_code=201, response_model=CredentialIssued,
              responses={403: {"model": Problem}})
    async def exchange(body: Exchange, request: Request) -> dict[str, Any]:
        """An agent trades its enrollment token (the bearer token of this request) for its device's credential."""
        cid = request.scope.get("edgec.credential")
        if cid is None:
            raise HTTPException(403, "send the enrollment token as the bearer token ('edgec devices enroll NAME')")
        out = await write(storage.credentials.exchange, cid, body.device)
        credentials.forget()
        log.warning("device %s enrolled: it now has its own credential", body.device)
        return out

    @app.post(API + "/devices/{device}/revoke", tags=["devices"], response_model=Revoked, responses=not_found)
    async def revoke(device: DeviceId) -> dict[str, Any]:
        """Cut one device off: its credential stops working and the jobs it holds are re-queued."""
        out = await write(storage.credentials.revoke, device)
        credentials.forget()
        if out["released"]:
            changes().notify()
        log.warning("device %s revoked; released jobs %s", device, out["released"])
        return out

    @app.post(API + "/devices/{device}/lease", tags=["agents"],
              responses={200: {"model": LeaseGranted}, 204: {"description": "no job within the wait"},
                         **not_found, **conflict})
    async def lease(device: DeviceId, body: LeaseRequest, request: Request):
        """Long poll: the oldest queued job this device can run, leased to it."""
        as_device(request, device)
        deadline = time.monotonic() + min(body.wait, settings.max_poll)
        while True:
            event = changes().snapshot_queue()
            granted = await write(storage.jobs.lease, device, body.instance)
            if granted:
                return granted
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Response(status_code=204)
            if await wait_change(request, event, min(remaining, 5.0)):
                return Response(status_code=204)  # the agent is gone: lease nothing to it

    @app.post(API + "/devices/{device}/heartbeat", tags=["agents"], response_model=HeartbeatAnswer,
              responses={**not_found, **conflict})
    async def heartbeat(device: DeviceId, body: Heartbeat, request: Request) -> dict[str, Any]:
        """The agent is alive: renews the leases it still holds, says which ones it lost."""
        as_device(request, device)
        return await write(storage.jobs.heartbeat, device, body.instance, body.leases)

    # ------------------------------------------------------------------ results

    async def store_result(body: ResultPost, me: str | None) -> tuple[int, dict[str, Any]]:
        if me is not None and me != body.device:
            raise HTTPException(403, f"the credential of device '{me}' cannot act for device '{body.device}'")
        problems = report_schema.validate(body.report)
        if problems:
            raise HTTPException(422, "invalid agent report: " + "; ".join(problems[:10]))
        report_text = json.dumps(body.report)
        # the digest of the post as sent; a re-post with other text is compared as a document
        digest = hashlib.sha256(f"{body.uid}\n{body.job_id}\n{body.lease_id}\n{body.device}\n{body.instance}\n"
                                f"{report_text}".encode()).hexdigest()
        args = (body.uid, digest, body.job_id, body.lease_id, body.device, body.instance, body.report, report_text)
        out = await async_results.post_result(*args) if async_results is not None else None
        if out is None:
            out = await write(storage.results.post_result, *args)
        if not out["duplicate"]:
            changes().notify_finished()  # a job ended; no job to lease came of it
        return (200 if out["duplicate"] else 201), out

    @app.post(API + "/results", tags=["agents"], status_code=201, response_model=ResultStored,
              responses={200: {"model": ResultStored, "description": "already stored (same id and body)"},
                         **not_found, **conflict})
    async def post_result(body: Annotated[ResultPost, Body()], request: Request):
        """Store an agent's report for its job, once, and only from the agent instance that holds the
        job's lease: posting the same result again is harmless."""
        status, out = await store_result(body, request.scope.get("edgec.device"))
        return JSONResponse(out, status_code=status)

    async def fast_post_result(scope, receive, send, limit: int) -> None:
        # The agents' most frequent call, served without the framework's layers (the route above
        # documents it): the same parsing, validation, checks and answers, at a fraction of the CPU.
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client is gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_json(send, 413, too_large_message(limit, False))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            post = ResultPost.model_validate(strict_json(b"".join(chunks)))
            status, out = await store_result(post, scope.get("edgec.device"))
        except json.JSONDecodeError as exc:
            status, out = 422, {"detail": "invalid JSON body: " + printable(exc.msg)}
        except ValidationError as exc:
            status, out = 422, {"detail": error_list(exc.errors(), ("body",))}
        except HTTPException as exc:
            status, out = exc.status_code, {"detail": exc.detail}
        except RecordRefused as exc:
            status, out = exc.status, {"detail": exc.message}
        except StoreFailed as exc:
            status, out = 503, {"detail": str(exc)}
        data = json.dumps(out).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]})
        await send({"type": "http.response.body", "body": data})

    @app.get(API + "/results/{result_id}", tags=["results"], responses=not_found)
    async def get_result(result_id: JobId, request: Request) -> dict[str, Any]:
        """One stored result with its report document (a device credential reads its own results only)."""
        doc = await read(storage.reads.result_doc, result_id)
        me = request.scope.get("edgec.device")
        # another device's result is answered like a missing one: a device cannot enumerate results
        if doc is None or (me is not None and me != doc["device"]):
            raise HTTPException(404, f"no result {result_id}")
        return doc

    @app.get(API + "/report", tags=["results"])
    async def report_rows(device: Annotated[str | None, Query(max_length=256)] = None,
                          model: Annotated[str | None, Query(max_length=256)] = None,
                          every_run: bool = False) -> dict[str, Any]:
        """The rows of 'edgec report' (latest run per artifact and device unless every_run)."""
        return {"rows": await read(report.record_rows, device, model, every_run)}

    dashboard = Dashboard(settings, read, write, notify=lambda: changes().notify(), forget=credentials.forget,
                          search_storage=search_storage, store=store)
    app.include_router(dashboard.api_router())
    # Routes are tried in order: the agents' frequent calls first.
    hot = (API + "/results", API + "/devices/{device}/heartbeat", API + "/devices/{device}/lease")
    app.router.routes.sort(key=lambda route: getattr(route, "path", "") not in hot)
    return dashboard.wrap(Guard(app, settings.token, settings.max_body, settings.max_upload, credentials,
                                fast={("POST", API + "/results"): fast_post_result}))
