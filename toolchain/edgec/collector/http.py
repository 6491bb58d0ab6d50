"""The collector's HTTP/1.1 connections: uvicorn's httptools protocol with the limits a server
facing untrusted sockets needs before any token is checked.

- **Header cap**: the request line and headers of one request may take at most
  ``max_header_bytes``; past that the connection gets ``431`` and is closed, so a client without
  a token cannot make the server buffer an unbounded header. The trailers of a chunked body (and
  any other bytes of a body that are not its data) are held to the same cap, and never reach the
  application.
- **Read timeouts**: a request's headers must arrive within ``header_timeout`` seconds of its first
  byte (or of the connection's opening: with TLS the handshake is part of it), and its body may not
  pause for more than ``body_timeout`` seconds; a connection that stalls is closed. A body still
  arriving when its answer has been sent (a refused request, a GET with a body) has
  ``body_timeout`` seconds in all to end, however it trickles. Idle keep-alive connections are
  closed by uvicorn's ``timeout_keep_alive``.
- **Connection limit**: at most ``max_connections`` are open (kept below the process's open-file
  limit), counted from ``accept()``: with TLS the handshake is done here, after the connection is
  admitted, not by the event loop before it. When a new one would go past the limit, the oldest
  connection that has no request in the application (handshaking, idle, or still sending
  headers) is closed to make room; only when every connection is busy in the application is the
  new one refused. A flood of idle sockets without a token therefore cannot lock real clients out.
"""

from __future__ import annotations

import logging
import resource
import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

KiB = 1 << 10
# Where a connection is in its current request. DRAIN: answered, but its body is still arriving.
IDLE, HEADERS, BODY, APP, DRAIN = range(5)
FRAMING_SLACK = 1024  # chunk-size lines between two pieces of a body, beyond the header cap
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
                 body_timeout: float = 30.0, max_connections: int = 1024, tls: ssl.SSLContext | None = None):
        self.tls = tls  # the server's TLS context: the handshake is done by the connection itself
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
        if getattr(self, "handshaking", False):  # the TLS transport, once the handshake is done
            self.handshaking = False
            if self not in self.limits.open:  # dropped meanwhile
                transport.abort()
                return
            super().connection_made(transport)
            return
        self.stage = IDLE
        self.header_bytes = 0
        self.unbodied = 0  # bytes of the body stage that were not body data (chunk lines, trailers)
        self.body_seen = 0
        self.timer = None
        self.raw = transport
        self.handshaking = False
        if self.limits.tls is None:
            super().connection_made(transport)
        else:
            self._start_tls(transport)
        if not self.limits.admit(self):
            self.drop()
            return
        # the headers' deadline runs from accept(): with TLS the handshake is part of it
        self._arm(self.limits.header_timeout)

    def _start_tls(self, raw) -> None:
        """Put TLS between ``raw`` and this protocol now, before any byte is read (what
        ``loop.start_tls`` does, without the turn of the loop that would let the client's first
        bytes reach the HTTP parser). The TLS protocol calls :meth:`connection_made` again with
        the decrypted transport once the handshake is done."""
        from asyncio import sslproto

        self.handshaking = True
        waiter = self.loop.create_future()
        waiter.add_done_callback(self._handshake_over)
        tls = sslproto.SSLProtocol(self.loop, self, self.limits.tls, waiter, server_side=True,
                                   ssl_handshake_timeout=self.limits.header_timeout)
        raw.set_protocol(tls)
        tls.connection_made(raw)

    def _handshake_over(self, waiter) -> None:
        if not waiter.cancelled():
            waiter.exception()  # retrieved: a failed handshake is this connection's end, not an error
        if self.handshaking:  # it failed, timed out or the client left: this protocol never ran
            self.handshaking = False
            self.limits.open.pop(self, None)
            self._disarm()
            if not self.raw.is_closing():
                self.raw.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.open.pop(self, None)
        self._disarm()
        if self.handshaking or getattr(self, "transport", None) is None:  # uvicorn never saw it
            return
        super().connection_lost(exc)

    def drop(self) -> None:
        """Close the connection now (no answer: nothing was asked yet, or it stalled)."""
        self.limits.open.pop(self, None)
        self._disarm()
        if self.handshaking:
            self.raw.abort()  # the handshake ends with the connection
        elif not self.transport.is_closing():
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
        if self.stage in (IDLE, HEADERS, BODY, DRAIN):
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
        else:
            self.body_seen = 0
            super().data_received(data)
            # What of these bytes was not body data: chunk-size lines and trailers. Only trailers
            # (after the last piece) can grow without body data between them; they get the header cap.
            if self.stage in (BODY, DRAIN):
                framing = len(data) - self.body_seen
                self.unbodied = framing if self.body_seen else self.unbodied + framing
                if self.unbodied > self.limits.max_header_bytes + FRAMING_SLACK:
                    self._refuse_header()
                    return
        # A request that came whole needs no timer; one still arriving gets its deadline (headers:
        # from their first byte; a body: from its last byte; a body after its answer: none new).
        if self.stage == HEADERS:
            if self.timer is None:
                self._arm(self.limits.header_timeout)
        elif self.stage == BODY:
            self._arm(self.limits.body_timeout)

    def _refuse_header(self) -> None:
        cycle = getattr(self, "cycle", None)
        if self.stage != DRAIN and (cycle is None or not cycle.response_started):
            message = b"request headers larger than this collector accepts\n"
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message))
        self.drop()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.stage = HEADERS

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.stage in (BODY, DRAIN):
            return  # a trailer: capped above, and not added to the request's headers
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.stage = BODY
        self.header_bytes = 0
        self.unbodied = 0
        self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.stage == DRAIN:  # the answer went out before the body ended: the connection goes on
            self.stage = IDLE
            self.header_bytes = 0
            self._disarm()
            super().on_message_complete()
            if not self.transport.is_closing():
                self._unset_keepalive_if_required()
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)
            return
        self.stage = APP
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.stage == BODY:
            # answered while the body still arrives: it has body_timeout in all to end
            self.stage = DRAIN
            self._arm(self.limits.body_timeout)
            super().on_response_complete()
            self._unset_keepalive_if_required()
            return
        self.stage = IDLE
        self.header_bytes = 0
        self._disarm()
        super().on_response_complete()


def protocol_class(limits: Limits) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` bound to ``limits`` (uvicorn takes a class)."""
    return type("CollectorProtocol", (GuardedProtocol,), {"limits": limits})
