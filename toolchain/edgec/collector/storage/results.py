"""A posted result, stored once and only from the job's current lease holder: one statement on
PostgreSQL (also run from the event loop by :class:`AsyncResults`), one checking query and the
writes on SQLite."""

from __future__ import annotations

import json
import time
from typing import Any

from edgec import results as results_mod
from edgec.collector.storage.connections import NOTIFY_CHANNEL, pg_sql, retryable, row_factory
from edgec.collector.storage.errors import RecordRefused
from edgec.collector.storage.store import Store, application_name

POST_CHECK = (
    "SELECT j.id, j.state, j.lease_id AS current_lease, j.result_id, j.artifact_sha256, l.id AS lease, "
    "l.device AS lease_device, l.attempt, l.outcome, l.detail, l.instance, s.id AS sub_job, "
    "s.result_id AS sub_result, s.result_digest AS sub_digest, s.result_lease AS sub_lease "
    "FROM (SELECT 1 AS one) q LEFT JOIN (SELECT * FROM jobs WHERE id = ?{lock}) j ON 1 = 1 "
    "LEFT JOIN leases l ON l.id = ? AND l.job_id = ? LEFT JOIN jobs s ON s.result_uid = ?")
# PostgreSQL: the check and the three writes (and the notice to other collectors) in one statement,
# which is its own transaction: one round trip. The writes happen only when the check passes;
# otherwise the checked row says why (post_result raises the same refusal as on SQLite).
PG_POST = (
    "WITH c AS (" + POST_CHECK.format(lock=" FOR UPDATE") + "), "
    "r AS (" + results_mod.INSERT_RESULT.split(" VALUES ")[0]
    + " SELECT " + ", ".join(["?"] * 24) + " FROM c WHERE c.sub_job IS NULL AND c.state = 'leased' "
    "AND c.current_lease = ? AND c.lease_device = ? AND (c.instance IS NULL OR c.instance = ?) "
    "AND c.artifact_sha256 = ? RETURNING id), "
    "l AS (UPDATE leases SET ended = ?, outcome = 'done' WHERE id = ? AND EXISTS (SELECT 1 FROM r)), "
    "u AS (UPDATE jobs SET state = 'done', result_id = (SELECT id FROM r), result_uid = ?, result_digest = ?, "
    "result_lease = ?, error = NULL, lease_id = NULL, leased_to = NULL, lease_expires = NULL, updated = ? "
    "WHERE id = ? AND EXISTS (SELECT 1 FROM r)) "
    f"SELECT c.*, (SELECT id FROM r) AS stored, CASE WHEN EXISTS (SELECT 1 FROM r) THEN "
    f"pg_notify('{NOTIFY_CHANNEL}', 'done') END AS notified FROM c")


def post_result(conn, uid: str, body_sha256: str, job_id: int, lease_id: str, device: str, instance: str,
                report: dict[str, Any], report_text: str | None = None) -> dict[str, Any]:
    """Store a result once, and only from the job's current lease holder: the same ``uid`` and body
    again is answered as a duplicate; a result of a lease that ended (expired, released to another
    agent instance, cancelled) or of another agent instance is refused, so a job never gets a
    measurement from an agent that no longer held it.

    Raises:
        RecordRefused: 404 unknown job, 409 reused id / lease not current / job already done or
            cancelled, 422 a report of another artifact.
    """
    now = time.time()
    values = results_mod.result_values(report["artifact"]["sha256"], device, report, report_text)
    if conn.dialect == "postgresql":
        row = conn.execute(PG_POST, (job_id, lease_id, job_id, uid, *values, lease_id, device, instance,
                                     report["artifact"]["sha256"], now, lease_id, uid, body_sha256, lease_id,
                                     now, job_id)).fetchone()
        if row["stored"] is not None:
            return {"result_id": row["stored"], "job_id": job_id, "duplicate": False}
        duplicate = _check_post(conn, row, uid, body_sha256, job_id, lease_id, device, instance, report)
        if duplicate is None:  # every check passed, yet nothing was written: a race with another collector
            raise RecordRefused(409, f"job {job_id} changed while its result was stored; post it again")
        return duplicate
    # SQLite (one writer): the job, the lease and an earlier result with this id in one statement
    row = conn.execute(POST_CHECK.format(lock=""), (job_id, lease_id, job_id, uid)).fetchone()
    duplicate = _check_post(conn, row, uid, body_sha256, job_id, lease_id, device, instance, report)
    if duplicate is not None:
        return duplicate
    result_id = conn.execute(results_mod.INSERT_RESULT, values).fetchone()[0]
    conn.execute("UPDATE leases SET ended = ?, outcome = 'done' WHERE id = ?", (now, lease_id))
    conn.execute("UPDATE jobs SET state = 'done', result_id = ?, result_uid = ?, result_digest = ?, result_lease = ?, "
                 "error = NULL, lease_id = NULL, leased_to = NULL, lease_expires = NULL, updated = ? WHERE id = ?",
                 (result_id, uid, body_sha256, lease_id, now, job_id))
    return {"result_id": result_id, "job_id": job_id, "duplicate": False}


post_result.one_statement = True  # on PostgreSQL: needs no transaction around it


