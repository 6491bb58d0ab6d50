"""``edgec serve``: the collector's HTTP API (FastAPI on uvicorn).

Connections are held to a header cap, read timeouts and a connection limit before anything else
(:mod:`edgec.collector.http`). Every request then passes the :class:`Guard`: a bearer token (on
every path, the OpenAPI schema included: it describes the fleet's API to whoever can read it,
and a 401 for unknown paths does not tell which paths exist) that is the admin token (compared
in constant time), a device's own credential or a one-time enrollment token (both looked up by
id and compared by the sha256 of their secret); a device credential opens the agent's routes
only, for its own device. Then a cap on the body size (a larger one for artifact uploads)
enforced on the declared length and on the bytes actually received. JSON bodies are parsed
strictly (no NaN or Infinity, no number a 64-bit column cannot hold, no unpaired surrogate, no
nesting past 64 levels) and validated by pydantic models (:mod:`edgec.collector.messages`),
agent reports by the one report validator; whatever is refused gets a 422 that can always be
encoded. Changes are committed by the store's writer before the answer is sent. Agents
long-poll for jobs; a reaper re-queues the jobs whose lease expired.
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from edgec.collector import API, http, storage
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
from edgec.errors import EdgecError

log = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_MAX_BODY = 4 * MiB
DEFAULT_MAX_UPLOAD = 1024 * MiB
DEFAULT_LEASE_S = 60.0
MAX_JSON_DEPTH = 64
UPLOAD_PREFIX = API + "/blobs/"
CREDENTIAL_TTL = 2.0  # seconds a checked device credential is trusted before it is looked up again
ENROLL_TTL = 24 * 3600.0


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


# ---------------------------------------------------------------------- strict JSON bodies


# Only a text with a surrogate escape can hold an unpaired surrogate: only then (or when it may
# nest too deep) is the parsed document walked. Numbers are checked as they are parsed (a float
# that overflows is infinite; an integer must fit 64 bits).
_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
INT64 = 2**63


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _int64(text: str) -> int:
    value = int(text)
    if -INT64 <= value < INT64:
        return value
    raise ValueError(f"{text[:40]}{'...' if len(text) > 40 else ''} is out of the 64-bit integer range")


def _finite(text: str) -> float:
    value = float(text)
    if value - value == 0.0:  # neither infinite nor NaN
        return value
    raise ValueError(f"{text[:40]} is not a finite number")


def _problem(value: Any, where: str, depth: int = 0) -> str | None:
    """Where a parsed JSON value holds a non-finite number, an integer a 64-bit column cannot
    hold, an unpaired surrogate, or nests too deep (None when it does not)."""
    if depth > MAX_JSON_DEPTH:
        return f"{where}: nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        return f"{where}: text with an unpaired surrogate (not valid Unicode)" if _SURROGATE.search(value) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}: {value} is not a finite number"
    if isinstance(value, int) and not isinstance(value, bool):
        return None if -INT64 <= value < INT64 else f"{where}: {value} is out of the 64-bit integer range"
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"{where}: a key with an unpaired surrogate (not valid Unicode)"
            problem = _problem(item, f"{where}.{key}", depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problem = _problem(item, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
    return None


def strict_json(body: bytes) -> Any:
    """A JSON body as the record can keep and send back: UTF-8, finite numbers, 64-bit integers,
    valid Unicode, at most 64 levels deep.

    Raises:
        json.JSONDecodeError: anything else (FastAPI answers it as a 422).
    """
    try:
        doc = _DECODER.decode(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", "", 0) from None
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", "", 0) from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise json.JSONDecodeError(str(exc), "", 0) from None
    # The full walk only when the text could hold a problem (cheap tests on the bytes first).
    if _SUSPECT.search(body) or body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
        problem = _problem(doc, "body")
        if problem:
            raise json.JSONDecodeError(problem, "", 0)
    return doc


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite, parse_int=_int64)


class StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictRoute(APIRoute):
    """Routes whose JSON bodies are parsed by :func:`strict_json`."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictRequest(request.scope, request.receive))

        return strict_handler


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if math.isfinite(value) else str(value)
    return value if value is None or isinstance(value, bool) else _printable(str(value))


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    """pydantic's errors without the refused input (it may not be encodable: NaN, surrogates)."""
    return _error_list(exc.errors())


