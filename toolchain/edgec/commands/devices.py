"""edgec devices: the devices registered with a collector."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.commands._server import ago, connect, server_options


@click.command()
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
def devices(server: str, token_file: Path | None, as_json: bool) -> None:
    """Devices whose agents registered with the collector: profile, labels, runtimes, power
    sensor, state (idle, busy, offline) and when they were last seen."""
    with connect(server, token_file) as client:
        found = client.devices()
    if as_json:
        click.echo(json.dumps({"devices": found}, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import console

    table = Table(title=f"devices registered with {server}", title_justify="left")
    for col in ("device", "profile", "state", "labels", "runtimes", "power", "model", "last seen", "jobs"):
        table.add_column(col)
    for d in found:
        power = d["power"]
        table.add_row(
            escape(d["id"]), escape(d["profile"] or "-"), d["state"],
            escape(",".join(f"{k}={v}" for k, v in sorted(d["labels"].items())) or "-"),
            escape(", ".join(f"{k} {v or ''}".strip() for k, v in sorted(d["runtimes"].items())) or "none"),
            escape(power.get("sensor") or "none" if power.get("available") else "none"),
            escape(str((d["detected"] or {}).get("model") or "-")), ago(d["last_seen"]),
            ", ".join(str(j) for j in d["jobs"]) or "-")
    console().print(table)
    if not found:
        click.echo("no device has registered yet; start an agent: python3 edgec-agent.pyz run --server URL "
                   "--token-file FILE", err=True)
