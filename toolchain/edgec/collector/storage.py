"""The collector's record: devices, jobs and their leases, artifacts and results in one SQLite
file, uploaded files in a content-addressed directory beside it.

Durability: the database runs in WAL mode with ``synchronous=FULL``, and every change goes
through one writer thread that commits (which syncs the WAL to disk) before the future of the
request resolves, so a 2xx is only ever sent for a change that survives a killed server or a
lost machine. Concurrent requests are group-committed: the writer runs every operation that is
waiting in one transaction (each in its own savepoint, so one refused request does not undo the
others) and syncs once.

The ``artifacts`` and ``results`` tables are those of :mod:`edgec.results` (same DDL, same
insert functions), so ``edgec report`` reads the collector's file exactly as it reads the local
results store. Collector tables: ``blobs`` (uploaded files by sha256), ``devices``, ``jobs``,
``leases`` (one row per attempt) and ``submissions`` (the agent's id of each result: a posted
result is stored once, and a job has at most one result -- both unique in the schema).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgec import results as results_mod
from edgec.errors import EdgecError

log = logging.getLogger(__name__)

COLLECTOR_VERSION = 1
MAX_BATCH = 256
SHA256 = re.compile(r"^[0-9a-f]{64}$")
TERMINAL = ("done", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS collector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    sha256  TEXT PRIMARY KEY,
    bytes   INTEGER NOT NULL,
    added   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id              TEXT PRIMARY KEY,
    instance        TEXT NOT NULL,
    profile         TEXT,
    labels          TEXT NOT NULL,
    runtimes        TEXT NOT NULL,
    power           TEXT NOT NULL,
    detected        TEXT NOT NULL,
    agent_version   TEXT,
    address         TEXT,
    registered      REAL NOT NULL,
    last_seen       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed', 'cancelled')),
    created         REAL NOT NULL,
    updated         REAL NOT NULL,
    profile         TEXT,
    device          TEXT,
    labels          TEXT NOT NULL,
    runtime         TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL REFERENCES artifacts (sha256),
    spec            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    lease_seconds   REAL NOT NULL,
    lease_id        TEXT,
    leased_to       TEXT,
    lease_expires   REAL,
    result_id       INTEGER REFERENCES results (id),
    error           TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, lease_expires);
CREATE TABLE IF NOT EXISTS leases (
    id          TEXT PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    device      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    issued      REAL NOT NULL,
    expires     REAL NOT NULL,
    ended       REAL,
    outcome     TEXT CHECK (outcome IS NULL OR outcome IN ('done', 'failed', 'expired', 'released', 'cancelled')),
    detail      TEXT
);
CREATE INDEX IF NOT EXISTS leases_job ON leases (job_id);
CREATE TABLE IF NOT EXISTS submissions (
    uid         TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,
    result_id   INTEGER NOT NULL UNIQUE REFERENCES results (id),
    job_id      INTEGER NOT NULL UNIQUE REFERENCES jobs (id),
    lease_id    TEXT NOT NULL,
    device      TEXT NOT NULL,
    received    REAL NOT NULL
);
"""


