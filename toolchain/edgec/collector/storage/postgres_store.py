"""The record in a PostgreSQL database that several collectors share: a few writer threads, one
transaction per change (retried when it conflicts with another collector's), connections made
again after the server restarts, and notices from the other collectors (:mod:`.listen`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edgec import results as results_mod
from edgec.collector.storage import schema
from edgec.collector.storage.connections import PgConn, one_line, row_factory
from edgec.collector.storage.listen import listen
from edgec.collector.storage.store import Store, application_name
from edgec.collector.storage.writer import Item, Writers
from edgec.errors import EdgecError

log = logging.getLogger(__name__)

#: writer threads (and connections): the server groups their commits
WRITERS = 4


class PostgresStore(Store, dialect="postgresql"):
    """The record in a PostgreSQL database (see :class:`~edgec.collector.storage.store.Store`)."""

    def connect(self):
        import psycopg

        raw = psycopg.connect(self.url, autocommit=True, row_factory=row_factory, connect_timeout=30,
                              application_name=application_name())
        return PgConn(raw)

    def _open_database(self):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise EdgecError("--db postgresql://... needs psycopg: pip install 'edgec[postgresql]'") from None
        conn = self.connect()
        try:
            with self.transaction(conn):
                conn.execute("SELECT pg_advisory_xact_lock(8750)")  # two collectors starting at once
                conn.executescript(schema.pg_schema(results_mod.SCHEMA + schema.SCHEMA))
                conn.execute("CREATE OR REPLACE VIEW submissions AS" + schema.SUBMISSIONS_VIEW)
                schema.set_version(conn, self.name)
        except BaseException:
            conn.close()
            raise
        return conn

    def _start_writers(self, conn) -> Writers:
        self._write_conns = [conn] + [self.connect() for _ in range(WRITERS - 1)]
        return Writers(self._write_conns, self._write_one, 1)

    def _begin(self, conn, statement: str) -> None:
        """BEGIN; on a connection the server dropped while it was idle (a restart), reconnect once
        first: nothing of the operation has run yet, so it is safe to go on with a new one."""
        self._ready(conn)
        try:
            conn.execute(statement)
        except self.errors:
            if not conn.raw.closed:
                raise
            self._reconnect(conn)
            conn.execute(statement)

    def _ready(self, conn) -> None:
        if conn.raw.closed:
            self._reconnect(conn)

    def _reconnect(self, conn) -> None:
        try:
            conn.raw = self.connect().raw
        except self.errors as exc:
            log.error("cannot reconnect to %s: %s", self.name, one_line(exc))

    def _write_one(self, conn, batch: list[Item]) -> None:
        (future, fn, args), = batch
        if not future.set_running_or_notify_cancel():
            return
        # a statement that is its own transaction (autocommit) needs no BEGIN around it
        begin = None if getattr(fn, "one_statement", False) else "BEGIN"
        try:
            value = self.run_retrying(conn, fn, args, begin)
        except self.errors as exc:
            failed = self.failed(exc)
            if conn.raw.closed:  # the server went away: the next operation reconnects
                self._reconnect(conn)
            future.set_exception(failed)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            future.set_exception(exc)
        else:
            self.commits += 1
            future.set_result(value)

    def listen(self, callback: Callable[[str], None], stop: threading.Event) -> threading.Thread:
        return listen(self.connect, self.errors, callback, stop)
