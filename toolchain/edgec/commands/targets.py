"""edgec targets: list the device profiles."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def targets(as_json: bool) -> None:
    """List device profiles: id, device, target kind, precisions, runtime."""
    from edgec import profiles

    items = profiles.all_profiles()
    if as_json:
        click.echo(json.dumps([p.to_json() for p in items], indent=2))
        return
    from rich.table import Table

    from edgec.util import console

    table = Table()
    for col in ("id", "device", "target", "precisions (default first)", "runtime", "power sensor"):
        table.add_column(col)
    for p in items:
        precisions = [p.default_precision] + [x for x in p.precisions if x != p.default_precision]
        table.add_row(p.id, p.device, p.target, ", ".join(precisions), p.runtime, p.power.get("sensor", "none"))
    console().print(table)
