"""The record in one SQLite file (WAL, ``synchronous=FULL``): one writer thread whose queued
changes are group-committed, each in its own savepoint; or the event loop's batch run at once
(:meth:`SqliteStore.run_now`)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from edgec import results as results_mod
from edgec.collector.storage import schema
from edgec.collector.storage.connections import SqliteConn
from edgec.collector.storage.store import Store, private, resolve
from edgec.collector.storage.writer import Item, Writers
from edgec.errors import EdgecError

log = logging.getLogger(__name__)

#: changes committed together at most (the ones queued while the writer was busy)
MAX_BATCH = 256

Outcome = tuple[Any, BaseException | None]


class SqliteStore(Store, dialect="sqlite"):
    """The record in an SQLite file (see :class:`~edgec.collector.storage.store.Store`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()  # the one write connection, used by one thread at a time

    def connect(self):
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False,
                               factory=SqliteConn)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _connect_reader(self):
        conn = self.connect()
        conn.execute("PRAGMA query_only = 1")
        conn.clock = self.clock
        return conn

    def _open_database(self):
        path = self.path
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # WAL and shm files take its mode
        else:
            private(path, 0o600)
        private(path.parent, 0o700)
        conn = self.connect()
        try:
            self._check(conn)
            with self.transaction(conn, "BEGIN IMMEDIATE"):
                schema.migrate_v1(conn)
                for statement in (results_mod.SCHEMA + schema.SCHEMA).split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("CREATE VIEW IF NOT EXISTS submissions AS" + schema.SUBMISSIONS_VIEW)
                schema.set_version(conn, self.name)
                conn.execute(f"PRAGMA user_version = {results_mod.STORE_VERSION}")
        except BaseException:
            conn.close()
            raise
        conn.clock = self.clock
        return conn

    def _check(self, conn) -> None:
        """Integrity, WAL mode, durability and the record's version, before anything is written."""
        path = self.path
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as exc:  # a damaged header or schema page fails the check itself
            problems = [str(exc)]
        if problems != ["ok"]:
            found = "; ".join(" ".join(p.split()) for p in problems)[:300]
            raise EdgecError(f"'{path}' fails PRAGMA quick_check ({found}); it is damaged: "
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

    def _start_writers(self, conn) -> Writers:
        self._write_conns = [conn]
        return Writers(self._write_conns, self._write_batch, MAX_BATCH)

    def _close_connection(self, conn) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint at shutdown failed: %s", exc)
        conn.close()

    def run_now(self, ops: list[tuple[Callable[..., Any], tuple]]) -> list[Outcome]:
        """Run operations ``fn(conn, *args)`` in the calling thread, in one transaction, and
        commit: (value, None) or (None, exception) for each, once committed. The writer thread's
        batch, if one is running, is waited for."""
        with self._lock:
            return self._run_batch(self._write_conns[0], ops)

    def _write_batch(self, conn, batch: list[Item]) -> None:
        live = [item for item in batch if item[0].set_running_or_notify_cancel()]
        with self._lock:
            outcomes = self._run_batch(conn, [(fn, args) for _, fn, args in live])
        resolve(live, outcomes)

    def _run_batch(self, conn, ops: list[tuple[Callable[..., Any], tuple]]) -> list[Outcome]:
        """Every operation in one transaction (each in its own savepoint, so one refused operation
        does not undo the others), one commit; the outcome of each."""
        if not ops:
            return []
        if len(ops) == 1:  # no savepoint needed: a refusal rolls the transaction back
            return [self._run_alone(conn, *ops[0])]
        outcomes: list[Outcome] = []
        try:
            with self.transaction(conn, "BEGIN IMMEDIATE"):
                for fn, args in ops:
                    conn.execute("SAVEPOINT op")
                    try:
                        value = fn(conn, *args)
                    except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                        conn.execute("ROLLBACK TO SAVEPOINT op")
                        conn.execute("RELEASE SAVEPOINT op")
                        outcomes.append((None, self._refusal(exc)))
                    else:
                        conn.execute("RELEASE SAVEPOINT op")
                        outcomes.append((value, None))
        except sqlite3.Error as exc:
            return [(None, self.failed(exc))] * len(ops)
        self.commits += 1
        return outcomes

    def _run_alone(self, conn, fn: Callable[..., Any], args: tuple) -> Outcome:
        try:
            with self.transaction(conn, "BEGIN IMMEDIATE"):
                value = fn(conn, *args)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            return None, self._refusal(exc)
        self.commits += 1
        return value, None

    def _refusal(self, exc: Exception) -> BaseException:
        """What the request of a failed operation gets: a database error is a failure of the store."""
        return self.failed(exc) if isinstance(exc, self.errors) else exc
