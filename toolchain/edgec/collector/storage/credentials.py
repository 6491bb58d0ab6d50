"""Device credentials and enrollment tokens, kept by the sha256 of their secret."""

from __future__ import annotations

import re
import time
from typing import Any

from edgec.collector.storage.errors import RecordRefused
from edgec.collector.storage.jobs import release_jobs

CREDENTIAL = re.compile(r"^edgec-([de])\.([0-9a-f]{16})\.([A-Za-z0-9_-]{40,64})$")
KINDS = {"d": "device", "e": "enrollment"}


def secret_sha256(secret: str) -> str:
    import hashlib

    # a 256-bit random secret needs no slow hash: what is stored cannot be used to authenticate
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_credential(conn, device: str, kind: str, expires: float | None) -> str:
    import secrets

    cid = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO credentials (id, device, kind, secret_sha256, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
                 (cid, device, kind, secret_sha256(secret), time.time(), expires))
    return f"edgec-{kind[0]}.{cid}.{secret}"


def enroll(conn, device: str, expires_s: float) -> dict[str, Any]:
    """A one-time enrollment token for ``device`` (valid ``expires_s`` seconds)."""
    expires = time.time() + expires_s
    token = _new_credential(conn, device, "enrollment", expires)
    return {"device": device, "enrollment_token": token, "expires": expires}


def exchange(conn, credential_id: str, device: str) -> dict[str, Any]:
    """Trade an unused enrollment token for the device's own credential; the device's earlier
    credentials stop working (one credential per device).

    Raises:
        RecordRefused: 401 used, expired or revoked; 403 issued for another device.
    """
    now = time.time()
    row = conn.execute("SELECT * FROM credentials WHERE id = ?" + conn.lock, (credential_id,)).fetchone()
    if row is None or row["kind"] != "enrollment" or row["revoked"] is not None:
        raise RecordRefused(401, "this enrollment token is not valid; ask for a new one: edgec devices enroll NAME")
    if row["used"] is not None:
        raise RecordRefused(401, "this enrollment token was already used; ask for a new one: edgec devices enroll NAME")
    if row["expires"] is not None and row["expires"] < now:
        raise RecordRefused(401, "this enrollment token has expired; ask for a new one: edgec devices enroll NAME")
    if row["device"] != device:
        raise RecordRefused(403, f"this enrollment token is for device '{row['device']}', not '{device}'; "
                                 f"run the agent with --name {row['device']}")
    conn.execute("UPDATE credentials SET used = ? WHERE id = ?", (now, credential_id))
    conn.execute("UPDATE credentials SET revoked = ? WHERE device = ? AND kind = 'device' AND revoked IS NULL",
                 (now, device))
    return {"device": device, "credential": _new_credential(conn, device, "device", None)}


def revoke(conn, device: str) -> dict[str, Any]:
    """Cut ``device`` off: its credentials and pending enrollment tokens stop working and the jobs it
    holds are re-queued. Other devices are not touched.

    Raises:
        RecordRefused: 404 when the device has no credential.
    """
    now = time.time()
    cur = conn.execute("UPDATE credentials SET revoked = ? WHERE device = ? AND revoked IS NULL", (now, device))
    known = conn.execute("SELECT COUNT(*) FROM credentials WHERE device = ?", (device,)).fetchone()[0]
    if not known:
        raise RecordRefused(404, f"device '{device}' was never enrolled; 'edgec devices' lists the registered ones")
    released = release_jobs(conn, device, now, "the device's credential was revoked")
    return {"device": device, "revoked": cur.rowcount, "released": [job for job, _ in released]}


def credential(conn, credential_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT id, device, kind, secret_sha256, expires, used, revoked FROM credentials WHERE id = ?",
                       (credential_id,)).fetchone()
    return None if row is None else dict(row)
