"""Reads of the record: jobs, devices and results as the API shows them, the health probe, and
the rows of ``edgec report``."""

from __future__ import annotations

import json
import time
from typing import Any


def job_doc(conn, job_id: int, leases: bool = True) -> dict[str, Any] | None:
    row = conn.execute("SELECT j.*, a.file, a.precision, a.format, a.bytes, a.source_name FROM jobs j "
                       "JOIN artifacts a ON a.sha256 = j.artifact_sha256 WHERE j.id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    return _job_dict(conn, row, leases)


def _job_dict(conn, row, leases: bool) -> dict[str, Any]:
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


def list_jobs(conn, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = ("SELECT j.*, a.file, a.precision, a.format, a.bytes, a.source_name FROM jobs j "
             "JOIN artifacts a ON a.sha256 = j.artifact_sha256")
    params: list[Any] = []
    if state:
        query += " WHERE j.state = ?"
        params.append(state)
    query += " ORDER BY j.id DESC LIMIT ?"
    params.append(limit)
    return [_job_dict(conn, row, leases=False) for row in conn.execute(query, params).fetchall()]


def device_dict(row) -> dict[str, Any]:
    d = dict(row)
    for key in ("labels", "runtimes", "power", "detected"):
        d[key] = json.loads(d[key])
    return d


def device_doc(conn, device: str, now: float, offline_after: float = 60.0) -> dict | None:
    row = conn.execute("SELECT * FROM devices WHERE id = ?", (device,)).fetchone()
    if row is None:
        return None
    return _device_public(conn, row, now, offline_after)


def _device_public(conn, row, now: float, offline_after: float) -> dict[str, Any]:
    d = device_dict(row)
    d["jobs"] = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE state = 'leased' AND leased_to = ? ORDER BY id",
                                            (d["id"],))]
    d["online"] = now - d["last_seen"] <= offline_after
    d["state"] = ("busy" if d["jobs"] else "idle") if d["online"] else "offline"
    # A device whose every credential was revoked is cut off, whatever its agent last did (a
    # device run with the admin token has no credential and is never shown revoked).
    known, live = conn.execute("SELECT COUNT(*), COALESCE(SUM(CASE WHEN revoked IS NULL THEN 1 ELSE 0 END), 0) "
                               "FROM credentials WHERE device = ?", (d["id"],)).fetchone()
    if known and not live:
        d["state"] = "revoked"
        d["online"] = False
    d.pop("instance", None)
    return d


def list_devices(conn, offline_after: float = 60.0) -> list[dict[str, Any]]:
    now = time.time()
    return [_device_public(conn, row, now, offline_after)
            for row in conn.execute("SELECT * FROM devices ORDER BY id").fetchall()]


def result_doc(conn, result_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT r.*, j.result_uid AS uid, j.id AS job_id, j.result_lease AS lease_id FROM results r "
                       "LEFT JOIN jobs j ON j.result_id = r.id WHERE r.id = ?", (result_id,)).fetchone()
    if row is None:
        return None
    doc = dict(row)
    doc["report"] = json.loads(doc["report"])
    return doc


def probe(conn) -> dict[str, Any]:
    """What /v1/health reports of the database: it answers, and how many jobs wait or run."""
    queued = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
    leased = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'leased'").fetchone()[0]
    results = conn.execute("SELECT MAX(id) FROM results").fetchone()[0]
    devices = conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
    return {"queued": queued, "leased": leased, "devices": devices, "last_result": results}


# ---------------------------------------------------------------------- the dashboard's reads
# Only the columns its tables show: no job spec (it holds the build's manifest) is read or parsed.


def change_mark(conn) -> str:
    """PostgreSQL: a mark that moves whenever a write transaction of the cluster completes (a
    fresh snapshot: the next transaction id and those still running); equal marks mean nothing
    was committed in between, by this collector or any other on the database."""
    return "x" + str(conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0])


