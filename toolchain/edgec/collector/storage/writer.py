"""The record's writer threads: every change is queued, taken by a writer with the ones queued
behind it (up to a batch), run on the writer's own connection and answered through its future
once committed."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any

#: a queued change: the future that answers it, ``fn`` and its arguments (``fn(conn, *args)``)
Item = tuple[concurrent.futures.Future, Callable[..., Any], tuple]


class Writers:
    """One thread per connection, all taking from one queue.

    Args:
        conns: the write connections, one thread each.
        run: runs a batch of items on a connection and resolves their futures.
        batch: items taken at most at once (the ones already queued, never waited for).
    """

    def __init__(self, conns: list[Any], run: Callable[[Any, list[Item]], None], batch: int):
        self._queue: queue.Queue = queue.Queue()
        self._run = run
        self._batch = batch
        self._threads = [threading.Thread(target=self._loop, args=(conn,), name=f"collector-writer-{i}",
                                          daemon=True) for i, conn in enumerate(conns)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], args: tuple) -> concurrent.futures.Future:
        """Queue ``fn(conn, *args)``; the future resolves once it is committed."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, fn, args))
        return future

    def stop(self) -> None:
        """Run what is queued, then stop every thread (returns once they have)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _take(self) -> tuple[list[Item], bool]:
        """The next item and those queued behind it (up to a batch); True when told to stop."""
        item = self._queue.get()
        if item is None:
            return [], True
        batch = [item]
        while len(batch) < self._batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self, conn) -> None:
        while True:
            batch, stop = self._take()
            if batch:
                self._run(conn, batch)
            if stop:
                return
