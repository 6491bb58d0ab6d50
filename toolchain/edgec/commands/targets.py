"""edgec targets: list the device profiles."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def targets(as_json: bool) -> None:
    """List device profiles: id, device, target kind, precisions, runtime."""
    from edgec import profiles
    from edgec import targets as target_registry

    items = profiles.all_profiles()
    available = set(target_registry.available())
    if as_json:
        click.echo(json.dumps([dict(p.to_json(), available=p.target in available) for p in items], indent=2))
        return
    from rich.table import Table

    from edgec.util import console

    table = Table()
    for col in ("id", "device", "target", "precisions (default first)", "runtime", "power sensor"):
        table.add_column(col)
    for p in items:
        precisions = [p.default_precision] + [x for x in p.precisions if x != p.default_precision]
        target = p.target if p.target in available else f"{p.target} (not available yet)"
        table.add_row(p.id, p.device, target, ", ".join(precisions), p.runtime, p.power.get("sensor", "none"))
    console().print(table)