class AsyncResults:
    """PostgreSQL: results stored from the event loop itself, on a few of psycopg's asynchronous
    connections (no thread switch, and the loop serves other requests while the server works).
    Only the one-statement success path runs here; a post that is refused or re-posted goes to the
    writers (:func:`post_result`), which say why.

    Args:
        store: the PostgreSQL store (its URL, and where failures are recorded).
        size: connections at most.
    """

    def __init__(self, store: Store, size: int = 4):
        self.store = store
        self.size = size
        self._free: list = []
        self._made = 0
        self._waiters: list = []

    async def _take(self):
        import asyncio

        import psycopg

        while True:
            if self._free:
                return self._free.pop()
            if self._made < self.size:
                self._made += 1
                try:
                    return await psycopg.AsyncConnection.connect(
                        self.store.url, autocommit=True, row_factory=row_factory, connect_timeout=30,
                        application_name=application_name())
                except BaseException:
                    self._made -= 1
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def _give(self, conn) -> None:
        if conn.closed:
            self._made -= 1
        else:
            self._free.append(conn)
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break

    async def post_result(self, uid: str, body_sha256: str, job_id: int, lease_id: str, device: str,
                          instance: str, report: dict[str, Any], report_text: str) -> dict[str, Any] | None:
        """The stored result, or None when it was not stored (the writers answer then).

        Raises:
            StoreFailed: the database failed.
        """
        now = time.time()
        values = results_mod.result_values(report["artifact"]["sha256"], device, report, report_text)
        params = (job_id, lease_id, job_id, uid, *values, lease_id, device, instance, report["artifact"]["sha256"],
                  now, lease_id, uid, body_sha256, lease_id, now, job_id)
        for attempt in range(1, 9):
            try:
                conn = await self._take()
            except self.store.errors as exc:
                raise self.store.failed(exc) from exc
            try:
                cur = await conn.execute(pg_sql(PG_POST), params)
                row = await cur.fetchone()
            except self.store.errors as exc:
                if retryable(exc) and attempt < 8:
                    continue
                if conn.closed and attempt == 1:
                    continue  # dropped while idle (a database restart): once more on a new connection
                raise self.store.failed(exc) from exc
            finally:
                self._give(conn)
            return None if row["stored"] is None else {"result_id": row["stored"], "job_id": job_id,
                                                       "duplicate": False}
        return None

    async def close(self) -> None:
        while self._free:
            await self._free.pop().close()


def _check_post(conn, row, uid: str, body_sha256: str, job_id: int, lease_id: str, device: str, instance: str,
                report: dict[str, Any]) -> dict[str, Any] | None:
    """The answer to a re-post (duplicate), None when the result may be stored.

    Raises:
        RecordRefused: why it may not.
    """
    if row["sub_job"] is not None:
        sub = {"id": row["sub_job"], "result_id": row["sub_result"], "result_lease": row["sub_lease"]}
        if row["sub_digest"] != body_sha256 and not _same_result(conn, sub, job_id, lease_id, device, report):
            raise RecordRefused(409, f"result id '{uid}' was already used for a different result (job {sub['id']}); "
                               "an agent generates a new id for every job attempt")
        return {"result_id": sub["result_id"], "job_id": sub["id"], "duplicate": True}
    job = held = row
    if row["id"] is None:
        raise RecordRefused(404, f"no job {job_id}")
    if row["lease"] is None:
        raise RecordRefused(409, f"lease '{lease_id}' was never issued for job {job_id}")
    if held["lease_device"] != device:
        raise RecordRefused(409, f"lease '{lease_id}' of job {job_id} belongs to device '{held['lease_device']}', "
                           f"not '{device}'")
    if job["state"] == "done":
        raise RecordRefused(409, f"job {job_id} already has result {job['result_id']}; this result (attempt "
                           f"{held['attempt']}) is not stored")
    if job["state"] == "cancelled":
        raise RecordRefused(409, f"job {job_id} was cancelled; its result is not stored")
    if job["state"] != "leased" or job["current_lease"] != lease_id:
        how = f"{held['outcome']}: {held['detail']}" if held["outcome"] else "not current"
        raise RecordRefused(409, f"lease '{lease_id}' of job {job_id} has ended ({how}); only the current lease "
                           "holder's result is stored")
    if held["instance"] is not None and held["instance"] != instance:
        raise RecordRefused(409, f"lease '{lease_id}' of job {job_id} is held by another agent instance of "
                           f"'{device}'; give every agent its own --name")
    measured = report["artifact"]["sha256"]
    if measured != job["artifact_sha256"]:
        raise RecordRefused(422, f"the report measured an artifact with sha256 {measured}, but job {job_id} is for "
                           f"{job['artifact_sha256']}")
    return None


def _same_result(conn, sub, job_id: int, lease_id: str, device: str, report: dict[str, Any]) -> bool:
    """Whether a re-post is the stored result as a document (its text may differ: key order, spaces)."""
    if (sub["id"], sub["result_lease"]) != (job_id, lease_id):
        return False
    held = conn.execute("SELECT device FROM leases WHERE id = ?", (lease_id,)).fetchone()
    row = conn.execute("SELECT report FROM results WHERE id = ?", (sub["result_id"],)).fetchone()
    return held is not None and held["device"] == device and row is not None and json.loads(row[0]) == report
