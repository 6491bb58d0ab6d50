"""The collector's record: devices, credentials, jobs and their leases, artifacts and results in
one database (SQLite by default, PostgreSQL for fleets that outgrow one host), uploaded files in
a content-addressed directory.

Durability: every change goes through a writer thread that commits before the future of the
request resolves, so a 2xx is only ever sent for a change that survives a killed server or a lost
machine. SQLite runs in WAL mode with ``synchronous=FULL`` and one writer: concurrent requests
are group-committed (every waiting operation in one transaction, each in its own savepoint, so
one refused request does not undo the others, then one sync). PostgreSQL has a few writers, one
transaction per operation (the server groups the commits itself); leases are taken with
``FOR UPDATE SKIP LOCKED`` and every other change locks the job row it changes first, so several
``edgec serve`` processes on one database never lease a job twice; a deadlock or serialization
failure is retried.

The ``artifacts`` and ``results`` tables are those of :mod:`edgec.results` (same DDL, same
insert functions), so ``edgec report`` reads the collector's file exactly as it reads the local
results store. Collector tables: ``blobs`` (uploaded files by sha256), ``devices``,
``credentials`` (enrollment tokens and device credentials, by the sha256 of their secret),
``jobs`` with ``job_labels`` (one row per label a job requires: the lease query matches labels
in SQL) and its result's submission (the agent's id of the result, unique in the schema: a
posted result is stored once; shown by the ``submissions`` view), and ``leases`` (one row per
attempt, with the agent instance that holds it).
"""

from __future__ import annotations

import concurrent.futures
import functools
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

COLLECTOR_VERSION = 2
MAX_BATCH = 256
PG_WRITERS = 4
READ_POOL = 8
SHA256 = re.compile(r"^[0-9a-f]{64}$")
TERMINAL = ("done", "failed", "cancelled")
NOTIFY_CHANNEL = "edgec_jobs"

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
CREATE TABLE IF NOT EXISTS credentials (
    id              TEXT PRIMARY KEY,
    device          TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('enrollment', 'device')),
    secret_sha256   TEXT NOT NULL,
    created         REAL NOT NULL,
    expires         REAL,
    used            REAL,
    revoked         REAL
);
CREATE INDEX IF NOT EXISTS credentials_device ON credentials (device);
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
    error           TEXT,
    result_uid      TEXT,
    result_digest   TEXT,
    result_lease    TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (lease_expires) WHERE state = 'leased';
CREATE UNIQUE INDEX IF NOT EXISTS jobs_result_uid ON jobs (result_uid) WHERE result_uid IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_result ON jobs (result_id) WHERE result_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_labels (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    label       TEXT NOT NULL,
    PRIMARY KEY (job_id, label)
);
CREATE TABLE IF NOT EXISTS leases (
    id          TEXT PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    device      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    issued      REAL NOT NULL,
    expires     REAL NOT NULL,
    ended       REAL,
    outcome     TEXT CHECK (outcome IS NULL OR outcome IN ('done', 'failed', 'expired', 'released', 'cancelled')),
    detail      TEXT,
    instance    TEXT
);
CREATE INDEX IF NOT EXISTS leases_job ON leases (job_id);
"""
# A stored result's submission (the agent's id of it, the digest of the post, the lease it came
# from) lives in its job's row: one row and two small index entries written per result, not a
# table with three unique indexes. The view shows it as a table.
SUBMISSIONS_VIEW = """
SELECT j.result_uid AS uid, j.result_digest AS body_sha256, j.result_id AS result_id, j.id AS job_id,
       j.result_lease AS lease_id, l.device AS device, j.updated AS received
FROM jobs j JOIN leases l ON l.id = j.result_lease WHERE j.result_uid IS NOT NULL
"""


class RecordRefused(Exception):
    """A request the record cannot take; ``status`` and ``message`` go back to the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class StoreFailed(Exception):
    """The database failed under a request (corrupt page, full disk, server gone): answered 503."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def is_url(db: str | Path) -> bool:
    """Whether ``--db`` names a PostgreSQL database rather than an SQLite file."""
    return str(db).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _pg_schema(sql: str) -> str:
    """The SQLite DDL in PostgreSQL's types (64-bit integers and floats, identity keys)."""
    sql = sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    return re.sub(r"\bINTEGER\b", "BIGINT", sql)