class RecordRefused(Exception):
    """A request the record cannot take; ``status`` and ``message`` go back to the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class Store:
    """The SQLite record: one writer thread (group commit), one read connection per thread.

    Args:
        path: the database file (created with its directory).
        synchronous: SQLite's ``synchronous`` setting; ``FULL`` syncs the WAL on every commit.
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL"):
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise EdgecError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.commits = 0  # transactions committed (group commits), for the benchmark

    # ------------------------------------------------------------------ lifecycle

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def open(self) -> Store:
        """Create or open the database and start the writer.

        Raises:
            EdgecError: the file cannot be opened, is not a collector database, or is newer.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise EdgecError(f"cannot put '{self.path}' in WAL mode (got {mode}); use a local file system")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > results_mod.STORE_VERSION:
                raise EdgecError(f"'{self.path}' has results version {version}, newer than this edgec understands "
                                 f"({results_mod.STORE_VERSION}); update edgec or use another --db")
            conn.executescript("BEGIN IMMEDIATE;" + results_mod.SCHEMA + SCHEMA + "COMMIT;")
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT value FROM collector_meta WHERE key = 'version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO collector_meta (key, value) VALUES ('version', ?)", (str(COLLECTOR_VERSION),))
            elif int(row[0]) > COLLECTOR_VERSION:
                conn.execute("ROLLBACK")
                raise EdgecError(f"'{self.path}' is a collector database of version {row[0]}, newer than this edgec "
                                 f"understands ({COLLECTOR_VERSION}); update edgec or use another --db")
            conn.execute(f"PRAGMA user_version = {results_mod.STORE_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise EdgecError(f"cannot use '{self.path}' as the collector database: {exc}") from exc
        except OSError as exc:
            raise EdgecError(f"cannot open '{self.path}': {exc.strerror or exc}") from exc
        self._conn = conn
        self._writer = threading.Thread(target=self._write_loop, name="collector-writer", daemon=True)
        self._writer.start()
        return self

    def close(self) -> None:
        """Finish the queued writes, stop the writer and close every connection."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writes and reads

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Queue ``fn(conn, *args)`` for the writer; the future resolves after the commit."""
        if self._writer is None:
            raise RuntimeError("store is not open")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, fn, args))
        return future

    def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in the writer and wait until it is committed."""
        return self.submit(fn, *args).result()

    def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one read transaction on this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn, *args)
        finally:
            conn.execute("COMMIT")

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list) -> None:
        conn = self._conn
        outcomes = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for future, fn, args in batch:
                if not future.set_running_or_notify_cancel():
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn, *args)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((future, value, None))
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            log.error("commit failed, %d requests refused: %s", len(batch), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for future, _, _ in batch:
                if future.done() or (not future.running() and not future.set_running_or_notify_cancel()):
                    continue
                future.set_exception(exc)
            return
        for future, value, exc in outcomes:
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)


# ---------------------------------------------------------------------- blob files


class Blobs:
    """Uploaded files by sha256 under ``root/ab/abcdef...``; a client's file name is never a path."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if not SHA256.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def clean(self) -> int:
        """Remove the partial uploads a killed server left behind (at start, none is in progress)."""
        removed = 0
        for part in (self.root / "tmp").glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def temp_path(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}.part"

    def commit(self, temp: Path, sha256: str) -> Path:
        """Move a complete, synced upload into place (atomically) and sync its directory."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return final


# ---------------------------------------------------------------------- operations (writer)


