"""The record's database: the :class:`Store` interface that opens (checks, migrates) it, runs
every change in a writer that commits before answering and every read on a pooled connection,
with one implementation per database (:mod:`.sqlite_store`, :mod:`.postgres_store`).

Durability: every change goes through a writer thread (:mod:`.writer`) that commits before the
future of the request resolves, so a 2xx is only ever sent for a change that survives a killed
server or a lost machine. SQLite runs in WAL mode with ``synchronous=FULL`` and one writer:
concurrent requests are group-committed (every waiting operation in one transaction, each in its
own savepoint, so one refused request does not undo the others, then one sync). PostgreSQL has a
few writers, one transaction per operation (the server groups the commits itself); leases are
taken with ``FOR UPDATE SKIP LOCKED`` and every other change locks the job row it changes first,
so several ``edgec serve`` processes on one database never lease a job twice; a deadlock or
serialization failure is retried. Every transaction is opened, committed or rolled back by
:meth:`Store.transaction`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from edgec.collector.storage.connections import db_errors, is_url, one_line, redact, retryable
from edgec.collector.storage.errors import StoreFailed
from edgec.collector.storage.pool import Pool
from edgec.collector.storage.writer import Item, Writers
from edgec.errors import EdgecError

log = logging.getLogger(__name__)

#: tries of a PostgreSQL change that conflicts with another collector's (deadlock, serialization)
TRIES = 8


def default_pool_size() -> int:
    """Read connections per server by default: two per CPU, between 4 and 16."""
    return max(4, min(16, 2 * (os.cpu_count() or 2)))


class Store:
    """The record: writer thread(s) that commit before answering, a small pool of read connections.

    ``Store(db)`` makes the implementation for ``db``: an SQLite file, or a ``postgresql://`` URL.

    Args:
        db: an SQLite file, or a ``postgresql://`` URL.
        synchronous: SQLite's ``synchronous`` setting; ``FULL`` syncs the WAL on every commit.
        pool_size: read connections at most (:func:`default_pool_size` when None).
    """

    dialect: ClassVar[str]
    _implementations: ClassVar[dict[str, type[Store]]] = {}

    def __init_subclass__(cls, dialect: str, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.dialect = dialect
        Store._implementations[dialect] = cls

    def __new__(cls, db: str | Path, *args: Any, **kwargs: Any) -> Store:
        if cls is Store:
            cls = Store._implementations["postgresql" if is_url(db) else "sqlite"]
        return super().__new__(cls)

    def __init__(self, db: str | Path, synchronous: str = "FULL", pool_size: int | None = None):
        self.url = str(db) if is_url(db) else None
        self.path = None if self.url else Path(db)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise EdgecError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.errors = db_errors()  # the database's exception classes
        self.pool = Pool(self._connect_reader, pool_size or default_pool_size(), self.errors)
        self._writers: Writers | None = None
        self._write_conns: list[Any] = []
        self._epoch = time.time() - time.monotonic()
        self.commits = 0  # transactions committed (group commits): the dashboard's change mark
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        """The database as it may be shown (a URL without its password)."""
        return redact(self.url) if self.url else str(self.path)

    # ------------------------------------------------------------------ what each database does

    def connect(self):
        """A new connection (autocommit: transactions are opened by :meth:`transaction`)."""
        raise NotImplementedError

    def _connect_reader(self):
        return self.connect()

    def _open_database(self):
        """Check, create or migrate the database; the first write connection."""
        raise NotImplementedError

    def _start_writers(self, conn) -> Writers:
        """The writer threads, ``conn`` (from :meth:`_open_database`) the first one's connection."""
        raise NotImplementedError

    def _close_connection(self, conn) -> None:
        conn.close()

    def _begin(self, conn, statement: str) -> None:
        """Open a transaction (``statement``) on ``conn``."""
        conn.execute(statement)

    def _ready(self, conn) -> None:
        """Make ``conn`` usable for a statement that is its own transaction."""

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Store:
        """Create or open the database (checked, migrated) and start the writer(s).

        Raises:
            EdgecError: the database cannot be opened or reached, fails ``PRAGMA quick_check``, is not
                a collector database, or is newer than this edgec.
        """
        try:
            conn = self._open_database()
        except EdgecError:
            raise
        except self.errors as exc:
            raise EdgecError(f"cannot use '{self.name}' as the collector database: {one_line(exc)}") from exc
        except OSError as exc:
            raise EdgecError(f"cannot open '{self.name}': {exc.strerror or exc}") from exc
        self._writers = self._start_writers(conn)
        return self

    def close(self) -> None:
        """Finish the queued writes, stop the writers, close every connection (SQLite: after a WAL
        checkpoint, so the database file alone then holds the whole record)."""
        if self._writers is not None:
            self._writers.stop()
            self._writers = None
        self.pool.close()
        for conn in self._write_conns:
            self._close_connection(conn)
        self._write_conns = []

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def transaction(self, conn, begin: str | None = "BEGIN") -> Iterator[Any]:
        """The one place a transaction is opened and ended: ``begin`` (None: the statement run in
        the block is its own transaction), then a commit when the block ends, a rollback when it
        raises (a failed rollback does not hide why)."""
        if begin is None:
            self._ready(conn)
        else:
            self._begin(conn, begin)
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(*self.errors):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        if conn.in_transaction:
            conn.execute("COMMIT")

    def run_retrying(self, conn, fn: Callable[..., Any], args: tuple, begin: str | None = "BEGIN") -> Any:
        """``fn(conn, *args)`` in a :meth:`transaction`, tried again (up to :data:`TRIES` times)
        when it conflicts with another collector's transaction."""
        for attempt in range(1, TRIES + 1):
            try:
                with self.transaction(conn, begin):
                    return fn(conn, *args)
            except self.errors as exc:
                if not retryable(exc) or attempt == TRIES:
                    raise
            time.sleep(0.002 * attempt)
        raise AssertionError("unreachable")

    def failed(self, exc: BaseException) -> StoreFailed:
        """Record a database failure (shown by /v1/health) and the error a request gets for it."""
        self.last_error = f"{type(exc).__name__}: {one_line(exc)}"
        log.error("database failure: %s", self.last_error)
        return StoreFailed(f"the collector's database failed ({self.last_error}); see /v1/health")

    # ------------------------------------------------------------------ writes and reads

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Queue ``fn(conn, *args)`` for the writer; the future resolves after the commit."""
        if self._writers is None:
            raise RuntimeError("store is not open")
        return self._writers.submit(fn, args)

    def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in the writer and wait until it is committed."""
        return self.submit(fn, *args).result()

    def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one read transaction on a pooled connection.

        Raises:
            StoreFailed: the database failed.
        """
        try:
            with self.pool.connection() as conn:
                try:
                    with self.transaction(conn):
                        return fn(conn, *args)
                except self.errors:
                    self.pool.discard(conn)  # a broken connection is not handed out again
                    raise
        except self.errors as exc:  # a query failed, or no connection could be made
            raise self.failed(exc) from exc

    def clock(self) -> float:
        """Now on the clock that decides lease expiry (seconds since the epoch, never stepping).

        SQLite: the server's monotonic clock, anchored to the wall clock once when the store opened
        (one collector per file, so one clock). PostgreSQL: the database's ``clock_timestamp()``
        (the storage functions read it in their own transaction; this is for the reaper's sleep).
        """
        return self._epoch + time.monotonic()

    def listen(self, callback: Callable[[str], None], stop: threading.Event) -> threading.Thread | None:
        """Call ``callback(payload)`` (from a thread) whenever another collector on this database
        changes jobs (payload ``done``: a result was stored); None where no other collector can
        share the database."""
        return None


def resolve(futures: list[Item], outcomes: list[tuple[Any, BaseException | None]]) -> None:
    """Answer each queued change with its outcome: (value, None) or (None, exception)."""
    for (future, _, _), (value, exc) in zip(futures, outcomes, strict=True):
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


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
