"""``edgec serve``: the collector's HTTP API (FastAPI on uvicorn), from the listening socket to the
record.

Connections are held to a header cap, read timeouts and a connection limit before anything else
(:mod:`edgec.collector.http`). Every request then passes the guard (:mod:`edgec.collector.guard`):
a bearer token (the admin token, a device's own credential or a one-time enrollment token, each
opening its routes), then a cap on the body size. JSON bodies are parsed strictly
(:mod:`edgec.collector.bodies`: no NaN or Infinity, no number a 64-bit column cannot hold, no
unpaired surrogate, no nesting past 64 levels) and validated by pydantic models
(:mod:`edgec.collector.messages`), agent reports by the one report validator; whatever is refused
gets a 422 that can always be encoded. The routes (:mod:`edgec.collector.routes`) have their
changes committed by the store's writer before the answer is sent. Agents long-poll for jobs; a
reaper re-queues the jobs whose lease expired.

This module holds the settings of a running collector and what runs it: the listening socket,
the TLS check, uvicorn.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from edgec.collector import http
from edgec.collector.storage.blobs import Blobs
from edgec.errors import EdgecError

MiB = 1 << 20
DEFAULT_MAX_BODY = 4 * MiB
DEFAULT_MAX_UPLOAD = 1024 * MiB
DEFAULT_LEASE_S = 60.0


class ServerSettings:
    """What a running collector needs besides its store."""

    def __init__(self, token: str, blobs_dir: Path, *, max_body: int = DEFAULT_MAX_BODY,
                 max_upload: int = DEFAULT_MAX_UPLOAD, lease_seconds: float = DEFAULT_LEASE_S,
                 offline_after: float = 60.0, reaper_interval: float = 0.25, max_poll: float = 60.0):
        self.token = token
        self.blobs = Blobs(blobs_dir)
        self.max_body = max_body
        self.max_upload = max_upload
        self.lease_seconds = lease_seconds
        self.offline_after = offline_after
        self.reaper_interval = reaper_interval
        self.max_poll = max_poll  # long polls answer after at most this long (proxies may cut idle ones)


# ---------------------------------------------------------------------- running it


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port).

    Raises:
        EdgecError: the address cannot be used.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise EdgecError(f"cannot resolve --host '{host}': {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise EdgecError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --port "
                         "(0 picks a free one) or stop the process using it") from exc
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def check_tls(cert: Path, key: Path) -> None:
    """Load the certificate and key once, so a bad pair is one line before the server starts.

    Raises:
        EdgecError: unreadable, not PEM, or the key does not match the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise EdgecError(f"cannot read TLS file '{exc.filename}': it does not exist") from exc
    except (ssl.SSLError, OSError) as exc:
        raise EdgecError(f"--tls-cert '{cert}' and --tls-key '{key}' cannot be used: {exc.strerror or exc}; expected "
                         "a PEM certificate (chain) and its PEM private key, unencrypted") from exc


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server's TLS context (as uvicorn would make it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


def run(app, sock: socket.socket, *, access_log: bool = False, limits: http.Limits | None = None,
        tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn finishes the requests in flight).

    With TLS, the connections do their own handshake once admitted (:mod:`edgec.collector.http`):
    the connection limit and the header timeout then hold from ``accept()`` on, which they would
    not if the event loop did the handshake before the connection existed for them.
    """
    import uvicorn

    limits = limits or http.Limits()
    if tls_cert:
        limits.tls = tls_context(tls_cert, tls_key)
    config = uvicorn.Config(app, log_config=None, access_log=access_log, timeout_keep_alive=30,
                            timeout_graceful_shutdown=5, lifespan="on", server_header=False,
                            http=http.protocol_class(limits))
    uvicorn.Server(config).run(sockets=[sock])
