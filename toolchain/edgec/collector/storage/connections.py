"""Connections of both kinds: SQLite's, and PostgreSQL's (psycopg) made to take the same SQL
(``?`` placeholders, rows read by position or column name), with what each dialect needs to
lock rows and tell other collectors that jobs changed."""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from pathlib import Path

NOTIFY_CHANNEL = "edgec_jobs"


def is_url(db: str | Path) -> bool:
    """Whether ``--db`` names a PostgreSQL database rather than an SQLite file."""
    return str(db).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class SqliteConn(sqlite3.Connection):
    """An SQLite connection that says which SQL it speaks."""

    dialect = "sqlite"
    lock = ""  # SQLite has one writer: no row locks
    skip_locked = ""

    def notify(self) -> None:
        """Other collectors on the database are told when jobs change (one process here: nothing)."""

    def clock(self) -> float:
        """The lease clock (the store sets its own, monotonic one on the connections it makes)."""
        return time.time()


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


def row_factory(cursor):
    index = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: Row(index, values)


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
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
            return self.raw.execute(pg_sql(sql), params)
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


def db_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:
        return tuple(errors)
    return (*errors, psycopg.Error)


def retryable(exc: BaseException) -> bool:
    """A PostgreSQL conflict between two collectors that a fresh transaction resolves."""
    return getattr(exc, "sqlstate", None) in ("40001", "40P01")  # serialization failure, deadlock


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
