"""Options shared by the commands that talk to a collector (``--server``, ``--token-file``)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgec.fleet import DEFAULT_URL


def server_options(func):
    """``--server URL``, ``--token-file FILE`` and ``--cafile FILE``."""
    func = click.option("--cafile", type=click.Path(path_type=Path, dir_okay=False), envvar="EDGEC_CAFILE",
                        help="CA certificate (PEM) to verify an https:// collector against (default: "
                             "$EDGEC_CAFILE, else the system's CAs).")(func)
    func = click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
                        help="File holding the collector's token (default: $EDGEC_TOKEN, else the token file "
                             "of a collector on this machine).")(func)
    func = click.option("--server", default=DEFAULT_URL, show_default=True, metavar="URL",
                        help="The collector ('edgec serve').")(func)
    return func


def connect(server: str, token_file: Path | None, cafile: Path | None = None):
    """A :class:`edgec.fleet.client.Client` for the options above."""
    from edgec.fleet.client import Client
    from edgec.fleet.tokens import client_token

    return Client(server, client_token(token_file), cafile=cafile)


def ago(epoch: float | None) -> str:
    """'12 s ago', '3 min ago', '2 h ago' or '-'."""
    if epoch is None:
        return "-"
    delta = max(0.0, time.time() - epoch)
    if delta < 120:
        return f"{delta:.0f} s ago"
    if delta < 7200:
        return f"{delta / 60:.0f} min ago"
    return f"{delta / 3600:.1f} h ago"