# ---------------------------------------------------------------------- connections of both kinds


class SqliteConn(sqlite3.Connection):
    """An SQLite connection that says which SQL it speaks."""

    dialect = "sqlite"
    lock = ""  # SQLite has one writer: no row locks
    skip_locked = ""

    def notify(self) -> None:
        """Other collectors on the database are told when jobs change (one process here: nothing)."""


class Row:
    """A PostgreSQL row read like an ``sqlite3.Row``: by position or by column name."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values):
        self._index = index
        self._values = values

    def __getitem__(self, key):
        return self._values[key if isinstance(key, int) else self._index[key]]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _row_factory(cursor):
    index = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: Row(index, values)


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    """A psycopg connection that takes the record's SQL (``?`` placeholders) like SQLite's."""

    dialect = "postgresql"
    lock = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, raw):
        self.raw = raw

    def execute(self, sql: str, params=None):
        if params:
            return self.raw.execute(_pg_sql(sql), params)
        return self.raw.execute(sql)

    def executescript(self, script: str) -> None:
        self.raw.execute(script)

    @property
    def in_transaction(self) -> bool:
        from psycopg import pq

        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def notify(self) -> None:
        self.raw.execute(f"NOTIFY {NOTIFY_CHANNEL}")  # delivered at commit

    def close(self) -> None:
        self.raw.close()


def _db_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:
        return tuple(errors)
    return (*errors, psycopg.Error)


def _retryable(exc: BaseException) -> bool:
    """A PostgreSQL conflict between two collectors that a fresh transaction resolves."""
    return getattr(exc, "sqlstate", None) in ("40001", "40P01")  # serialization failure, deadlock


class Store:
    """The record: writer thread(s) that commit before answering, a small pool of read connections.

    Args:
        db: an SQLite file, or a ``postgresql://`` URL.
        synchronous: SQLite's ``synchronous`` setting; ``FULL`` syncs the WAL on every commit.
    """

    def __init__(self, db: str | Path, synchronous: str = "FULL"):
        self.url = str(db) if is_url(db) else None
        self.dialect = "postgresql" if self.url else "sqlite"
        self.path = None if self.url else Path(db)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise EdgecError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self._queue: queue.Queue = queue.Queue()
        self._writers: list[threading.Thread] = []
        self._write_conns: list[Any] = []
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._readers: list[Any] = []
        self._readers_lock = threading.Lock()
        self._errors = _db_errors()
        self._lock = threading.Lock()  # SQLite: the one write connection, used by one thread at a time
        self.commits = 0  # transactions committed (group commits), for the benchmark
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        """The database as it may be shown (a URL without its password)."""
        return redact(self.url) if self.url else str(self.path)

    # ------------------------------------------------------------------ lifecycle

    def _connect(self):
        if self.url:
            import psycopg

            raw = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory, connect_timeout=30)
            return PgConn(raw)
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False,
                               factory=SqliteConn)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def open(self) -> Store:
        """Create or open the database (checked, migrated) and start the writer(s).

        Raises:
            EdgecError: the database cannot be opened or reached, fails ``PRAGMA quick_check``, is not
                a collector database, or is newer than this edgec.
        """
        if self.url:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise EdgecError("--db postgresql://... needs psycopg: pip install 'edgec[postgresql]'") from None
        try:
            conn = self._open_sqlite() if self.path else self._open_pg()
        except EdgecError:
            raise
        except self._errors as exc:
            raise EdgecError(f"cannot use '{self.name}' as the collector database: {_one_line(exc)}") from exc
        except OSError as exc:
            raise EdgecError(f"cannot open '{self.name}': {exc.strerror or exc}") from exc
        self._write_conns = [conn] + [self._connect() for _ in range(PG_WRITERS - 1 if self.url else 0)]
        for i, c in enumerate(self._write_conns):
            thread = threading.Thread(target=self._write_loop, args=(c,), name=f"collector-writer-{i}", daemon=True)
            thread.start()
            self._writers.append(thread)
        return self

    def _open_sqlite(self):
        path = self.path
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # WAL and shm files take its mode
        else:
            _private(path, 0o600)
        _private(path.parent, 0o700)
        conn = self._connect()
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as exc:  # a damaged header or schema page fails the check itself
            problems = [str(exc)]
        if problems != ["ok"]:
            conn.close()
            raise EdgecError(f"'{path}' fails PRAGMA quick_check ({'; '.join(' '.join(p.split()) for p in problems)[:300]}); it is damaged: "
                             "restore it from a backup, or move it aside to start a new record")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise EdgecError(f"cannot put '{path}' in WAL mode (got {mode}); use a local file system")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > results_mod.STORE_VERSION:
            raise EdgecError(f"'{path}' has results version {version}, newer than this edgec understands "
                             f"({results_mod.STORE_VERSION}); update edgec or use another --db")
        conn.execute("BEGIN IMMEDIATE")
        try:
            _migrate_v1(conn)
            for statement in (results_mod.SCHEMA + SCHEMA).split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("CREATE VIEW IF NOT EXISTS submissions AS" + SUBMISSIONS_VIEW)
            self._set_version(conn)
            conn.execute(f"PRAGMA user_version = {results_mod.STORE_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn

    def _open_pg(self):
        conn = self._connect()
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(8750)")  # two collectors starting at once
            conn.executescript(_pg_schema(results_mod.SCHEMA + SCHEMA))
            conn.execute("CREATE OR REPLACE VIEW submissions AS" + SUBMISSIONS_VIEW)
            self._set_version(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn

    def _set_version(self, conn) -> None:
        row = conn.execute("SELECT value FROM collector_meta WHERE key = 'version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO collector_meta (key, value) VALUES ('version', ?)", (str(COLLECTOR_VERSION),))
            return
        if int(row[0]) > COLLECTOR_VERSION:
            raise EdgecError(f"'{self.name}' is a collector database of version {row[0]}, newer than this edgec "
                             f"understands ({COLLECTOR_VERSION}); update edgec or use another --db")
        if int(row[0]) < 2:  # version 1 kept a job's labels only as JSON: one row per label now
            for job_id, labels in conn.execute("SELECT id, labels FROM jobs").fetchall():
                _insert_labels(conn, job_id, json.loads(labels))
        conn.execute("UPDATE collector_meta SET value = ? WHERE key = 'version'", (str(COLLECTOR_VERSION),))

    def close(self) -> None:
        """Finish the queued writes, stop the writers, checkpoint the WAL (SQLite: the database file
        alone then holds the whole record) and close every connection."""
        if self._writers:
            for _ in self._writers:
                self._queue.put(None)
            for thread in self._writers:
                thread.join()
            self._writers = []
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        for conn in self._write_conns:
            if conn.dialect == "sqlite":
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint at shutdown failed: %s", exc)
            conn.close()
        self._write_conns = []

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writes and reads

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Queue ``fn(conn, *args)`` for the writer; the future resolves after the commit."""
        if not self._writers:
            raise RuntimeError("store is not open")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, fn, args))
        return future

    def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in the writer and wait until it is committed."""
        return self.submit(fn, *args).result()

    def run_now(self, ops: list[tuple[Callable[..., Any], tuple]]) -> list[tuple[Any, BaseException | None]]:
        """Run SQLite operations ``fn(conn, *args)`` in the calling thread, in one transaction, and
        commit: (value, None) or (None, exception) for each, once committed. The writer thread's
        batch, if one is running, is waited for."""
        with self._lock:
            return self._run_batch(self._write_conns[0], ops)

    def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one read transaction on a pooled connection.

        Raises:
            StoreFailed: the database failed.
        """
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            try:
                conn = self._connect()
            except self._errors as exc:
                raise self._failed(exc) from exc
            if conn.dialect == "sqlite":
                conn.execute("PRAGMA query_only = 1")
            with self._readers_lock:
                self._readers.append(conn)
        try:
            if conn.dialect == "sqlite":
                conn.execute("BEGIN")
            else:
                self._begin(conn)
            try:
                return fn(conn, *args)
            finally:
                conn.execute("COMMIT")
        except self._errors as exc:
            with self._readers_lock:  # a broken connection is not handed out again
                if conn in self._readers:
                    self._readers.remove(conn)
            try:
                conn.close()
            except self._errors:
                pass
            raise self._failed(exc) from exc
        else:
            if self._pool.qsize() < READ_POOL:
                self._pool.put(conn)
            else:
                with self._readers_lock:
                    self._readers.remove(conn)
                conn.close()

    def _failed(self, exc: BaseException) -> StoreFailed:
        self.last_error = f"{type(exc).__name__}: {_one_line(exc)}"
        log.error("database failure: %s", self.last_error)
        return StoreFailed(f"the collector's database failed ({self.last_error}); see /v1/health")

    def _write_loop(self, conn) -> None:
        limit = MAX_BATCH if conn.dialect == "sqlite" else 1
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < limit:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            if conn.dialect == "sqlite":
                live = [item for item in batch if item[0].set_running_or_notify_cancel()]
                with self._lock:
                    outcomes = self._run_batch(conn, [(fn, args) for _, fn, args in live])
                for (future, _, _), (value, exc) in zip(live, outcomes, strict=True):
                    if exc is not None:
                        future.set_exception(exc)
                    else:
                        future.set_result(value)
            else:
                self._run_one(conn, *batch[0])
            if stop:
                return

    def _run_batch(self, conn, ops: list[tuple[Callable[..., Any], tuple]]) -> list[tuple[Any, BaseException | None]]:
        """SQLite: every operation in one transaction (each in its own savepoint, so one refused
        operation does not undo the others), one commit; the outcome of each."""
        if not ops:
            return []
        outcomes: list[tuple[Any, BaseException | None]] = []
        alone = len(ops) == 1  # no savepoint needed: a refusal rolls the transaction back
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args in ops:
                if not alone:
                    conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn, *args)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                    if alone:
                        conn.execute("ROLLBACK")
                    else:
                        conn.execute("ROLLBACK TO SAVEPOINT op")
                        conn.execute("RELEASE SAVEPOINT op")
                    outcomes.append((None, self._failed(exc) if isinstance(exc, self._errors) else exc))
                else:
                    if not alone:
                        conn.execute("RELEASE SAVEPOINT op")
                    outcomes.append((value, None))
            if conn.in_transaction:
                conn.execute("COMMIT")
                self.commits += 1
        except sqlite3.Error as exc:
            failed = self._failed(exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(None, failed)] * len(ops)
        return outcomes

    def _run_one(self, conn, future, fn, args) -> None:
        if not future.set_running_or_notify_cancel():
            return
        alone = getattr(fn, "one_statement", False)  # autocommit: the statement is its own transaction
        for attempt in range(1, 9):
            try:
                if alone:
                    if conn.raw.closed:
                        self._reconnect(conn)
                else:
                    self._begin(conn)
                value = fn(conn, *args)
                if not alone:
                    conn.execute("COMMIT")
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except self._errors:
                    pass
                if isinstance(exc, self._errors) and _retryable(exc) and attempt < 8:
                    time.sleep(0.002 * attempt)
                    continue
                if isinstance(exc, self._errors):
                    exc = self._failed(exc)
                    if conn.raw.closed:  # the server went away: the next operation reconnects
                        self._reconnect(conn)
                future.set_exception(exc)
                return
            self.commits += 1
            future.set_result(value)
            return

    def _begin(self, conn) -> None:
        """BEGIN; on a connection the server dropped while it was idle (a restart), reconnect once
        first: nothing of the operation has run yet, so it is safe to go on with a new one."""
        if conn.raw.closed:
            self._reconnect(conn)
        try:
            conn.execute("BEGIN")
        except self._errors:
            if not conn.raw.closed:
                raise
            self._reconnect(conn)
            conn.execute("BEGIN")

    def _reconnect(self, conn) -> None:
        try:
            conn.raw = self._connect().raw
        except self._errors as exc:
            log.error("cannot reconnect to %s: %s", self.name, _one_line(exc))

    # ------------------------------------------------------------------ PostgreSQL notifications

    def listen(self, callback: Callable[[], None], stop: threading.Event) -> threading.Thread | None:
        """Call ``callback`` (from a thread) whenever another collector on this database changes
        jobs; None for SQLite (one collector per file)."""
        if not self.url:
            return None

        def loop() -> None:
            while not stop.is_set():
                try:
                    conn = self._connect()
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not stop.is_set():
                        for _ in conn.raw.notifies(timeout=0.5):
                            callback()
                except self._errors as exc:
                    log.warning("listening for job changes: %s; retrying", _one_line(exc))
                    stop.wait(1.0)
                    continue
                conn.close()

        thread = threading.Thread(target=loop, name="collector-listen", daemon=True)
        thread.start()
        return thread


