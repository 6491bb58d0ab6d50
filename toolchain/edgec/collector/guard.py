"""The guard in front of the application (ASGI): a bearer token on every request, then a cap on
the body size.

The token (on every path, the OpenAPI schema included: it describes the fleet's API to whoever
can read it, and a 401 for unknown paths does not tell which paths exist) is the admin token
(compared in constant time), a device's own credential or a one-time enrollment token (both
looked up by id and compared by the sha256 of their secret); a device credential opens the
agent's routes only, for its own device. The body cap (a larger one for artifact uploads) is
enforced on the declared length and on the bytes actually received.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException

from edgec.collector import API, storage

UPLOAD_PREFIX = API + "/blobs/"
CREDENTIAL_TTL = 2.0  # seconds a checked device credential is trusted before it is looked up again


async def send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def too_large_message(limit: int, upload: bool) -> str:
    kind = "artifact uploads" if upload else "JSON bodies"
    flag = "--max-upload-mb" if upload else "--max-body-mb"
    return (f"request body larger than this collector accepts for {kind} ({limit} bytes); "
            f"send less, or restart 'edgec serve' with a larger {flag}")


class BodyTooLarge(HTTPException):
    """Raised while a body is read, past its cap: FastAPI answers it as a 413."""

    def __init__(self, limit: int, upload: bool):
        super().__init__(413, too_large_message(limit, upload))


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

    def forget(self) -> None:
        """Drop every cached check (after an enrollment or a revocation)."""
        self._cache.clear()

    async def check(self, token: bytes) -> tuple[str | None, dict[str, Any] | None]:
        """(problem, credential row): the row when ``token`` is a valid credential, else why not."""
        match = storage.credentials.CREDENTIAL.match(token.decode("ascii", "replace"))
        if match is None:
            return UNAUTHORIZED, None
        letter, cid, secret = match.groups()
        now = time.monotonic()
        cached = self._cache.get(cid)
        if cached is None or now - cached[0] > CREDENTIAL_TTL:
            row = await self._read(storage.credentials.credential, cid)
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[cid] = cached = (now, row)
        row = cached[1]
        if row is None or row["kind"] != storage.credentials.KINDS[letter] or not hmac.compare_digest(
                row["secret_sha256"], storage.credentials.secret_sha256(secret)):
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
        await send_json(send, status, detail, headers)

    async def _authorize(self, scope, credential: bytes) -> tuple[int, str] | None:
        """Who sends the request (set in ``scope``), or the refusal: (status, detail)."""
        if hmac.compare_digest(credential, self.token):
            scope["edgec.device"] = None  # the admin token: every route
            return None
        problem, row = await self.credentials.check(credential)
        if problem:
            return 401, problem
        method, path = scope["method"], scope["path"]
        if row["kind"] == "enrollment":
            if (method, path) != ("POST", ENROLL_PATH):
                return 403, ("an enrollment token only serves to enroll its device "
                             "(the agent does it: edgec-agent.pyz run --enroll-token-file FILE)")
        elif not any(method == m and pattern.match(path) for m, pattern in DEVICE_ROUTES):
            return 403, (f"the credential of device '{row['device']}' opens the agent's routes "
                         "only; use the collector's admin token (its token file) for this")
        scope["edgec.device"] = row["device"]
        scope["edgec.credential"] = row["id"]
        return None

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
        refusal = await self._authorize(scope, credential)
        if refusal is not None:
            await self._refuse(send, *refusal)
            return
        upload = scope["method"] == "PUT" and scope["path"].startswith(UPLOAD_PREFIX)
        limit = self.max_upload if upload else self.max_body
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, "Content-Length is not a number")
                return
            if declared > limit:
                await send_json(send, 413, too_large_message(limit, upload))
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


def as_device(request: Request, device: str) -> None:
    """Refuse (403) a device credential acting for another device."""
    me = request.scope.get("edgec.device")
    if me is not None and me != device:
        raise HTTPException(403, f"the credential of device '{me}' cannot act for device '{device}'")