def add_blob(conn: sqlite3.Connection, sha256: str, size: int) -> bool:
    """Record an uploaded file; False when it was already there."""
    cur = conn.execute("INSERT INTO blobs (sha256, bytes, added) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                       (sha256, size, time.time()))
    return cur.rowcount == 1


def blob_size(conn: sqlite3.Connection, sha256: str) -> int | None:
    row = conn.execute("SELECT bytes FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else int(row[0])


def _device_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for key in ("labels", "runtimes", "power", "detected"):
        d[key] = json.loads(d[key])
    return d


def can_run(device: dict[str, Any], job: dict[str, Any]) -> bool:
    """Whether ``device`` may take ``job``: its id or profile, every label, and the runtime."""
    if job["device"]:
        if device["id"] != job["device"]:
            return False
    elif not job["profile"] or device["profile"] != job["profile"]:
        return False
    labels = device["labels"]
    if any(labels.get(k) != v for k, v in job["labels"].items()):
        return False
    return job["runtime"] == "auto" or job["runtime"] in device["runtimes"]


def _job_match_fields(row: sqlite3.Row) -> dict[str, Any]:
    return {"device": row["device"], "profile": row["profile"], "labels": json.loads(row["labels"]),
            "runtime": row["runtime"]}


def matching_devices(conn: sqlite3.Connection, job: dict[str, Any]) -> list[str]:
    """Ids of the registered devices that can run ``job`` (online or not)."""
    rows = conn.execute("SELECT * FROM devices ORDER BY id").fetchall()
    return [r["id"] for r in rows if can_run(_device_dict(r), job)]


def create_job(conn: sqlite3.Connection, spec: dict[str, Any], default_lease: float) -> dict[str, Any]:
    """Queue a job; its files must have been uploaded.

    Raises:
        RecordRefused: 409 when a file is missing.
    """
    missing = sorted(name for name, sha in spec["files"].items() if blob_size(conn, sha) is None)
    if missing:
        raise RecordRefused(409, f"files not uploaded yet: {', '.join(missing)}; upload each first with "
                           "PUT /v1/blobs/<sha256> (edgec profile --server does this)")
    record = spec["artifact"]
    results_mod.insert_artifact(conn, spec["manifest"], record, spec.get("build_dir"))
    now = time.time()
    body = {"files": spec["files"], "target": spec["target"], "options": spec["options"],
            "warnings": spec.get("warnings") or [], "timeout_s": spec["timeout_s"], "build_dir": spec.get("build_dir")}
    cur = conn.execute(
        "INSERT INTO jobs (state, created, updated, profile, device, labels, runtime, artifact_sha256, spec, "
        "max_attempts, lease_seconds) VALUES ('queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (now, now, spec.get("profile"), spec.get("device"), _dumps(spec.get("labels") or {}), spec["runtime"],
         record["sha256"], _dumps(body), spec["max_attempts"], spec.get("lease_seconds") or default_lease))
    doc = job_doc(conn, int(cur.lastrowid))
    doc["matching_devices"] = matching_devices(conn, doc)
    return doc


def register(conn: sqlite3.Connection, body: dict[str, Any], address: str | None) -> dict[str, Any]:
    """Add or update a device. A new agent instance under a known id means the previous one is gone:
    the jobs it held are released at once (re-queued within their attempt limit)."""
    now = time.time()
    old = conn.execute("SELECT instance FROM devices WHERE id = ?", (body["device"],)).fetchone()
    conn.execute(
        "INSERT INTO devices (id, instance, profile, labels, runtimes, power, detected, agent_version, address, "
        "registered, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "instance = excluded.instance, profile = excluded.profile, labels = excluded.labels, "
        "runtimes = excluded.runtimes, power = excluded.power, detected = excluded.detected, "
        "agent_version = excluded.agent_version, address = excluded.address, registered = excluded.registered, "
        "last_seen = excluded.last_seen",
        (body["device"], body["instance"], body.get("profile"), _dumps(body.get("labels") or {}),
         _dumps(body.get("runtimes") or {}), _dumps(body.get("power") or {}), _dumps(body.get("detected") or {}),
         body.get("agent_version"), address, now, now))
    released = []
    if old is not None and old["instance"] != body["instance"]:
        for job in conn.execute("SELECT * FROM jobs WHERE state = 'leased' AND leased_to = ?", (body["device"],)):
            _end_lease(conn, job["lease_id"], now, "released", "the agent restarted (a new instance registered)")
            released.append((job["id"], _retry_or_fail(conn, job, now, retry=True)))
    return {"device": device_doc(conn, body["device"], now), "released": released}


def _check_device(conn: sqlite3.Connection, device: str, instance: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM devices WHERE id = ?", (device,)).fetchone()
    if row is None:
        raise RecordRefused(404, f"device '{device}' is not registered; register first (POST /v1/devices/register)")
    if row["instance"] != instance:
        raise RecordRefused(409, f"device '{device}' was registered by another agent since (instance {row['instance'][:8]}); "
                           "give every agent its own --name")
    return row


def lease(conn: sqlite3.Connection, device: str, instance: str) -> dict[str, Any] | None:
    """Lease the oldest queued job this device can run; None when there is none.

    Raises:
        RecordRefused: 404 unknown device, 409 another agent instance holds the id.
    """
    now = time.time()
    dev = _device_dict(_check_device(conn, device, instance))
    conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device))
    rows = conn.execute("SELECT * FROM jobs WHERE state = 'queued' AND (device = ? OR (device IS NULL AND profile = ?)) "
                        "ORDER BY id LIMIT 500", (device, dev["profile"])).fetchall()
    job = next((r for r in rows if can_run(dev, _job_match_fields(r))), None)
    if job is None:
        return None
    lease_id = uuid.uuid4().hex
    attempt = job["attempts"] + 1
    expires = now + job["lease_seconds"]
    conn.execute("UPDATE jobs SET state = 'leased', attempts = ?, lease_id = ?, leased_to = ?, lease_expires = ?, "
                 "updated = ? WHERE id = ?", (attempt, lease_id, device, expires, now, job["id"]))
    conn.execute("INSERT INTO leases (id, job_id, device, attempt, issued, expires) VALUES (?, ?, ?, ?, ?, ?)",
                 (lease_id, job["id"], device, attempt, now, expires))
    spec = json.loads(job["spec"])
    return {"job_id": job["id"], "lease_id": lease_id, "attempt": attempt, "max_attempts": job["max_attempts"],
            "lease_seconds": job["lease_seconds"], "lease_expires": expires,
            "heartbeat_s": heartbeat_interval(job["lease_seconds"]), "files": spec["files"], "target": spec["target"],
            "runtime": job["runtime"], "options": spec["options"], "timeout_s": spec["timeout_s"],
            "artifact_sha256": job["artifact_sha256"]}