def _error_list(errors: Any, prefix: tuple = ()) -> list[dict[str, Any]]:
    out = []
    for error in list(errors)[:20]:
        item = {"type": _printable(error.get("type")),
                "loc": [_printable(x) for x in (*prefix, *error.get("loc", ()))],
                "msg": _printable(error.get("msg"))}
        ctx = error.get("ctx") or {}
        if "error" in ctx:
            item["msg"] = _printable(f"{item['msg']}: {ctx['error']}")
        out.append(item)
    return out


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


# What a device credential may call (its own device only; the routes check the name), and an
# enrollment token (nothing but the exchange). Everything else needs the admin token.
DEVICE_ROUTES = [(method, re.compile(pattern)) for method, pattern in (
    ("GET", r"^/v1/health$"),
    ("POST", r"^/v1/devices/register$"),
    ("POST", r"^/v1/devices/[^/]+/(lease|heartbeat)$"),
    ("POST", r"^/v1/results$"),
    ("GET", r"^/v1/results/[^/]+$"),
    ("POST", r"^/v1/jobs/[^/]+/failure$"),
    ("GET", r"^/v1/blobs/[^/]+$"),
    ("HEAD", r"^/v1/blobs/[^/]+$"),
)]
ENROLL_PATH = API + "/enroll"
UNAUTHORIZED = ("missing or wrong bearer token: send 'Authorization: Bearer TOKEN' with the token 'edgec serve' "
                "printed on its first start (clients: EDGEC_TOKEN or --token-file FILE), or a device's own "
                "credential ('edgec devices enroll NAME')")


class Credentials:
    """Device credentials and enrollment tokens, checked against the record (cached briefly)."""

    def __init__(self, read: Callable[..., Any]):
        self._read = read
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def forget(self, device: str | None = None) -> None:
        self._cache.clear()

    async def check(self, token: bytes) -> tuple[str | None, dict[str, Any] | None]:
        """(problem, credential row): the row when ``token`` is a valid credential, else why not."""
        match = storage.CREDENTIAL.match(token.decode("ascii", "replace"))
        if match is None:
            return UNAUTHORIZED, None
        letter, cid, secret = match.groups()
        now = time.monotonic()
        cached = self._cache.get(cid)
        if cached is None or now - cached[0] > CREDENTIAL_TTL:
            row = await self._read(storage.credential, cid)
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[cid] = cached = (now, row)
        row = cached[1]
        if row is None or row["kind"] != storage.KINDS[letter] or not hmac.compare_digest(
                row["secret_sha256"], storage._secret_sha256(secret)):
            return UNAUTHORIZED, None
        if row["revoked"] is not None:
            return (f"the credential of device '{row['device']}' was revoked; enroll the device again: "
                    f"edgec devices enroll {row['device']}"), None
        if row["kind"] == "enrollment" and (row["used"] is not None or (row["expires"] or 0) < time.time()):
            return ("this enrollment token was already used or has expired; ask for a new one: "
                    f"edgec devices enroll {row['device']}"), None
        return None, row


