"""A fixed-size pool of read connections: never more than its size open, each one handed back
on every path (a context manager), a broken one closed and replaced by a fresh one later."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Pool:
    """At most ``size`` connections made by ``connect``, lent out one thread at a time.

    Args:
        connect: makes a new connection.
        size: connections at most (a borrower waits when all of them are lent).
        errors: the database's exception classes (a failed ``connect`` raises one of them).
    """

    def __init__(self, connect: Callable[[], Any], size: int, errors: tuple[type[BaseException], ...]):
        if size < 1:
            raise ValueError(f"a pool needs at least one connection, got {size}")
        self.size = size
        self._connect = connect
        self._errors = errors
        self._idle: list[Any] = []  # the most recently used last: warm connections are reused first
        self._open = 0
        self._in_use = 0
        self._closed = False
        self._cond = threading.Condition()

    def stats(self) -> dict[str, int]:
        """What /v1/health shows: the pool's size, connections open and lent out now."""
        with self._cond:
            return {"size": self.size, "open": self._open, "in_use": self._in_use}

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection for the ``with`` block; back in the pool when it ends, however it ends."""
        conn = self._take()
        try:
            yield conn
        finally:
            self._give(conn)

    def discard(self, conn: Any) -> None:
        """Mark ``conn`` broken: it is closed instead of being handed out again."""
        conn.pool_broken = True

    def _take(self) -> Any:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the store is closed")
                if self._idle:
                    self._in_use += 1
                    return self._idle.pop()
                if self._open < self.size:
                    self._open += 1
                    self._in_use += 1
                    break
                self._cond.wait()
        try:  # connect outside the lock: other borrowers go on meanwhile
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._in_use -= 1
                self._cond.notify()
            raise

    def _give(self, conn: Any) -> None:
        with self._cond:
            self._in_use -= 1
            keep = not self._closed and not getattr(conn, "pool_broken", False)
            if keep:
                self._idle.append(conn)
            else:
                self._open -= 1
            self._cond.notify()
        if not keep:
            with contextlib.suppress(*self._errors):
                conn.close()

    def close(self) -> None:
        """Close the idle connections; those still lent are closed when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            with contextlib.suppress(*self._errors):
                conn.close()
