"""edgec serve: the collector of a device fleet (HTTP API, SQLite record)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from edgec.collector import DEFAULT_HOST, DEFAULT_PORT


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on (0.0.0.0 for every interface: plain HTTP, see below).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port (0 picks a free one; the URL is printed).")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite file of the record (default ~/.local/share/edgec/collector/collector.db); uploaded "
                   "artifacts go to blobs/ beside it.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Where the bearer token is kept (default: 'token' beside the database).")
@click.option("--lease-seconds", type=click.FloatRange(1, 86400), default=60, show_default=True,
              help="How long a job stays with an agent without a heartbeat before it is re-queued "
                   "(a job may set its own).")
@click.option("--max-body-mb", type=click.FloatRange(0.01, 1024), default=4, show_default=True,
              help="Largest JSON request body (413 above).")
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 1 << 20), default=1024, show_default=True,
              help="Largest artifact upload (413 above).")
@click.option("--offline-after", type=click.FloatRange(1, 86400), default=60, show_default=True,
              help="Seconds without a request after which a device is shown offline.")
@click.option("--max-poll-seconds", type=click.FloatRange(0, 60), default=60, show_default=True,
              help="Longest wait of a long poll (lower it behind proxies that cut idle connections).")
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(host: str, port: int, db: Path | None, token_file: Path | None, lease_seconds: float, max_body_mb: float,
          max_upload_mb: float, offline_after: float, max_poll_seconds: float, access_log: bool) -> None:
    """Run the collector: agents register and take jobs, 'edgec profile --server' queues them.

    \b
    Every request needs the bearer token generated on the first start (printed once, kept in
    --token-file with mode 0600). Clients take it from EDGEC_TOKEN or --token-file:
      edgec serve --port 8750
      python3 edgec-agent.pyz run --server http://HOST:8750 --token-file token --profile rpi5
      edgec profile dist/rpi5 --server http://HOST:8750 --wait
    It speaks plain HTTP: on a network you do not trust, keep it on 127.0.0.1 and reach it over
    an SSH tunnel, or put a TLS-terminating proxy in front of it.
    """
    import logging

    from edgec.collector import default_db, server, storage, tokens

    log = logging.getLogger("edgec.collector")
    db = (db or default_db()).expanduser()
    token_file = (token_file or db.parent / "token").expanduser()
    token, created = tokens.load_or_create(token_file)
    sock = server.listen(host, port)
    store = storage.Store(db).open()
    try:
        settings = server.ServerSettings(token, db.parent / "blobs", max_body=int(max_body_mb * server.MiB),
                                   max_upload=int(max_upload_mb * server.MiB), lease_seconds=lease_seconds,
                                   offline_after=offline_after, max_poll=max_poll_seconds)
        app = server.create_app(store, settings)
        url = server.url_of(sock)
        click.echo(f"edgec collector on {url}  (database {db})")
        if created:
            click.echo(f"token (shown once, kept in {token_file} with mode 0600): {token}")
            click.echo(f"  agents:  python3 edgec-agent.pyz run --server {url} --token-file FILE  (a copy of it)")
            click.echo(f"  clients: EDGEC_TOKEN=... or --token-file {token_file}")
        else:
            click.echo(f"token: in {token_file}")
        if not _is_loopback(host):
            log.warning("listening on %s: requests and the token travel as plain HTTP; use an SSH tunnel or a TLS "
                        "proxy on networks you do not trust", host)
        click.get_text_stream("stdout").flush()
        server.run(app, sock, access_log=access_log)
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