class Guard:
    """Bearer token on every request (admin, device credential or enrollment token, each to its
    routes), then the body size cap (declared and streamed)."""

    def __init__(self, app, token: str, max_body: int, max_upload: int, credentials: Credentials,
                 fast: dict[tuple[str, str], Callable[..., Any]] | None = None):
        self.app = app
        self.fast = fast or {}
        self.token = token.encode()
        self.max_body = max_body
        self.max_upload = max_upload
        self.credentials = credentials

    async def _refuse(self, send, status: int, detail: str) -> None:
        headers = [(b"www-authenticate", b'Bearer realm="edgec"')] if status == 401 else []
        await _send_json(send, status, detail, headers)

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
        scheme, _, credential = (auth or b"").partition(b" ")
        credential = credential.strip()
        if scheme.lower() != b"bearer" or not credential:
            await self._refuse(send, 401, UNAUTHORIZED)
            return
        if hmac.compare_digest(credential, self.token):
            scope["edgec.device"] = None  # the admin token: every route
        else:
            problem, row = await self.credentials.check(credential)
            if problem:
                await self._refuse(send, 401, problem)
                return
            method, path = scope["method"], scope["path"]
            if row["kind"] == "enrollment":
                if (method, path) != ("POST", ENROLL_PATH):
                    await self._refuse(send, 403, "an enrollment token only serves to enroll its device "
                                                  "(the agent does it: edgec-agent.pyz run --enroll-token-file FILE)")
                    return
            elif not any(method == m and pattern.match(path) for m, pattern in DEVICE_ROUTES):
                await self._refuse(send, 403, f"the credential of device '{row['device']}' opens the agent's routes "
                                              "only; use the collector's admin token (its token file) for this")
                return
            scope["edgec.device"] = row["device"]
            scope["edgec.credential"] = row["id"]
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
        handler = self.fast.get((scope["method"], scope["path"]))
        if handler is not None:
            await handler(scope, receive, send, limit)
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


def _as_device(request: Request, device: str) -> None:
    """Refuse (403) a device credential acting for another device."""
    me = request.scope.get("edgec.device")
    if me is not None and me != device:
        raise HTTPException(403, f"the credential of device '{me}' cannot act for device '{device}'")


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


class LoopWriter:
    """The SQLite record's changes, run by the event loop itself: every change requested during one
    turn of the loop is run in one transaction (each in its own savepoint) and committed together
    at the end of that turn, before any of them is answered. One request alone costs no thread
    switch; many at once share one sync of the WAL. Reads stay on their threads meanwhile."""

    def __init__(self, store: storage.Store):
        self.store = store
        self.pending: list[tuple[asyncio.Future, Callable[..., Any], tuple]] = []
        self.scheduled = False

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((future, fn, args))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.flush)
        return await future

    def flush(self) -> None:
        self.scheduled = False
        batch, self.pending = [item for item in self.pending if not item[0].cancelled()], []
        if not batch:
            return
        outcomes = self.store.run_now([(fn, args) for _, fn, args in batch])
        for (future, _, _), (value, exc) in zip(batch, outcomes, strict=True):
            if future.cancelled():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)


# ---------------------------------------------------------------------- the application


