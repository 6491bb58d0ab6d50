"""What the application runs on the event loop: long polls woken when jobs change, and the SQLite
record's changes batched per turn of the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edgec.collector.storage.store import Store


class Changes:
    """Wakes long polls when jobs change. Two kinds of waiters: the agents' lease polls, woken
    when a job may have become leasable (queued, re-queued, released), and the waits on a job's
    end, woken by every change. A stored result wakes only the latter: with a thousand idle agents
    polling, each result would otherwise cost a thousand lease attempts."""

    def __init__(self):
        self._event = asyncio.Event()
        self._queue = asyncio.Event()

    def snapshot(self) -> asyncio.Event:
        """The event of the next change of any kind."""
        return self._event

    def snapshot_queue(self) -> asyncio.Event:
        """The event of the next change that may give a job to lease."""
        return self._queue

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()
        self._queue.set()
        self._queue = asyncio.Event()

    def notify_finished(self) -> None:
        """A job ended (its result stored): nothing new to lease."""
        self._event.set()
        self._event = asyncio.Event()


async def _disconnected(request) -> bool:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return True


async def wait_change(request, event: asyncio.Event, timeout: float) -> bool:
    """Wait until jobs change, the client disconnects or ``timeout`` passes; True when it disconnected."""
    changed = asyncio.ensure_future(event.wait())
    gone = asyncio.ensure_future(_disconnected(request))
    done, pending = await asyncio.wait({changed, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return gone in done


class LoopWriter:
    """The SQLite record's changes, run by the event loop itself: every change requested during one
    turn of the loop is run in one transaction (each in its own savepoint) and committed together
    at the end of that turn, before any of them is answered. One request alone costs no thread
    switch; many at once share one sync of the WAL. Reads stay on their threads meanwhile."""

    def __init__(self, store: Store):
        self.store = store
        self.pending: list[tuple[asyncio.Future, Callable[..., Any], tuple]] = []
        self.scheduled = False

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((future, fn, args))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.flush)
        return await future

    def flush(self) -> None:
        self.scheduled = False
        batch, self.pending = [item for item in self.pending if not item[0].cancelled()], []
        if not batch:
            return
        outcomes = self.store.run_now([(fn, args) for _, fn, args in batch])
        for (future, _, _), (value, exc) in zip(batch, outcomes, strict=True):
            if future.cancelled():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)
