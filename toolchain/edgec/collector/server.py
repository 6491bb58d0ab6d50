"""``edgec serve``: the collector's HTTP API (FastAPI on uvicorn).

Every request passes the :class:`Guard` first: a bearer token compared in constant time (on
every path, the OpenAPI schema included: it describes the fleet's API to whoever can read it,
and a 401 for unknown paths does not tell which paths exist), then a cap on the body size (a
larger one for artifact uploads) enforced on the declared length and on the bytes actually
received. Bodies are validated by pydantic models (:mod:`edgec.collector.messages`), agent
reports by the one report validator. Changes are committed by the store's writer before the
answer is sent. Agents long-poll for jobs; a reaper re-queues the jobs whose lease expired.
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException

from edgec.collector import API, storage, tokens
from edgec.collector.messages import (
    NAME_PATTERN,
    SHA256_PATTERN,
    BlobStored,
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
)
from edgec.errors import EdgecError

log = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_MAX_BODY = 4 * MiB
DEFAULT_MAX_UPLOAD = 1024 * MiB
DEFAULT_LEASE_S = 60.0
MAX_JSON_DEPTH = 64
UPLOAD_PREFIX = API + "/blobs/"


class ServerSettings:
    """What a running collector needs besides its store."""

    def __init__(self, token: str, blobs_dir: Path, *, max_body: int = DEFAULT_MAX_BODY,
                 max_upload: int = DEFAULT_MAX_UPLOAD, lease_seconds: float = DEFAULT_LEASE_S,
                 offline_after: float = 60.0, reaper_interval: float = 0.25, max_poll: float = 60.0):
        self.token = token
        self.blobs = storage.Blobs(blobs_dir)
        self.max_body = max_body
        self.max_upload = max_upload
        self.lease_seconds = lease_seconds
        self.offline_after = offline_after
        self.reaper_interval = reaper_interval
        self.max_poll = max_poll  # long polls answer after at most this long (proxies may cut idle ones)


# ---------------------------------------------------------------------- the guard (ASGI)


async def _send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _too_large_message(limit: int, upload: bool) -> str:
    kind = "artifact uploads" if upload else "JSON bodies"
    flag = "--max-upload-mb" if upload else "--max-body-mb"
    return (f"request body larger than this collector accepts for {kind} ({limit} bytes); "
            f"send less, or restart 'edgec serve' with a larger {flag}")


class BodyTooLarge(HTTPException):
    """Raised while a body is read, past its cap: FastAPI answers it as a 413."""

    def __init__(self, limit: int, upload: bool):
        super().__init__(413, _too_large_message(limit, upload))


class Guard:
    """Bearer token on every request, then the body size cap (declared and streamed)."""

    def __init__(self, app, token: str, max_body: int, max_upload: int):
        self.app = app
        self.token = token
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":  # the API has none: refused before any handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        auth = length = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                auth = value if auth is None else b""  # two Authorization headers: refused
            elif key == b"content-length":
                length = value
        if not tokens.matches(auth, self.token):
            await _send_json(send, 401, "missing or wrong bearer token: send 'Authorization: Bearer TOKEN' with the "
                                        "token 'edgec serve' printed on its first start (clients: EDGEC_TOKEN or "
                                        "--token-file FILE)", [(b"www-authenticate", b'Bearer realm="edgec"')])
            return
        upload = scope["method"] == "PUT" and scope["path"].startswith(UPLOAD_PREFIX)
        limit = self.max_upload if upload else self.max_body
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, "Content-Length is not a number")
                return
            if declared > limit:
                await _send_json(send, 413, _too_large_message(limit, upload))
                return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, upload)
            return message

        await self.app(scope, limited_receive, send)


# ---------------------------------------------------------------------- helpers


class Changes:
    """Wakes long polls when jobs change (queued, re-queued, finished)."""

    def __init__(self):
        self._event = asyncio.Event()

    def snapshot(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


INT64 = 2**63


def _finite(value: Any, where: str, depth: int = 0) -> str | None:
    """Where a free-form JSON value holds NaN/Infinity, an integer SQLite cannot hold, or nests too
    deep (None when it does not)."""
    if depth > MAX_JSON_DEPTH:
        return f"{where}: nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}: {value} is not a finite number"
    if isinstance(value, int) and not -INT64 <= value < INT64:
        return f"{where}: {value} is out of the 64-bit integer range"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _finite(item, f"{where}.{key}", depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problem = _finite(item, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
    return None


async def _disconnected(request) -> bool:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return True


async def _wait_change(request, event: asyncio.Event, timeout: float) -> bool:
    """Wait until jobs change, the client disconnects or ``timeout`` passes; True when it disconnected."""
    changed = asyncio.ensure_future(event.wait())
    gone = asyncio.ensure_future(_disconnected(request))
    done, pending = await asyncio.wait({changed, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return gone in done


def _canonical_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------------- the application


def create_app(store: storage.Store, settings: ServerSettings):
    """The collector as an ASGI application: :class:`Guard` around the FastAPI app."""
    from edgec import __version__
    from edgec.agent import schema as report_schema

    changes_holder: dict[str, Changes] = {}

    async def write(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(store.submit(fn, *args))

    async def read(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(store.read, fn, *args)

    def changes() -> Changes:
        return changes_holder["changes"]

    async def reaper() -> None:
        while True:
            await asyncio.sleep(settings.reaper_interval)
            try:
                expiry = await read(storage.next_expiry)
                if expiry is not None and expiry < time.time():
                    changed = await write(storage.expire_leases)
                    for job_id, state in changed:
                        log.warning("job %d: lease expired, %s", job_id, "re-queued" if state == "queued" else state)
                    if changed:
                        changes().notify()
            except Exception:  # noqa: BLE001 - the reaper must outlive one bad round
                log.exception("lease reaper")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        removed = settings.blobs.clean()
        if removed:
            log.warning("removed %d partial upload(s) left by an earlier run", removed)
        changes_holder["changes"] = Changes()
        task = asyncio.create_task(reaper())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    errors = {400: {"model": Problem, "description": "the body cannot be read (not UTF-8 JSON text)"},
              401: {"model": Problem, "description": "missing or wrong bearer token"},
              413: {"model": Problem, "description": "body larger than the collector accepts"},
              422: {"model": Problem, "description": "the body or a parameter does not validate"}}
    app = FastAPI(title="edgec collector", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Devices, jobs (leased to one agent at a time), artifacts by sha256 and results of "
                              "the edgec device fleet. Every request needs 'Authorization: Bearer TOKEN'.",
                  dependencies=[Depends(HTTPBearer(auto_error=False, description="the token of 'edgec serve'"))],
                  responses=errors)

    @app.exception_handler(storage.RecordRefused)
    async def refused(request: Request, exc: storage.RecordRefused):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    DeviceId = Annotated[str, PathParam(pattern=NAME_PATTERN, description="device id")]
    JobId = Annotated[int, PathParam(ge=1, le=2**62)]
    Sha = Annotated[str, PathParam(pattern=SHA256_PATTERN)]
    not_found = {404: {"model": Problem, "description": "no such object"}}
    conflict = {409: {"model": Problem, "description": "conflicts with the record"}}

    @app.get(API + "/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """Liveness, versions and the time on the server."""
        return {"status": "ok", "version": __version__, "report_schema": report_schema.SCHEMA_VERSION,
                "time": time.time()}

    # ------------------------------------------------------------------ artifacts

    @app.put(API + "/blobs/{sha256}", tags=["artifacts"], status_code=201, response_model=BlobStored,
             responses={200: {"model": BlobStored, "description": "already stored"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put_blob(sha256: Sha, request: Request):
        """Upload a file; stored under its sha256, which the body must have."""
        blobs = settings.blobs
        size = await read(storage.blob_size, sha256)
        if size is not None and blobs.path(sha256).is_file():
            return JSONResponse({"sha256": sha256, "bytes": size, "created": False}, status_code=200)
        temp = blobs.temp_path()
        digest = hashlib.sha256()
        n = 0
        try:
            with open(temp, "wb") as fh:
                async for chunk in request.stream():
                    digest.update(chunk)
                    fh.write(chunk)
                    n += len(chunk)
                fh.flush()
                await anyio.to_thread.run_sync(os.fsync, fh.fileno())
            got = digest.hexdigest()
            if n == 0:
                raise storage.RecordRefused(422, "empty body: upload the file's bytes (application/octet-stream)")
            if got != sha256:
                raise storage.RecordRefused(422, f"the body has sha256 {got}, not {sha256} as the URL says; the upload "
                                           "is incomplete or the URL names another file")
            await anyio.to_thread.run_sync(blobs.commit, temp, sha256)
        finally:
            temp.unlink(missing_ok=True)
        created = await write(storage.add_blob, sha256, n)
        return JSONResponse({"sha256": sha256, "bytes": n, "created": created}, status_code=201 if created else 200)

    async def blob_file(sha256: str) -> FileResponse:
        size = await read(storage.blob_size, sha256)
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
        problem = _finite(spec["manifest"], "manifest") or _finite(spec["artifact"], "artifact")
        if problem:
            raise HTTPException(422, problem)
        doc = await write(storage.create_job, spec, settings.lease_seconds)
        changes().notify()
        return doc

    @app.get(API + "/jobs", tags=["jobs"])
    async def list_jobs(state: Literal["queued", "leased", "done", "failed", "cancelled"] | None = None,
                        limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
        """The latest jobs, newest first."""
        return {"jobs": await read(storage.list_jobs, state, limit)}

    @app.get(API + "/jobs/{job_id}", tags=["jobs"], responses=not_found)
    async def get_job(job_id: JobId, request: Request,
                      wait: Annotated[float, Query(ge=0, le=60)] = 0) -> dict[str, Any]:
        """One job with its attempts; with ``wait``, answers once it is finished or the time is up."""
        deadline = time.monotonic() + min(wait, settings.max_poll)
        while True:
            event = changes().snapshot()
            doc = await read(storage.job_doc, job_id)
            if doc is None:
                raise HTTPException(404, f"no job {job_id}")
            remaining = deadline - time.monotonic()
            if doc["state"] in storage.TERMINAL or remaining <= 0:
                return doc
            if await _wait_change(request, event, min(remaining, 5.0)):
                return Response(status_code=204)  # the client is gone; nobody reads this

    @app.post(API + "/jobs/{job_id}/cancel", tags=["jobs"], responses={**not_found, **conflict})
    async def cancel_job(job_id: JobId) -> dict[str, Any]:
        """Cancel a queued or running job (a result that arrives later is not stored)."""
        doc = await write(storage.cancel_job, job_id)
        changes().notify()
        return doc

    @app.post(API + "/jobs/{job_id}/failure", tags=["agents"], responses={**not_found, **conflict})
    async def job_failure(job_id: JobId, body: Failure) -> dict[str, Any]:
        """An agent could not run its job: re-queued (retry, attempts left) or failed."""
        doc = await write(storage.fail_job, job_id, body.lease_id, body.device, body.error, body.retry)
        changes().notify()
        return doc

    # ------------------------------------------------------------------ devices and agents

    @app.post(API + "/devices/register", tags=["agents"])
    async def register(body: Register, request: Request) -> dict[str, Any]:
        """An agent registers its device; jobs held by a previous instance are released."""
        problem = _finite(body.power, "power") or _finite(body.detected, "detected")
        if problem:
            raise HTTPException(422, problem)
        address = request.client.host if request.client else None
        out = await write(storage.register, body.model_dump(), address)
        if out["released"]:
            log.warning("device %s re-registered: released jobs %s", body.device, out["released"])
            changes().notify()
        return {"device": out["device"], "released": [job for job, _ in out["released"]],
                "lease_seconds": settings.lease_seconds}

    @app.get(API + "/devices", tags=["devices"])
    async def list_devices() -> dict[str, Any]:
        """Registered devices: profile, labels, runtimes, power sensor, last seen, jobs held."""
        return {"devices": await read(storage.list_devices, settings.offline_after)}

    @app.post(API + "/devices/{device}/lease", tags=["agents"],
              responses={200: {"model": LeaseGranted}, 204: {"description": "no job within the wait"},
                         **not_found, **conflict})
    async def lease(device: DeviceId, body: LeaseRequest, request: Request):
        """Long poll: the oldest queued job this device can run, leased to it."""
        deadline = time.monotonic() + min(body.wait, settings.max_poll)
        while True:
            event = changes().snapshot()
            granted = await write(storage.lease, device, body.instance)
            if granted:
                return granted
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Response(status_code=204)
            if await _wait_change(request, event, min(remaining, 5.0)):
                return Response(status_code=204)  # the agent is gone: lease nothing to it

    @app.post(API + "/devices/{device}/heartbeat", tags=["agents"], response_model=HeartbeatAnswer,
              responses={**not_found, **conflict})
    async def heartbeat(device: DeviceId, body: Heartbeat) -> dict[str, Any]:
        """The agent is alive: renews the leases it still holds, says which ones it lost."""
        return await write(storage.heartbeat, device, body.instance, body.leases)

    # ------------------------------------------------------------------ results

    @app.post(API + "/results", tags=["agents"], status_code=201, response_model=ResultStored,
              responses={200: {"model": ResultStored, "description": "already stored (same id and body)"},
                         **not_found, **conflict})
    async def post_result(body: Annotated[ResultPost, Body()]):
        """Store an agent's report for its job, once: posting the same result again is harmless."""
        problem = _finite(body.report, "report")
        if problem:
            raise HTTPException(422, problem)
        problems = report_schema.validate(body.report)
        if problems:
            raise HTTPException(422, "invalid agent report: " + "; ".join(problems[:10]))
        digest = _canonical_sha256(body.model_dump())
        out = await write(storage.post_result, body.uid, digest, body.job_id, body.lease_id, body.device,
                          body.report)
        if not out["duplicate"]:
            changes().notify()
        return JSONResponse(out, status_code=200 if out["duplicate"] else 201)

    @app.get(API + "/results/{result_id}", tags=["results"], responses=not_found)
    async def get_result(result_id: JobId) -> dict[str, Any]:
        """One stored result with its report document."""
        doc = await read(storage.result_doc, result_id)
        if doc is None:
            raise HTTPException(404, f"no result {result_id}")
        return doc

    @app.get(API + "/report", tags=["results"])
    async def report_rows(device: Annotated[str | None, Query(max_length=256)] = None,
                          model: Annotated[str | None, Query(max_length=256)] = None,
                          every_run: bool = False) -> dict[str, Any]:
        """The rows of 'edgec report' (latest run per artifact and device unless every_run)."""
        return {"rows": await anyio.to_thread.run_sync(_report_rows, store.path, device, model, every_run)}

    return Guard(app, settings.token, settings.max_body, settings.max_upload)


def _report_rows(db: Path, device: str | None, model: str | None, every_run: bool) -> list[dict[str, Any]]:
    from edgec import report
    from edgec.results import ResultsStore

    results = ResultsStore(db)
    return report.build_rows(report.select_results(results, device=device, model=model, every_run=every_run),
                             results.artifacts())


# ---------------------------------------------------------------------- running it


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port).

    Raises:
        EdgecError: the address cannot be used.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise EdgecError(f"cannot resolve --host '{host}': {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise EdgecError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --port "
                         "(0 picks a free one) or stop the process using it") from exc
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(app, sock: socket.socket, *, access_log: bool = False) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn finishes the requests in flight)."""
    import uvicorn

    config = uvicorn.Config(app, log_config=None, access_log=access_log, timeout_keep_alive=30,
                            timeout_graceful_shutdown=5, lifespan="on", server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
