"""The writers' operations on devices, jobs and leases: register a device, queue a job, lease it
to a device that can run it, renew, expire, fail or cancel it; each runs in a writer
transaction (:meth:`edgec.collector.storage.store.Store.write`)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from edgec import results as results_mod
from edgec.agent.vocab import JOB_TERMINAL_STATES
from edgec.collector.storage.blobs import blob_size
from edgec.collector.storage.errors import RecordRefused
from edgec.collector.storage.reads import device_dict, device_doc, job_doc
from edgec.collector.storage.schema import insert_labels


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


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


def matching_devices(conn, job: dict[str, Any]) -> list[str]:
    """Ids of the registered devices that can run ``job`` (online or not)."""
    rows = conn.execute("SELECT * FROM devices ORDER BY id").fetchall()
    return [r["id"] for r in rows if can_run(device_dict(r), job)]


def lease_clock(conn) -> float:
    """Now on the one clock that decides lease expiry, in seconds since the epoch; it never steps.

    PostgreSQL: the database server's ``clock_timestamp()``, so collectors whose clocks disagree
    share one clock. SQLite (one collector per file): the server's monotonic clock, anchored to the
    wall clock when the record was opened (``conn.clock``). Creation and update times stay on the
    wall clock: they are shown, never compared.
    """
    if conn.dialect == "postgresql":
        return conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
    return conn.clock()


def create_job(conn, spec: dict[str, Any], default_lease: float, missing_files: list[str] | None = None) -> dict:
    """Queue a job; its files must have been uploaded (recorded, and on disk: ``missing_files`` names
    those the server found recorded but absent).

    Raises:
        RecordRefused: 409 when a file is missing.
    """
    missing = sorted(set(name for name, sha in spec["files"].items() if blob_size(conn, sha) is None)
                     | set(missing_files or ()))
    if missing:
        raise RecordRefused(409, f"files not uploaded yet: {', '.join(missing)}; upload each first with "
                           "PUT /v1/blobs/<sha256> (edgec profile --server does this)")
    record = spec["artifact"]
    results_mod.insert_artifact(conn, spec["manifest"], record, spec.get("build_dir"))
    now = time.time()
    body = {"files": spec["files"], "target": spec["target"], "options": spec["options"],
            "warnings": spec.get("warnings") or [], "timeout_s": spec["timeout_s"], "build_dir": spec.get("build_dir")}
    labels = spec.get("labels") or {}
    job_id = conn.execute(
        "INSERT INTO jobs (state, created, updated, profile, device, labels, runtime, artifact_sha256, spec, "
        "max_attempts, lease_seconds) VALUES ('queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (now, now, spec.get("profile"), spec.get("device"), _dumps(labels), spec["runtime"],
         record["sha256"], _dumps(body), spec["max_attempts"], spec.get("lease_seconds") or default_lease)).fetchone()[0]
    insert_labels(conn, job_id, labels)
    conn.notify()
    doc = job_doc(conn, int(job_id))
    doc["matching_devices"] = matching_devices(conn, doc)
    return doc


def release_jobs(conn, device: str, now: float, detail: str) -> list[tuple[int, str]]:
    released = []
    for job in conn.execute("SELECT * FROM jobs WHERE state = 'leased' AND leased_to = ? ORDER BY id" + conn.lock,
                            (device,)).fetchall():
        _end_lease(conn, job["lease_id"], now, "released", detail)
        released.append((job["id"], _retry_or_fail(conn, job, now, retry=True)))
    if released:
        conn.notify()
    return released


def register(conn, body: dict[str, Any], address: str | None) -> dict[str, Any]:
    """Add or update a device. A new agent instance under a known id means the previous one is gone
    (restarted, or another agent took the name): the jobs it held are released at once (re-queued
    within their attempt limit), and the previous instance is refused from then on."""
    now = time.time()
    old = conn.execute("SELECT instance FROM devices WHERE id = ?" + conn.lock, (body["device"],)).fetchone()
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
        released = release_jobs(conn, body["device"], now, "the agent restarted (a new instance registered)")
    return {"device": device_doc(conn, body["device"], now), "released": released}


def _check_device(conn, device: str, instance: str):
    row = conn.execute("SELECT * FROM devices WHERE id = ?" + conn.lock, (device,)).fetchone()
    if row is None:
        raise RecordRefused(404, f"device '{device}' is not registered; register first (POST /v1/devices/register)")
    if row["instance"] != instance:
        raise RecordRefused(409, f"device '{device}' was registered by another agent since (instance {row['instance'][:8]}); "
                           "give every agent its own --name")
    return row


def lease(conn, device: str, instance: str) -> dict[str, Any] | None:
    """Lease the oldest queued job this device can run; None when there is none. The whole match
    (id or profile, every label, the runtime) is one query, so jobs this device cannot run never
    hide one it can, however many are queued ahead.

    Raises:
        RecordRefused: 404 unknown device, 409 another agent instance holds the id.
    """
    now = time.time()
    dev = device_dict(_check_device(conn, device, instance))
    conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device))
    pairs = [f"{k}={v}" for k, v in sorted(dev["labels"].items())]
    runtimes = sorted(dev["runtimes"])
    query = ("SELECT * FROM jobs j WHERE j.state = 'queued' AND (j.device = ? OR (j.device IS NULL AND j.profile = ?)) "
             "AND (j.runtime = 'auto'" + (f" OR j.runtime IN ({', '.join('?' * len(runtimes))})" if runtimes else "")
             + ") AND NOT EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = j.id"
             + (f" AND l.label NOT IN ({', '.join('?' * len(pairs))})" if pairs else "")
             + ") ORDER BY j.id LIMIT 1" + conn.skip_locked)
    job = conn.execute(query, (device, dev["profile"], *runtimes, *pairs)).fetchone()
    if job is None:
        return None
    lease_id = uuid.uuid4().hex
    attempt = job["attempts"] + 1
    clock = lease_clock(conn)
    expires = clock + job["lease_seconds"]
    conn.execute("UPDATE jobs SET state = 'leased', attempts = ?, lease_id = ?, leased_to = ?, lease_expires = ?, "
                 "updated = ? WHERE id = ?", (attempt, lease_id, device, expires, now, job["id"]))
    conn.execute("INSERT INTO leases (id, job_id, device, attempt, issued, expires, instance) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (lease_id, job["id"], device, attempt, clock, expires, instance))
    spec = json.loads(job["spec"])
    return {"job_id": job["id"], "lease_id": lease_id, "attempt": attempt, "max_attempts": job["max_attempts"],
            "lease_seconds": job["lease_seconds"], "lease_expires": expires,
            "heartbeat_s": heartbeat_interval(job["lease_seconds"]), "files": spec["files"], "target": spec["target"],
            "runtime": job["runtime"], "options": spec["options"], "timeout_s": spec["timeout_s"],
            "artifact_sha256": job["artifact_sha256"]}


def heartbeat_interval(lease_seconds: float) -> float:
    """How often an agent renews its lease: four times per lease, at most every 10 s."""
    return max(0.2, min(10.0, lease_seconds / 4.0))


def heartbeat(conn, device: str, instance: str, lease_ids: list[str]) -> dict[str, Any]:
    """Mark the device seen and renew the leases it still holds; the others are reported lost.

    Raises:
        RecordRefused: 404 unknown device, 409 another agent instance registered under this id.
    """
    now = time.time()
    _check_device(conn, device, instance)
    conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device))
    status = {}
    clock = lease_clock(conn) if lease_ids else 0.0
    for lease_id in lease_ids:
        job = conn.execute("SELECT id, lease_seconds FROM jobs WHERE lease_id = ? AND leased_to = ? AND state = 'leased'"
                           + conn.lock, (lease_id, device)).fetchone()
        if job is None:
            status[lease_id] = "lost"
            continue
        expires = clock + job["lease_seconds"]
        conn.execute("UPDATE jobs SET lease_expires = ? WHERE id = ?", (expires, job["id"]))
        conn.execute("UPDATE leases SET expires = ? WHERE id = ?", (expires, lease_id))
        status[lease_id] = "active"
    return {"leases": status}


def _end_lease(conn, lease_id: str | None, now: float, outcome: str, detail: str | None) -> None:
    if lease_id:
        conn.execute("UPDATE leases SET ended = ?, outcome = ?, detail = ? WHERE id = ? AND ended IS NULL",
                     (now, outcome, detail, lease_id))


def _attempt_summary(conn, job_id: int) -> str:
    parts = []
    for row in conn.execute("SELECT * FROM leases WHERE job_id = ? ORDER BY attempt", (job_id,)):
        parts.append(f"attempt {row['attempt']} on {row['device']}: {row['outcome'] or 'running'}"
                     + (f" ({row['detail']})" if row["detail"] else ""))
    return "; ".join(parts)


def _retry_or_fail(conn, job, now: float, retry: bool) -> str:
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


def expire_leases(conn) -> list[tuple[int, str]]:
    """Leases past their expiry (no heartbeat: the agent died, lost power or network): each job is
    re-queued, or failed with the reason once its attempts are used up. Expiry is read on
    :func:`lease_clock`, so a step of the wall clock expires nothing."""
    now = time.time()
    changed = []
    for job in conn.execute("SELECT * FROM jobs WHERE state = 'leased' AND lease_expires < ? ORDER BY lease_expires"
                            + conn.skip_locked, (lease_clock(conn),)).fetchall():
        _end_lease(conn, job["lease_id"], now, "expired",
                   f"no heartbeat from {job['leased_to']} for {job['lease_seconds']:g} s")
        changed.append((job["id"], _retry_or_fail(conn, job, now, retry=True)))
    if changed:
        conn.notify()
    return changed


def next_expiry(conn) -> float | None:
    """Seconds until the next lease expires on :func:`lease_clock` (negative: past); None when no
    job is leased."""
    row = conn.execute("SELECT MIN(lease_expires) FROM jobs WHERE state = 'leased'").fetchone()
    return None if row[0] is None else row[0] - lease_clock(conn)


def renew_after_restart(conn) -> int:
    """SQLite, when a collector starts: every live lease gets one full lease from now. The agents
    could not renew while the server was down, and the clock of the record restarts with the
    server (a wall-clock step while it was down must not expire them all at once); an agent that
    is gone still loses its job one lease later."""
    clock = lease_clock(conn)
    jobs = conn.execute("SELECT id, lease_id, lease_seconds FROM jobs WHERE state = 'leased'").fetchall()
    for job in jobs:
        conn.execute("UPDATE jobs SET lease_expires = ? WHERE id = ?", (clock + job["lease_seconds"], job["id"]))
        conn.execute("UPDATE leases SET expires = ? WHERE id = ?", (clock + job["lease_seconds"], job["lease_id"]))
    return len(jobs)


def fail_job(conn, job_id: int, lease_id: str, device: str, error: str, retry: bool,
             instance: str | None = None) -> dict:
    """An agent could not run its job: re-queue it (``retry``, attempts left) or fail it.

    Raises:
        RecordRefused: 404 unknown job, 409 the lease is not the job's current one.
    """
    now = time.time()
    job = conn.execute("SELECT * FROM jobs WHERE id = ?" + conn.lock, (job_id,)).fetchone()
    if job is None:
        raise RecordRefused(404, f"no job {job_id}")
    held = conn.execute("SELECT instance FROM leases WHERE id = ?", (lease_id,)).fetchone()
    # A lease taken by a known agent instance is failed by that instance only: a report without
    # an instance (a stale agent) cannot fail the job of the agent that holds it now.
    if (job["state"] != "leased" or job["lease_id"] != lease_id or job["leased_to"] != device
            or (held is not None and held["instance"] is not None and held["instance"] != instance)):
        raise RecordRefused(409, f"lease '{lease_id}' is not the current lease of job {job_id} (state {job['state']}); "
                           "the failure is not recorded")
    _end_lease(conn, lease_id, now, "failed", error)
    state = _retry_or_fail(conn, job, now, retry)
    conn.notify()
    return job_doc(conn, job_id) | {"state": state}


def cancel_job(conn, job_id: int) -> dict[str, Any]:
    now = time.time()
    job = conn.execute("SELECT * FROM jobs WHERE id = ?" + conn.lock, (job_id,)).fetchone()
    if job is None:
        raise RecordRefused(404, f"no job {job_id}")
    if job["state"] in JOB_TERMINAL_STATES:
        raise RecordRefused(409, f"job {job_id} is already {job['state']}")
    _end_lease(conn, job["lease_id"], now, "cancelled", "job cancelled")
    conn.execute("UPDATE jobs SET state = 'cancelled', lease_id = NULL, leased_to = NULL, lease_expires = NULL, "
                 "updated = ? WHERE id = ?", (now, job_id))
    conn.notify()
    return job_doc(conn, job_id)