def heartbeat_interval(lease_seconds: float) -> float:
    """How often an agent renews its lease: four times per lease, at most every 10 s."""
    return max(0.2, min(10.0, lease_seconds / 4.0))


def heartbeat(conn: sqlite3.Connection, device: str, instance: str, lease_ids: list[str]) -> dict[str, Any]:
    """Mark the device seen and renew the leases it still holds; the others are reported lost."""
    now = time.time()
    _check_device(conn, device, instance)
    conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device))
    status = {}
    for lease_id in lease_ids:
        job = conn.execute("SELECT id, lease_seconds FROM jobs WHERE lease_id = ? AND leased_to = ? AND state = 'leased'",
                           (lease_id, device)).fetchone()
        if job is None:
            status[lease_id] = "lost"
            continue
        expires = now + job["lease_seconds"]
        conn.execute("UPDATE jobs SET lease_expires = ? WHERE id = ?", (expires, job["id"]))
        conn.execute("UPDATE leases SET expires = ? WHERE id = ?", (expires, lease_id))
        status[lease_id] = "active"
    return {"leases": status}


def _end_lease(conn: sqlite3.Connection, lease_id: str | None, now: float, outcome: str, detail: str | None) -> None:
    if lease_id:
        conn.execute("UPDATE leases SET ended = ?, outcome = ?, detail = ? WHERE id = ? AND ended IS NULL",
                     (now, outcome, detail, lease_id))


def _attempt_summary(conn: sqlite3.Connection, job_id: int) -> str:
    parts = []
    for row in conn.execute("SELECT * FROM leases WHERE job_id = ? ORDER BY attempt", (job_id,)):
        parts.append(f"attempt {row['attempt']} on {row['device']}: {row['outcome'] or 'running'}"
                     + (f" ({row['detail']})" if row["detail"] else ""))
    return "; ".join(parts)


def _retry_or_fail(conn: sqlite3.Connection, job: sqlite3.Row, now: float, retry: bool) -> str:
    """Re-queue ``job`` when it may be retried and has attempts left, else fail it with the reason."""
    if retry and job["attempts"] < job["max_attempts"]:
        conn.execute("UPDATE jobs SET state = 'queued', lease_id = NULL, leased_to = NULL, lease_expires = NULL, "
                     "updated = ? WHERE id = ?", (now, job["id"]))
        return "queued"
    reason = (f"gave up after {job['attempts']} of {job['max_attempts']} attempts" if retry
              else f"attempt {job['attempts']} failed and is not retried")
    error = f"{reason}: {_attempt_summary(conn, job['id'])}"
    conn.execute("UPDATE jobs SET state = 'failed', error = ?, lease_id = NULL, leased_to = NULL, lease_expires = NULL, "
                 "updated = ? WHERE id = ?", (error, now, job["id"]))
    return "failed"


