"""edgec dashboard: print a one-time link that signs a browser in to a collector's dashboard."""

from __future__ import annotations

from pathlib import Path

import click

from edgec.commands._server import connect, server_options


@click.command()
@server_options
def dashboard(server: str, token_file: Path | None, cafile: Path | None) -> None:
    """Print a fresh one-time sign-in link to the dashboard of the collector at --server.

    \b
    It needs the collector's admin token (a device's credential cannot sign in); open the link
    in a browser once, it then holds a session cookie:
      edgec dashboard --server http://HOST:8750
    """
    with connect(server, token_file, cafile) as client:
        doc = client.request("POST", "/dashboard/sign-in", ok=(201,)).json()
    click.echo(f"dashboard: {client.url}{doc['path']}")
    click.echo("one-time sign-in link: it signs in one browser, once", err=True)
