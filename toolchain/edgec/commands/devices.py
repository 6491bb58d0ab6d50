"""edgec devices: the devices registered with a collector; enroll a device or revoke it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.commands._server import ago, connect, server_options
from edgec.commands._types import FiniteFloat


@click.group(invoke_without_command=True)
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
@click.pass_context
def devices(ctx: click.Context, server: str, token_file: Path | None, cafile: Path | None, as_json: bool) -> None:
    """Devices whose agents registered with the collector: profile, labels, runtimes, power
    sensor, state (idle, busy, offline, revoked) and when they were last seen. A device whose
    agent found no runtime is named below the table: it can run no job.

    \b
    Each device can have its own credential instead of the collector's admin token:
      edgec devices enroll nano-1      # a one-time token for its agent (--enroll-token-file)
      edgec devices revoke nano-1      # cut that device off; the others go on
    """
    if ctx.invoked_subcommand is not None:
        return
    with connect(server, token_file, cafile) as client:
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
            escape(", ".join(f"{k} {v or ''}".strip() for k, v in sorted(d["runtimes"].items())))
            or "[bold red]none[/]",
            escape(power.get("sensor") or "none" if power.get("available") else "none"),
            escape(str((d["detected"] or {}).get("model") or "-")), ago(d["last_seen"]),
            ", ".join(str(j) for j in d["jobs"]) or "-")
    console().print(table)
    for d in found:
        if not d["runtimes"] and d["state"] not in ("offline", "revoked"):
            click.echo(f"warning: device '{d['id']}' can run nothing: its agent found no runtime (litert, tflite, "
                       "onnxruntime, tensorrt) in its Python; its jobs wait until it is restarted with one",
                       err=True)
    if not found:
        click.echo("no device has registered yet; enroll one (edgec devices enroll NAME) and start its agent",
                   err=True)


def _name(ctx, param, value: str) -> str:
    import re

    from edgec.agent.vocab import NAME_PATTERN

    if not re.match(NAME_PATTERN, value):
        raise click.BadParameter(f"{value!r}: expected 1-64 letters, digits, '.', '_' or '-'")
    return value


@devices.command()
@click.argument("name", callback=_name)
@server_options
@click.option("--expires-hours", type=FiniteFloat(0.02, 2160), default=24, show_default=True,
              help="How long the enrollment token may be used.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def enroll(name: str, server: str, token_file: Path | None, cafile: Path | None, expires_hours: float,
           as_json: bool) -> None:
    """Print a one-time enrollment token for device NAME.

    \b
    Its agent trades it for the device's own credential on its first start, and keeps that
    credential (mode 0600) on the device:
      python3 edgec-agent.pyz run --server URL --name NAME --enroll-token-file FILE
    Enrolling NAME again replaces its credential once the new token is used.
    """
    with connect(server, token_file, cafile) as client:
        doc = client.enroll(name, expires_hours * 3600)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(doc["enrollment_token"])
    click.echo(f"one-time enrollment token for '{name}', valid for {expires_hours:g} h; on the device, with the "
               f"token in a file: python3 edgec-agent.pyz run --server {server} --name {name} "
               "--enroll-token-file FILE", err=True)


@devices.command()
@click.argument("name", callback=_name)
@server_options
def revoke(name: str, server: str, token_file: Path | None, cafile: Path | None) -> None:
    """Revoke device NAME's credential (and any enrollment token not used yet): its agent is refused
    from its next request, the jobs it holds are re-queued; other devices are not touched."""
    with connect(server, token_file, cafile) as client:
        doc = client.revoke(name)
    held = f"; re-queued its jobs {', '.join(map(str, doc['released']))}" if doc["released"] else ""
    click.echo(f"revoked device '{name}' ({doc['revoked']} credential(s)){held}")