def expire_leases(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """Leases past their expiry (no heartbeat: the agent died, lost power or network): each job is
    re-queued, or failed with the reason once its attempts are used up."""
    now = time.time()
    changed = []
    for job in conn.execute("SELECT * FROM jobs WHERE state = 'leased' AND lease_expires < ?", (now,)).fetchall():
        _end_lease(conn, job["lease_id"], now, "expired",
                   f"no heartbeat from {job['leased_to']} for {job['lease_seconds']:g} s")
        changed.append((job["id"], _retry_or_fail(conn, job, now, retry=True)))
    return changed


def next_expiry(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT MIN(lease_expires) FROM jobs WHERE state = 'leased'").fetchone()
    return row[0]


def post_result(conn: sqlite3.Connection, uid: str, body_sha256: str, job_id: int, lease_id: str, device: str,
                report: dict[str, Any]) -> dict[str, Any]:
    """Store a result once: the same ``uid`` and body again is answered as a duplicate; a job keeps
    the first result that arrives (a late result of an expired attempt still counts when the job
    has none yet; any later one is refused).

    Raises:
        RecordRefused: 404 unknown job, 409 reused id / foreign lease / job already done or cancelled,
            422 a report of another artifact.
    """
    now = time.time()
    sub = conn.execute("SELECT * FROM submissions WHERE uid = ?", (uid,)).fetchone()
    if sub is not None:
        if sub["body_sha256"] != body_sha256:
            raise RecordRefused(409, f"result id '{uid}' was already used for a different result (job {sub['job_id']}); "
                               "an agent generates a new id for every job attempt")
        return {"result_id": sub["result_id"], "job_id": sub["job_id"], "duplicate": True}
    job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if job is None:
        raise RecordRefused(404, f"no job {job_id}")
    held = conn.execute("SELECT * FROM leases WHERE id = ? AND job_id = ?", (lease_id, job_id)).fetchone()
    if held is None:
        raise RecordRefused(409, f"lease '{lease_id}' was never issued for job {job_id}")
    if held["device"] != device:
        raise RecordRefused(409, f"lease '{lease_id}' of job {job_id} belongs to device '{held['device']}', not '{device}'")
    if job["state"] == "done":
        raise RecordRefused(409, f"job {job_id} already has result {job['result_id']}; this result (attempt "
                           f"{held['attempt']}) is not stored")
    if job["state"] == "cancelled":
        raise RecordRefused(409, f"job {job_id} was cancelled; its result is not stored")
    measured = report["artifact"]["sha256"]
    if measured != job["artifact_sha256"]:
        raise RecordRefused(422, f"the report measured an artifact with sha256 {measured}, but job {job_id} is for "
                           f"{job['artifact_sha256']}")
    result_id = results_mod.insert_result(conn, job["artifact_sha256"], device, report)
    conn.execute("INSERT INTO submissions (uid, body_sha256, result_id, job_id, lease_id, device, received) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (uid, body_sha256, result_id, job_id, lease_id, device, now))
    if job["state"] == "leased" and job["lease_id"] != lease_id:
        _end_lease(conn, job["lease_id"], now, "cancelled", f"the result of attempt {held['attempt']} arrived first")
    if held["ended"] is None:
        _end_lease(conn, lease_id, now, "done", None)
    else:
        conn.execute("UPDATE leases SET outcome = 'done', detail = ? WHERE id = ?",
                     (f"{held['outcome']} ({held['detail']}), then its result arrived", lease_id))
    conn.execute("UPDATE jobs SET state = 'done', result_id = ?, error = NULL, lease_id = NULL, leased_to = NULL, "
                 "lease_expires = NULL, updated = ? WHERE id = ?", (result_id, now, job_id))
    return {"result_id": result_id, "job_id": job_id, "duplicate": False}


def fail_job(conn: sqlite3.Connection, job_id: int, lease_id: str, device: str, error: str, retry: bool) -> dict:
    """An agent could not run its job: re-queue it (``retry``, attempts left) or fail it.

    Raises:
        RecordRefused: 404 unknown job, 409 the lease is not the job's current one.
    """
    now = time.time()
    job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if job is None:
        raise RecordRefused(404, f"no job {job_id}")
    if job["state"] != "leased" or job["lease_id"] != lease_id or job["leased_to"] != device:
        raise RecordRefused(409, f"lease '{lease_id}' is not the current lease of job {job_id} (state {job['state']}); "
                           "the failure is not recorded")
    _end_lease(conn, lease_id, now, "failed", error)
    state = _retry_or_fail(conn, job, now, retry)
    return job_doc(conn, job_id) | {"state": state}


def cancel_job(conn: sqlite3.Connection, job_id: int) -> dict[str, Any]:
    now = time.time()
    job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if job is None:
        raise RecordRefused(404, f"no job {job_id}")
    if job["state"] in TERMINAL:
        raise RecordRefused(409, f"job {job_id} is already {job['state']}")
    _end_lease(conn, job["lease_id"], now, "cancelled", "job cancelled")
    conn.execute("UPDATE jobs SET state = 'cancelled', lease_id = NULL, leased_to = NULL, lease_expires = NULL, "
                 "updated = ? WHERE id = ?", (now, job_id))
    return job_doc(conn, job_id)


# ---------------------------------------------------------------------- reads


def job_doc(conn: sqlite3.Connection, job_id: int, leases: bool = True) -> dict[str, Any] | None:
    row = conn.execute("SELECT j.*, a.file, a.precision, a.format, a.bytes, a.source_name FROM jobs j "
                       "JOIN artifacts a ON a.sha256 = j.artifact_sha256 WHERE j.id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    return _job_dict(conn, row, leases)


def _job_dict(conn: sqlite3.Connection, row: sqlite3.Row, leases: bool) -> dict[str, Any]:
    spec = json.loads(row["spec"])
    doc = {
        "id": row["id"], "state": row["state"], "created": row["created"], "updated": row["updated"],
        "profile": row["profile"], "device": row["device"], "labels": json.loads(row["labels"]),
        "runtime": row["runtime"],
        "artifact": {"sha256": row["artifact_sha256"], "file": row["file"], "precision": row["precision"],
                     "format": row["format"], "bytes": row["bytes"], "model": row["source_name"]},
        "build_dir": spec.get("build_dir"), "files": spec["files"], "target": spec["target"],
        "options": spec["options"], "timeout_s": spec["timeout_s"], "warnings": spec.get("warnings") or [],
        "attempts": row["attempts"], "max_attempts": row["max_attempts"], "lease_seconds": row["lease_seconds"],
        "leased_to": row["leased_to"], "lease_expires": row["lease_expires"], "result_id": row["result_id"],
        "error": row["error"],
    }
    if leases:
        doc["leases"] = [dict(r) for r in conn.execute(
            "SELECT id, device, attempt, issued, expires, ended, outcome, detail FROM leases WHERE job_id = ? "
            "ORDER BY attempt", (row["id"],))]
    return doc


def list_jobs(conn: sqlite3.Connection, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = ("SELECT j.*, a.file, a.precision, a.format, a.bytes, a.source_name FROM jobs j "
             "JOIN artifacts a ON a.sha256 = j.artifact_sha256")
    params: list[Any] = []
    if state:
        query += " WHERE j.state = ?"
        params.append(state)
    query += " ORDER BY j.id DESC LIMIT ?"
    params.append(limit)
    return [_job_dict(conn, row, leases=False) for row in conn.execute(query, params).fetchall()]


def device_doc(conn: sqlite3.Connection, device: str, now: float, offline_after: float = 60.0) -> dict | None:
    row = conn.execute("SELECT * FROM devices WHERE id = ?", (device,)).fetchone()
    if row is None:
        return None
    return _device_public(conn, row, now, offline_after)


def _device_public(conn: sqlite3.Connection, row: sqlite3.Row, now: float, offline_after: float) -> dict[str, Any]:
    d = _device_dict(row)
    d["jobs"] = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE state = 'leased' AND leased_to = ? ORDER BY id",
                                            (d["id"],))]
    d["online"] = now - d["last_seen"] <= offline_after
    d["state"] = ("busy" if d["jobs"] else "idle") if d["online"] else "offline"
    d.pop("instance", None)
    return d


def list_devices(conn: sqlite3.Connection, offline_after: float = 60.0) -> list[dict[str, Any]]:
    now = time.time()
    return [_device_public(conn, row, now, offline_after)
            for row in conn.execute("SELECT * FROM devices ORDER BY id").fetchall()]


def result_doc(conn: sqlite3.Connection, result_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT r.*, s.uid, s.job_id, s.lease_id FROM results r LEFT JOIN submissions s "
                       "ON s.result_id = r.id WHERE r.id = ?", (result_id,)).fetchone()
    if row is None:
        return None
    doc = dict(row)
    doc["report"] = json.loads(doc["report"])
    return doc


