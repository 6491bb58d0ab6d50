"""The record's database: the :class:`Store` that opens (checks, migrates) it and runs every
change in a writer that commits before answering, and every read on a pooled connection.

Durability: every change goes through a writer thread that commits before the future of the
request resolves, so a 2xx is only ever sent for a change that survives a killed server or a lost
machine. SQLite runs in WAL mode with ``synchronous=FULL`` and one writer: concurrent requests
are group-committed (every waiting operation in one transaction, each in its own savepoint, so
one refused request does not undo the others, then one sync). PostgreSQL has a few writers, one
transaction per operation (the server groups the commits itself); leases are taken with
``FOR UPDATE SKIP LOCKED`` and every other change locks the job row it changes first, so several
``edgec serve`` processes on one database never lease a job twice; a deadlock or serialization
failure is retried.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgec import results as results_mod
from edgec.collector.storage import schema
from edgec.collector.storage.connections import (
    NOTIFY_CHANNEL,
    PgConn,
    SqliteConn,
    db_errors,
    is_url,
    one_line,
    redact,
    retryable,
    row_factory,
)
from edgec.collector.storage.errors import StoreFailed
from edgec.collector.storage.pool import Pool
from edgec.errors import EdgecError

log = logging.getLogger(__name__)

MAX_BATCH = 256
PG_WRITERS = 4


def default_pool_size() -> int:
    """Read connections per server by default: two per CPU, between 4 and 16."""
    return max(4, min(16, 2 * (os.cpu_count() or 2)))


class Store:
    """The record: writer thread(s) that commit before answering, a small pool of read connections.

    Args:
        db: an SQLite file, or a ``postgresql://`` URL.
        synchronous: SQLite's ``synchronous`` setting; ``FULL`` syncs the WAL on every commit.
        pool_size: read connections at most (:func:`default_pool_size` when None).
    """

    def __init__(self, db: str | Path, synchronous: str = "FULL", pool_size: int | None = None):
        self.url = str(db) if is_url(db) else None
        self.dialect = "postgresql" if self.url else "sqlite"
        self.path = None if self.url else Path(db)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise EdgecError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self._queue: queue.Queue = queue.Queue()
        self._writers: list[threading.Thread] = []
        self._write_conns: list[Any] = []
        self._errors = db_errors()
        self.pool = Pool(self._connect_reader, pool_size or default_pool_size(), self._errors)
        self._epoch = time.time() - time.monotonic()
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

            raw = psycopg.connect(self.url, autocommit=True, row_factory=row_factory, connect_timeout=30,
                                  application_name=application_name())
            return PgConn(raw)
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False,
                               factory=SqliteConn)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _connect_reader(self):
        conn = self._connect()
        if conn.dialect == "sqlite":
            conn.execute("PRAGMA query_only = 1")
            conn.clock = self.clock
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
            raise EdgecError(f"cannot use '{self.name}' as the collector database: {one_line(exc)}") from exc
        except OSError as exc:
            raise EdgecError(f"cannot open '{self.name}': {exc.strerror or exc}") from exc
        self._write_conns = [conn] + [self._connect() for _ in range(PG_WRITERS - 1 if self.url else 0)]
        if conn.dialect == "sqlite":
            conn.clock = self.clock
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
            private(path, 0o600)
        private(path.parent, 0o700)
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
            schema.migrate_v1(conn)
            for statement in (results_mod.SCHEMA + schema.SCHEMA).split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("CREATE VIEW IF NOT EXISTS submissions AS" + schema.SUBMISSIONS_VIEW)
            schema.set_version(conn, self.name)
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
            conn.executescript(schema.pg_schema(results_mod.SCHEMA + schema.SCHEMA))
            conn.execute("CREATE OR REPLACE VIEW submissions AS" + schema.SUBMISSIONS_VIEW)
            schema.set_version(conn, self.name)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn

    def close(self) -> None:
        """Finish the queued writes, stop the writers, checkpoint the WAL (SQLite: the database file
        alone then holds the whole record) and close every connection."""
        if self._writers:
            for _ in self._writers:
                self._queue.put(None)
            for thread in self._writers:
                thread.join()
            self._writers = []
        self.pool.close()
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
            with self.pool.connection() as conn:
                try:
                    if conn.dialect == "sqlite":
                        conn.execute("BEGIN")
                    else:
                        self._begin(conn)
                    try:
                        return fn(conn, *args)
                    finally:
                        if conn.in_transaction:
                            conn.execute("COMMIT")
                except self._errors:
                    self.pool.discard(conn)  # a broken connection is not handed out again
                    raise
        except self._errors as exc:  # a query failed, or no connection could be made
            raise self._failed(exc) from exc

    def clock(self) -> float:
        """Now on the clock that decides lease expiry (seconds since the epoch, never stepping).

        SQLite: the server's monotonic clock, anchored to the wall clock once when the store opened
        (one collector per file, so one clock). PostgreSQL: the database's ``clock_timestamp()``
        (the storage functions read it in their own transaction; this is for the reaper's sleep).
        """
        return self._epoch + time.monotonic()

    def _failed(self, exc: BaseException) -> StoreFailed:
        self.last_error = f"{type(exc).__name__}: {one_line(exc)}"
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
                if isinstance(exc, self._errors) and retryable(exc) and attempt < 8:
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
            log.error("cannot reconnect to %s: %s", self.name, one_line(exc))

    # ------------------------------------------------------------------ PostgreSQL notifications

    def listen(self, callback: Callable[[str], None], stop: threading.Event) -> threading.Thread | None:
        """Call ``callback(payload)`` (from a thread) whenever another collector on this database
        changes jobs (payload ``done``: a result was stored); None for SQLite (one collector per
        file)."""
        if not self.url:
            return None

        def loop() -> None:
            while not stop.is_set():
                try:
                    conn = self._connect()
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not stop.is_set():
                        for notice in conn.raw.notifies(timeout=0.5):
                            callback(notice.payload)
                except self._errors as exc:
                    log.warning("listening for job changes: %s; retrying", one_line(exc))
                    stop.wait(1.0)
                    continue
                conn.close()

        thread = threading.Thread(target=loop, name="collector-listen", daemon=True)
        thread.start()
        return thread


def application_name() -> str:
    """How this server's connections are named on PostgreSQL (``pg_stat_activity``): one process's
    connections can be counted and told from another collector's."""
    return f"edgec serve {os.getpid()}"


def private(path: Path, mode: int) -> None:
    """Restrict ``path`` to its owner when it is more open (files 0600, directories 0700)."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, mode)
    except OSError as exc:
        log.warning("cannot restrict %s to its owner: %s", path, exc.strerror or exc)