def _migrate_v1(conn) -> None:
    """A version 1 record (SQLite): the lease's agent instance, each result's submission in its job's
    row (the table becomes a view), partial indexes for queued and leased jobs."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "leases" in tables and "instance" not in [r[1] for r in conn.execute("PRAGMA table_info(leases)")]:
        conn.execute("ALTER TABLE leases ADD COLUMN instance TEXT")
    if "jobs" in tables:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
        for column in ("result_uid", "result_digest", "result_lease"):
            if column not in columns:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
    if "submissions" in tables:
        conn.execute("UPDATE jobs SET result_uid = s.uid, result_digest = s.body_sha256, result_lease = s.lease_id "
                     "FROM submissions s WHERE s.job_id = jobs.id")
        conn.execute("DROP TABLE submissions")
    conn.execute("DROP INDEX IF EXISTS jobs_state")
    conn.execute("DROP INDEX IF EXISTS jobs_queue")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _private(path: Path, mode: int) -> None:
    """Restrict ``path`` to its owner when it is more open (files 0600, directories 0700)."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, mode)
    except OSError as exc:
        log.warning("cannot restrict %s to its owner: %s", path, exc.strerror or exc)


# ---------------------------------------------------------------------- blob files


class Blobs:
    """Uploaded files by sha256 under ``root/ab/abcdef...``; a client's file name is never a path.
    Files are 0600 and directories 0700: only the collector's user reads them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if not SHA256.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def clean(self) -> int:
        """Remove the partial uploads a killed server left behind (at start, none is in progress)."""
        removed = 0
        for part in (self.root / "tmp").glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def prepare(self) -> None:
        """Create the directory (0700) and restrict an existing one.

        Raises:
            OSError: it cannot be created.
        """
        (self.root / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
        _private(self.root, 0o700)
        _private(self.root / "tmp", 0o700)

    def open_temp(self) -> tuple[Path, int]:
        """A new temporary upload file (0600): its path and an open descriptor.

        Raises:
            OSError: the directory cannot be written.
        """
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = tmp / f"{uuid.uuid4().hex}.part"
        return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def commit(self, temp: Path, sha256: str) -> Path:
        """Move a complete, synced upload into place (atomically) and sync its directory."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(temp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return final