def create_app(store: storage.Store, settings: ServerSettings):
    """The collector as an ASGI application: :class:`Guard` around the FastAPI app."""
    from edgec import __version__
    from edgec.agent import schema as report_schema

    changes_holder: dict[str, Changes] = {}

    batcher = LoopWriter(store) if store.dialect == "sqlite" else None
    async_results = storage.AsyncResults(store) if store.dialect == "postgresql" else None

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
                expiry = await read(storage.next_expiry)
                if expiry is not None and expiry < time.time():
                    changed = await write(storage.expire_leases)
                    for job_id, state in changed:
                        log.warning("job %d: lease expired, %s", job_id, "re-queued" if state == "queued" else state)
                    if changed:
                        changes().notify()
            except storage.StoreFailed:
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
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        store.listen(lambda: loop.call_soon_threadsafe(changes().notify), stop)
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

    @app.exception_handler(storage.RecordRefused)
    async def refused(request: Request, exc: storage.RecordRefused):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(storage.StoreFailed)
    async def store_failed(request: Request, exc: storage.StoreFailed):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        detail = _validation_detail(exc)
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
            doc["database"].update(await read(storage.probe), state="ok")
        except storage.StoreFailed:
            doc["status"] = "failing"
            doc["database"].update(state="failing", error=store.last_error)
            return JSONResponse(doc, status_code=503)
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
        size = await read(storage.blob_size, sha256)
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
                raise storage.RecordRefused(422, "empty body: upload the file's bytes (application/octet-stream)")
            if got != sha256:
                raise storage.RecordRefused(422, f"the body has sha256 {got}, not {sha256} as the URL says; the upload "
                                           "is incomplete or the URL names another file")
            await anyio.to_thread.run_sync(blobs.commit, temp, sha256)
        except OSError as exc:
            raise unwritable(exc) from exc
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
        # a file the record knows but whose bytes are gone would fail every attempt
        missing = [name for name, sha in body.files.items() if not settings.blobs.has(sha)]
        doc = await write(storage.create_job, spec, settings.lease_seconds, missing)
        changes().notify()
        return doc

    @app.get(API + "/jobs", tags=["jobs"])
    async def list_jobs(state: Literal["queued", "leased", "done", "failed", "cancelled"] | None = None,
                        limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
        """The latest jobs, newest first."""
        return {"jobs": await read(storage.list_jobs, state, limit)}

    @app.get(API + "/jobs/{job_id}", tags=["jobs"], responses=not_found)
    async def get_job(job_id: JobId, request: Request,
                      wait: Annotated[float, Query(ge=0, le=60, allow_inf_nan=False)] = 0) -> dict[str, Any]:
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
    async def job_failure(job_id: JobId, body: Failure, request: Request) -> dict[str, Any]:
        """An agent could not run its job: re-queued (retry, attempts left) or failed."""
        _as_device(request, body.device)
        doc = await write(storage.fail_job, job_id, body.lease_id, body.device, body.error, body.retry,
                          body.instance)
        changes().notify()
        return doc

    # ------------------------------------------------------------------ devices and agents

    @app.post(API + "/devices/register", tags=["agents"], responses={403: {"model": Problem}})
    async def register(body: Register, request: Request) -> dict[str, Any]:
        """An agent registers its device; jobs held by a previous instance are released."""
        _as_device(request, body.device)
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

    @app.post(API + "/devices/{device}/enroll", tags=["devices"], status_code=201, response_model=EnrollmentIssued)
    async def enroll(device: DeviceId, body: EnrollRequest | None = None) -> dict[str, Any]:
        """A one-time enrollment token for a device: its agent trades it for the device's own credential."""
        expires = body.expires_s if body and body.expires_s is not None else ENROLL_TTL
        return await write(storage.enroll, device, expires)

    @app.post(API + "/enroll", tags=["agents"], status_code=201, response_model=CredentialIssued,
              responses={403: {"model": Problem}})
    async def exchange(body: Exchange, request: Request) -> dict[str, Any]:
        """An agent trades its enrollment token (the bearer token of this request) for its device's credential."""
        cid = request.scope.get("edgec.credential")
        if cid is None:
            raise HTTPException(403, "send the enrollment token as the bearer token ('edgec devices enroll NAME')")
        out = await write(storage.exchange, cid, body.device)
        credentials.forget()
        log.warning("device %s enrolled: it now has its own credential", body.device)
        return out

    @app.post(API + "/devices/{device}/revoke", tags=["devices"], response_model=Revoked, responses=not_found)
    async def revoke(device: DeviceId) -> dict[str, Any]:
        """Cut one device off: its credential stops working and the jobs it holds are re-queued."""
        out = await write(storage.revoke, device)
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
        _as_device(request, device)
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
    async def heartbeat(device: DeviceId, body: Heartbeat, request: Request) -> dict[str, Any]:
        """The agent is alive: renews the leases it still holds, says which ones it lost."""
        _as_device(request, device)
        return await write(storage.heartbeat, device, body.instance, body.leases)

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
            out = await write(storage.post_result, *args)
        if not out["duplicate"]:
            changes().notify()
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
                await _send_json(send, 413, _too_large_message(limit, False))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            post = ResultPost.model_validate(strict_json(b"".join(chunks)))
            status, out = await store_result(post, scope.get("edgec.device"))
        except json.JSONDecodeError as exc:
            status, out = 422, {"detail": "invalid JSON body: " + _printable(exc.msg)}
        except ValidationError as exc:
            status, out = 422, {"detail": _error_list(exc.errors(), ("body",))}
        except HTTPException as exc:
            status, out = exc.status_code, {"detail": exc.detail}
        except storage.RecordRefused as exc:
            status, out = exc.status, {"detail": exc.message}
        except storage.StoreFailed as exc:
            status, out = 503, {"detail": str(exc)}
        data = json.dumps(out).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]})
        await send({"type": "http.response.body", "body": data})

    @app.get(API + "/results/{result_id}", tags=["results"], responses={**not_found, 403: {"model": Problem}})
    async def get_result(result_id: JobId, request: Request) -> dict[str, Any]:
        """One stored result with its report document (a device credential reads its own results only)."""
        doc = await read(storage.result_doc, result_id)
        if doc is None:
            raise HTTPException(404, f"no result {result_id}")
        _as_device(request, doc["device"])
        return doc

    @app.get(API + "/report", tags=["results"])
    async def report_rows(device: Annotated[str | None, Query(max_length=256)] = None,
                          model: Annotated[str | None, Query(max_length=256)] = None,
                          every_run: bool = False) -> dict[str, Any]:
        """The rows of 'edgec report' (latest run per artifact and device unless every_run)."""
        return {"rows": await read(_report_rows, device, model, every_run)}

    # Routes are tried in order: the agents' frequent calls first.
    hot = (API + "/results", API + "/devices/{device}/heartbeat", API + "/devices/{device}/lease")
    app.router.routes.sort(key=lambda route: getattr(route, "path", "") not in hot)
    return Guard(app, settings.token, settings.max_body, settings.max_upload, credentials,
                 fast={("POST", API + "/results"): fast_post_result})


