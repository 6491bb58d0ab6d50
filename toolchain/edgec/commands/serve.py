"""edgec serve: the collector of a device fleet (HTTP API, SQLite or PostgreSQL record)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from edgec.commands._types import FiniteFloat
from edgec.fleet import DEFAULT_HOST, DEFAULT_PORT


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on (0.0.0.0 for every interface: use --tls-cert/--tls-key there).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port (0 picks a free one; the URL is printed).")
@click.option("--db", metavar="PATH|URL",
              help="The record: an SQLite file (default ~/.local/share/edgec/collector/collector.db), or "
                   "postgresql://USER@HOST/DB for several collectors on one database.")
@click.option("--blobs", "blobs_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Directory of uploaded artifacts (default: blobs/ beside the SQLite file, or beside the "
                   "token file with PostgreSQL; collectors sharing a database need a shared directory).")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Where the admin token is kept (default: 'token' beside the database).")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False),
              help="PEM certificate (chain): serve HTTPS (agents: --cafile CA.pem).")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="PEM private key of --tls-cert.")
@click.option("--lease-seconds", type=FiniteFloat(1, 86400), default=60, show_default=True,
              help="How long a job stays with an agent without a heartbeat before it is re-queued "
                   "(a job may set its own).")
@click.option("--max-body-mb", type=FiniteFloat(0.01, 1024), default=4, show_default=True,
              help="Largest JSON request body (413 above).")
@click.option("--max-upload-mb", type=FiniteFloat(0.01, 1 << 20), default=1024, show_default=True,
              help="Largest artifact upload (413 above).")
@click.option("--max-header-kb", type=click.IntRange(1, 1024), default=64, show_default=True,
              help="Largest request line and headers of one request (431 above).")
@click.option("--header-timeout", type=FiniteFloat(0.1, 600), default=10, show_default=True,
              help="Seconds a request's headers may take to arrive (a stalled connection is closed).")
@click.option("--body-timeout", type=FiniteFloat(0.1, 3600), default=30, show_default=True,
              help="Longest pause while a request body arrives.")
@click.option("--max-connections", type=click.IntRange(8, 1 << 20),
              help="Open connections at most; past it the oldest idle one is closed (default: what the "
                   "open-file limit allows, at most 4096).")
@click.option("--offline-after", type=FiniteFloat(1, 86400), default=60, show_default=True,
              help="Seconds without a request after which a device is shown offline.")
@click.option("--max-poll-seconds", type=FiniteFloat(0, 60), default=60, show_default=True,
              help="Longest wait of a long poll (lower it behind proxies that cut idle connections).")
@click.option("--db-pool", type=click.IntRange(1, 256),
              help="Read connections to the database at most (default: two per CPU, between 4 and 16); "
                   "PostgreSQL also gets 4 writers, 4 result writers and one listener.")
@click.option("--search-storage", metavar="URL|PATH",
              help="An 'edgec search' storage (its search.db, or sqlite:///PATH, postgresql://...) whose studies "
                   "the dashboard's Search page shows.")
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(host: str, port: int, db: str | None, blobs_dir: Path | None, token_file: Path | None,
          tls_cert: Path | None, tls_key: Path | None, lease_seconds: float, max_body_mb: float,
          max_upload_mb: float, max_header_kb: int, header_timeout: float, body_timeout: float,
          max_connections: int | None, offline_after: float, max_poll_seconds: float, db_pool: int | None,
          access_log: bool, search_storage: str | None) -> None:
    """Run the collector: agents register and take jobs, 'edgec profile --server' queues them.

    \b
    Every request needs a bearer token: the admin token generated on the first start (printed
    once, kept in --token-file with mode 0600) for the host's commands, or a device's own
    credential, which its agent gets by trading a one-time enrollment token:
      edgec serve --port 8750
      edgec devices enroll nano-1            # prints the enrollment token
      python3 edgec-agent.pyz run --server http://HOST:8750 --name nano-1 --enroll-token-file FILE
      edgec profile dist/rpi5 --server http://HOST:8750 --wait
    On a network you do not trust, serve HTTPS with --tls-cert/--tls-key (agents: --cafile).
    The dashboard is at / on the same port: open the one-time sign-in link printed at start.
    """
    import logging
    import os

    from edgec.collector import default_db, default_dir, http, routes, server
    from edgec.collector.storage.connections import is_url
    from edgec.collector.storage.store import Store
    from edgec.errors import EdgecError
    from edgec.fleet import tokens

    log = logging.getLogger("edgec.collector")
    if bool(tls_cert) != bool(tls_key):
        raise EdgecError("--tls-cert and --tls-key go together: give both (PEM certificate and its key)")
    if tls_cert:
        server.check_tls(tls_cert, tls_key)
    os.umask(0o077)  # the record, its WAL, blobs and their directories: readable by this user only
    if db and is_url(db):
        home = (token_file.parent if token_file else default_dir()).expanduser()
        store = Store(db, pool_size=db_pool)
    else:
        path = Path(db or default_db()).expanduser()
        home = path.parent
        store = Store(path, pool_size=db_pool)
    token_file = (token_file or home / "token").expanduser()
    token, created = tokens.load_or_create(token_file)
    sock = server.listen(host, port)
    store.open()
    try:
        open_files = http.raise_open_file_limit()
        limits = http.Limits(max_header_bytes=max_header_kb * 1024, header_timeout=header_timeout,
                             body_timeout=body_timeout,
                             max_connections=max_connections or http.default_max_connections(open_files))
        settings = server.ServerSettings(token, (blobs_dir or home / "blobs").expanduser(),
                                         max_body=int(max_body_mb * server.MiB),
                                         max_upload=int(max_upload_mb * server.MiB), lease_seconds=lease_seconds,
                                         offline_after=offline_after, max_poll=max_poll_seconds)
        app = routes.create_app(store, settings, search_storage=search_storage)
        app.dashboard.tls = bool(tls_cert)
        url = server.url_of(sock, tls=bool(tls_cert))
        click.echo(f"edgec collector on {url}  (database {store.name})")
        click.echo(f"dashboard: {url}{app.dashboard.sign_in_path()}  (one-time sign-in link; 'edgec dashboard' prints more)")
        if created:
            click.echo(f"token (shown once, kept in {token_file} with mode 0600): {token}")
            click.echo(f"  devices: edgec devices enroll NAME --server {url}  (a one-time token for its agent)")
            click.echo(f"  clients: EDGEC_TOKEN=... or --token-file {token_file}")
        else:
            click.echo(f"token: in {token_file}")
        if not _is_loopback(host) and not tls_cert:
            log.warning("listening on %s without TLS: requests and tokens travel as plain HTTP; pass --tls-cert and "
                        "--tls-key (or use an SSH tunnel) on networks you do not trust", host)
        click.get_text_stream("stdout").flush()
        server.run(app, sock, access_log=access_log, limits=limits, tls_cert=tls_cert, tls_key=tls_key)
    finally:
        store.close()
        sock.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