# ---------------------------------------------------------------------- operations (writer)


def add_blob(conn, sha256: str, size: int) -> bool:
    """Record an uploaded file; False when it was already there."""
    cur = conn.execute("INSERT INTO blobs (sha256, bytes, added) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                       (sha256, size, time.time()))
    return cur.rowcount == 1


def blob_size(conn, sha256: str) -> int | None:
    row = conn.execute("SELECT bytes FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else int(row[0])


def _device_dict(row) -> dict[str, Any]:
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


def matching_devices(conn, job: dict[str, Any]) -> list[str]:
    """Ids of the registered devices that can run ``job`` (online or not)."""
    rows = conn.execute("SELECT * FROM devices ORDER BY id").fetchall()
    return [r["id"] for r in rows if can_run(_device_dict(r), job)]


def _insert_labels(conn, job_id: int, labels: dict[str, str]) -> None:
    for key, value in sorted(labels.items()):
        conn.execute("INSERT INTO job_labels (job_id, label) VALUES (?, ?)", (job_id, f"{key}={value}"))


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
    _insert_labels(conn, job_id, labels)
    conn.notify()
    doc = job_doc(conn, int(job_id))
    doc["matching_devices"] = matching_devices(conn, doc)
    return doc


def _release_jobs(conn, device: str, now: float, detail: str) -> list[tuple[int, str]]:
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
        released = _release_jobs(conn, body["device"], now, "the agent restarted (a new instance registered)")
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
    dev = _device_dict(_check_device(conn, device, instance))
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
    expires = now + job["lease_seconds"]
    conn.execute("UPDATE jobs SET state = 'leased', attempts = ?, lease_id = ?, leased_to = ?, lease_expires = ?, "
                 "updated = ? WHERE id = ?", (attempt, lease_id, device, expires, now, job["id"]))
    conn.execute("INSERT INTO leases (id, job_id, device, attempt, issued, expires, instance) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (lease_id, job["id"], device, attempt, now, expires, instance))
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
    for lease_id in lease_ids:
        job = conn.execute("SELECT id, lease_seconds FROM jobs WHERE lease_id = ? AND leased_to = ? AND state = 'leased'"
                           + conn.lock, (lease_id, device)).fetchone()
        if job is None:
            status[lease_id] = "lost"
            continue
        expires = now + job["lease_seconds"]
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
    re-queued, or failed with the reason once its attempts are used up."""
    now = time.time()
    changed = []
    for job in conn.execute("SELECT * FROM jobs WHERE state = 'leased' AND lease_expires < ? ORDER BY lease_expires"
                            + conn.skip_locked, (now,)).fetchall():
        _end_lease(conn, job["lease_id"], now, "expired",
                   f"no heartbeat from {job['leased_to']} for {job['lease_seconds']:g} s")
        changed.append((job["id"], _retry_or_fail(conn, job, now, retry=True)))
    if changed:
        conn.notify()
    return changed


def next_expiry(conn) -> float | None:
    row = conn.execute("SELECT MIN(lease_expires) FROM jobs WHERE state = 'leased'").fetchone()
    return row[0]


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
    f"pg_notify('{NOTIFY_CHANNEL}', '') END AS notified FROM c")


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
                    return await psycopg.AsyncConnection.connect(self.store.url, autocommit=True,
                                                                 row_factory=_row_factory, connect_timeout=30)
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
            except self.store._errors as exc:
                raise self.store._failed(exc) from exc
            try:
                cur = await conn.execute(_pg_sql(PG_POST), params)
                row = await cur.fetchone()
            except self.store._errors as exc:
                if _retryable(exc) and attempt < 8:
                    continue
                if conn.closed and attempt == 1:
                    continue  # dropped while idle (a database restart): once more on a new connection
                raise self.store._failed(exc) from exc
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
    if (job["state"] != "leased" or job["lease_id"] != lease_id or job["leased_to"] != device
            or (instance and held is not None and held["instance"] not in (None, instance))):
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
    if job["state"] in TERMINAL:
        raise RecordRefused(409, f"job {job_id} is already {job['state']}")
    _end_lease(conn, job["lease_id"], now, "cancelled", "job cancelled")
    conn.execute("UPDATE jobs SET state = 'cancelled', lease_id = NULL, leased_to = NULL, lease_expires = NULL, "
                 "updated = ? WHERE id = ?", (now, job_id))
    conn.notify()
    return job_doc(conn, job_id)


# ---------------------------------------------------------------------- credentials


CREDENTIAL = re.compile(r"^edgec-([de])\.([0-9a-f]{16})\.([A-Za-z0-9_-]{40,64})$")
KINDS = {"d": "device", "e": "enrollment"}


def _secret_sha256(secret: str) -> str:
    import hashlib

    # a 256-bit random secret needs no slow hash: what is stored cannot be used to authenticate
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_credential(conn, device: str, kind: str, expires: float | None) -> str:
    import secrets

    cid = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO credentials (id, device, kind, secret_sha256, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
                 (cid, device, kind, _secret_sha256(secret), time.time(), expires))
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
    released = _release_jobs(conn, device, now, "the device's credential was revoked")
    return {"device": device, "revoked": cur.rowcount, "released": [job for job, _ in released]}


def credential(conn, credential_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT id, device, kind, secret_sha256, expires, used, revoked FROM credentials WHERE id = ?",
                       (credential_id,)).fetchone()
    return None if row is None else dict(row)


def probe(conn) -> dict[str, Any]:
    """What /v1/health reports of the database: it answers, and how many jobs wait or run."""
    queued = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
    leased = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'leased'").fetchone()[0]
    results = conn.execute("SELECT MAX(id) FROM results").fetchone()[0]
    devices = conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
    return {"queued": queued, "leased": leased, "devices": devices, "last_result": results}


# ---------------------------------------------------------------------- reads


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


def device_doc(conn, device: str, now: float, offline_after: float = 60.0) -> dict | None:
    row = conn.execute("SELECT * FROM devices WHERE id = ?", (device,)).fetchone()
    if row is None:
        return None
    return _device_public(conn, row, now, offline_after)


def _device_public(conn, row, now: float, offline_after: float) -> dict[str, Any]:
    d = _device_dict(row)
    d["jobs"] = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE state = 'leased' AND leased_to = ? ORDER BY id",
                                            (d["id"],))]
    d["online"] = now - d["last_seen"] <= offline_after
    d["state"] = ("busy" if d["jobs"] else "idle") if d["online"] else "offline"
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