def queue_jobs(conn, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs as the Queue page shows them."""
    rows = conn.execute(
        "SELECT j.id, j.state, j.created, j.profile, j.device, j.labels, j.attempts, j.max_attempts, j.leased_to, "
        "j.result_id, SUBSTR(j.error, 1, 200) AS error, a.file, a.precision, a.source_name FROM jobs j "
        "JOIN artifacts a ON a.sha256 = j.artifact_sha256 ORDER BY j.id DESC LIMIT ?", (limit,)).fetchall()
    out = []
    for row in rows:
        job = dict(row)
        job["labels"] = json.loads(job["labels"])
        job["artifact"] = {"file": job.pop("file"), "precision": job.pop("precision"),
                           "model": job.pop("source_name")}
        out.append(job)
    return out


def fleet_devices(conn, held_shown: int = 3) -> list[dict[str, Any]]:
    """Every device as the Fleet page shows it, with the first ``held_shown`` jobs it holds (and
    how many it holds) and whether every credential it had was revoked: three queries, whatever
    the number of devices or jobs."""
    devices = [device_dict(row) for row in conn.execute(
        "SELECT id, profile, labels, runtimes, power, detected, last_seen FROM devices ORDER BY id").fetchall()]
    held: dict[str, list[dict[str, Any]]] = {}
    count: dict[str, int] = {}
    for row in conn.execute(
            "SELECT h.id, h.leased_to, h.held, a.file, a.precision FROM (SELECT id, leased_to, artifact_sha256, "
            "ROW_NUMBER() OVER (PARTITION BY leased_to ORDER BY id) AS n, "
            "COUNT(*) OVER (PARTITION BY leased_to) AS held FROM jobs WHERE state = 'leased') h "
            "JOIN artifacts a ON a.sha256 = h.artifact_sha256 WHERE h.n <= ? ORDER BY h.id", (held_shown,)).fetchall():
        held.setdefault(row["leased_to"], []).append(
            {"id": row["id"], "artifact": {"file": row["file"], "precision": row["precision"]}})
        count[row["leased_to"]] = row["held"]
    cut = {row[0] for row in conn.execute(
        "SELECT device FROM credentials GROUP BY device "
        "HAVING SUM(CASE WHEN revoked IS NULL THEN 1 ELSE 0 END) = 0").fetchall()}
    for d in devices:
        d["held"] = held.get(d["id"], [])
        d["held_count"] = count.get(d["id"], 0)
        d["revoked"] = d["id"] in cut
    return devices


def queue_mark(conn, limit: int) -> tuple:
    """What moves when any of the newest ``limit`` jobs changes as the Queue page shows it: every
    change of a job's state, holder, attempts or result sets its ``updated`` to a later time."""
    row = conn.execute("SELECT COUNT(*), MAX(id), SUM(updated) FROM "
                       "(SELECT id, updated FROM jobs ORDER BY id DESC LIMIT ?) newest", (limit,)).fetchone()
    return tuple(row)


def results_mark(conn) -> int | None:
    """What moves when a result is stored (results and their artifacts are never changed)."""
    return conn.execute("SELECT MAX(id) FROM results").fetchone()[0]


class LatestRows:
    """The record's results as :func:`edgec.report.select_results` reads a results store, with the
    latest runs found in one pass over the results' (artifact, device) index, not one lookup per
    stored result: the dashboard's Results page reads them on every change of the record."""

    def __init__(self, conn):
        self.conn = conn

    def rows(self, *, device: str | None = None, latest: bool = True) -> list[dict[str, Any]]:
        from edgec import results

        if device is not None or not latest:
            return results.query_rows(self.conn, device=device, latest=latest)
        return [dict(row) for row in self.conn.execute(
            "SELECT r.*, a.file, a.format, a.precision, a.bytes, a.target, a.profile, a.source_sha256, "
            "a.source_name, a.accuracy, a.float_accuracy, a.accuracy_drop, a.build_dir "
            "FROM results r JOIN artifacts a ON a.sha256 = r.artifact_sha256 "
            "WHERE r.id IN (SELECT MAX(id) FROM results GROUP BY artifact_sha256, device) "
            "ORDER BY a.source_name, r.device, r.latency_median_ms")]

    def artifacts(self) -> list[dict[str, Any]]:
        from edgec import results

        return results.query_artifacts(self.conn)
