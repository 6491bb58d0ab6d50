"""The collector's HTTP/1.1 connections: uvicorn's httptools protocol with the limits a server
facing untrusted sockets needs before any token is checked.

- **Header cap**: the request line and headers of one request may take at most
  ``max_header_bytes``; past that the connection gets ``431`` and is closed, so a client without
  a token cannot make the server buffer an unbounded header.
- **Read timeouts**: a request's headers must arrive within ``header_timeout`` seconds of its first
  byte (or of the connection's opening), and its body may not pause for more than
  ``body_timeout`` seconds; a connection that stalls is closed. Idle keep-alive connections are
  closed by uvicorn's ``timeout_keep_alive``.
- **Connection limit**: at most ``max_connections`` are open (kept below the process's open-file
  limit). When a new one would go past it, the oldest connection that has no request in the
  application (idle, or still sending headers) is closed to make room; only when every
  connection is busy in the application is the new one refused. A flood of idle sockets without
  a token therefore cannot lock real clients out.
"""

from __future__ import annotations

import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

KiB = 1 << 10
IDLE, HEADERS, BODY, APP = range(4)  # where a connection is in its current request
RESERVED_FILES = 64  # descriptors kept for the database, blobs, logs and the listening socket


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections(open_files: int) -> int:
    """As many connections as the open-file limit leaves room for (at most 4096)."""
    return max(8, min(4096, open_files - RESERVED_FILES))


class Limits:
    """The limits of one server and its open connections (oldest first)."""

    def __init__(self, *, max_header_bytes: int = 64 * KiB, header_timeout: float = 10.0,
                 body_timeout: float = 30.0, max_connections: int = 1024):
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.open: dict[Any, None] = {}  # insertion-ordered: the oldest first
        self.evicted = 0
        self.refused = 0

    def admit(self, conn: GuardedProtocol) -> bool:
        """Make room for ``conn``; False when every other connection is busy (refuse it)."""
        while len(self.open) >= self.max_connections:
            victim = next((c for c in self.open if c.stage in (IDLE, HEADERS)), None)
            if victim is None:
                self.refused += 1
                if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                    log.warning("%d connections open, all busy: refused a new one (%d so far)", len(self.open),
                                self.refused)
                return False
            self.evicted += 1
            if self.evicted in (1, 10, 100) or self.evicted % 1000 == 0:
                log.warning("connection limit (%d) reached: closed the oldest idle connection (%d so far)",
                            self.max_connections, self.evicted)
            victim.drop()
        self.open[conn] = None
        return True


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the header cap, read timeouts and connection limit of
    :class:`Limits` (set on a subclass per server by :func:`protocol_class`)."""

    limits: Limits

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.stage = IDLE
        self.header_bytes = 0
        self.timer = None
        if not self.limits.admit(self):
            self.drop()
            return
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.open.pop(self, None)
        self._disarm()
        super().connection_lost(exc)

    def drop(self) -> None:
        """Close the connection now (no answer: nothing was asked yet, or it stalled)."""
        self.limits.open.pop(self, None)
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.stage in (IDLE, HEADERS, BODY):
            self.drop()

    def data_received(self, data: bytes) -> None:
        stage = self.stage
        if stage == IDLE or stage == HEADERS:
            room = self.limits.max_header_bytes - self.header_bytes
            if len(data) > room and data.find(b"\r\n\r\n", 0, max(room, 0) + 4) < 0:
                self._refuse_header()
                return
            self.header_bytes += len(data)
        super().data_received(data)
        # A request that came whole needs no timer; one still arriving gets its deadline (headers:
        # from their first byte; a body: from its last byte).
        if self.stage == HEADERS:
            if self.timer is None:
                self._arm(self.limits.header_timeout)
        elif self.stage == BODY:
            self._arm(self.limits.body_timeout)

    def _refuse_header(self) -> None:
        message = b"request headers larger than this collector accepts\n"
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message))
        self.drop()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.stage = HEADERS

    def on_headers_complete(self) -> None:
        self.stage = BODY
        self.header_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.stage = APP
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.stage = IDLE
        self.header_bytes = 0
        self._disarm()
        super().on_response_complete()


def protocol_class(limits: Limits) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` bound to ``limits`` (uvicorn takes a class)."""
    return type("CollectorProtocol", (GuardedProtocol,), {"limits": limits})
