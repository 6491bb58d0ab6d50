"""Floods refused at every layer: trailers held to the header cap, a body that trickles after its
answer closed within the body timeout, and TLS connections counted and timed from accept(), so
sockets that never start a handshake cannot lock real HTTPS clients out."""

from __future__ import annotations

import resource
import socket
import ssl
import time
from urllib.parse import urlsplit

import httpx

from tests.collector import soak

MiB = 1 << 20


def _connect(server) -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def _closed_by_server(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (sending ``trickle`` every 0.2 s)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(trickle)
            data = sock.recv(65536)
            if not data:
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def _read_answer(sock: socket.socket) -> bytes:
    """One HTTP answer with a content-length (its head and body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_trailers_are_held_to_the_header_cap(serve):
    server = serve("--max-header-kb", "8")
    before = soak.rss_mb(server.proc.pid)
    sock = _connect(server)
    sock.sendall(f"POST /v1/results HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n"
                 "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n".encode())
    line = b"X-Trailer: " + b"a" * 1000 + b"\r\n"
    sent = 0
    refused = False
    try:
        while sent < 8 * MiB:
            sock.sendall(line)
            sent += len(line)
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        refused = True
    if not refused:  # everything fitted in the socket buffers: the answer says what happened
        try:
            answer = sock.recv(4096)
        except (TimeoutError, ConnectionResetError):
            answer = b"(no answer)"
        refused = answer == b"" or answer.startswith(b"HTTP/1.1 431")
    sock.close()
    assert refused, f"{sent} bytes of trailers sent and the connection is still open"
    assert soak.rss_mb(server.proc.pid) - before < 16
    assert httpx.get(server.url + "/v1/health", headers=server.auth, timeout=10).status_code == 200


def test_a_body_that_trickles_after_its_answer_is_closed_within_the_body_timeout(serve):
    server = serve("--body-timeout", "1")
    for head in (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n",  # refused: 401
                 b"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + server.token.encode() + b"\r\n"):
        sock = _connect(server)
        sock.sendall(head + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        status = _read_answer(sock).split(b"\r\n")[0]
        assert status in (b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 200 OK"), status
        assert _closed_by_server(sock, 8, trickle=b" "), f"{head[:20]!r}: the trickling body kept its connection"
        sock.close()


def _few_files():
    resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))  # the connection limit becomes 96


def test_tls_sockets_that_never_handshake_do_not_lock_https_clients_out(serve, tls_files):  # noqa: F811
    ca = ssl.create_default_context(cafile=str(tls_files["ca"]))
    server = serve("--tls-cert", str(tls_files["server"]), "--tls-key", str(tls_files["key"]), "--header-timeout",
                   "3", verify=ca, preexec_fn=_few_files)
    parts = urlsplit(server.url)
    flood = []
    try:
        for _ in range(200):  # more than the open files the server has: each holds one if admitted
            flood.append(socket.create_connection((parts.hostname, parts.port), timeout=10))
        time.sleep(0.5)
        with httpx.Client(verify=ca, timeout=10) as client:
            for _ in range(3):
                r = client.get(server.url + "/v1/health", headers=server.auth)
                assert r.status_code == 200 and r.json()["status"] == "ok"
        # a socket that never starts its handshake is closed after the header timeout
        idle = socket.create_connection((parts.hostname, parts.port), timeout=10)
        flood.append(idle)
        assert _closed_by_server(idle, 10), "a socket without a handshake was kept open"
    finally:
        for sock in flood:
            sock.close()