class _Rows:
    """The record's results as :func:`edgec.report.select_results` reads a results store."""

    def __init__(self, conn):
        self.conn = conn

    def rows(self, *, device: str | None = None, latest: bool = True) -> list[dict[str, Any]]:
        from edgec import results

        return results.query_rows(self.conn, device=device, latest=latest)

    def artifacts(self) -> list[dict[str, Any]]:
        from edgec import results

        return results.query_artifacts(self.conn)


def _report_rows(conn, device: str | None, model: str | None, every_run: bool) -> list[dict[str, Any]]:
    from edgec import report

    source = _Rows(conn)
    return report.build_rows(report.select_results(source, device=device, model=model, every_run=every_run),
                             source.artifacts())


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


def url_of(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def check_tls(cert: Path, key: Path) -> None:
    """Load the certificate and key once, so a bad pair is one line before the server starts.

    Raises:
        EdgecError: unreadable, not PEM, or the key does not match the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise EdgecError(f"cannot read TLS file '{exc.filename}': it does not exist") from exc
    except (ssl.SSLError, OSError) as exc:
        raise EdgecError(f"--tls-cert '{cert}' and --tls-key '{key}' cannot be used: {exc.strerror or exc}; expected "
                         "a PEM certificate (chain) and its PEM private key, unencrypted") from exc


def run(app, sock: socket.socket, *, access_log: bool = False, limits: http.Limits | None = None,
        tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn finishes the requests in flight)."""
    import uvicorn

    config = uvicorn.Config(app, log_config=None, access_log=access_log, timeout_keep_alive=30,
                            timeout_graceful_shutdown=5, lifespan="on", server_header=False,
                            http=http.protocol_class(limits or http.Limits()),
                            ssl_certfile=str(tls_cert) if tls_cert else None,
                            ssl_keyfile=str(tls_key) if tls_key else None)
    uvicorn.Server(config).run(sockets=[sock])
