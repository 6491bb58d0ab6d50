"""edgec report: measured results as a table, JSON, CSV or Markdown, and a PNG plot."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default="table",
              show_default=True, help="Output format.")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE.png",
              help="Also write latency/energy vs accuracy and size as a PNG.")
@click.option("--device", help="Only results from this device (local, ssh://...).")
@click.option("--model", help="Only this source model (name or sha256 prefix).")
@click.option("--every-run", is_flag=True, help="Every run, not only the latest per artifact and device.")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="Results database (default: $EDGEC_RESULTS_DB or ~/.local/share/edgec/results.db).")
@click.option("--server", metavar="URL", help="Read the results of a collector ('edgec serve') instead.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="With --server: file holding the collector's token (default: $EDGEC_TOKEN).")
def report(fmt: str, plot: Path | None, device: str | None, model: str | None, every_run: bool,
           db: Path | None, server: str | None, token_file: Path | None) -> None:
    """Latency (and energy) against accuracy and size, one point per artifact, with speed-up and
    compression against the fp32 artifact of the same model."""
    from edgec import report as rep
    from edgec.errors import EdgecError

    if server:
        if db:
            raise EdgecError("give --db or --server, not both")
        from edgec.fleet.client import Client
        from edgec.fleet.tokens import client_token

        with Client(server, client_token(token_file)) as client:
            rows = client.report_rows(device=device, model=model, every_run=every_run)
        if not rows:
            where = f" for device {device}" if device else ""
            where += f" for model {model}" if model else ""
            raise EdgecError(f"no results{where} on the collector at {client.url}; queue measurements with "
                             "'edgec profile ARTIFACT_DIR --server URL'")
    elif token_file:
        raise EdgecError("--token-file needs --server URL")
    else:
        rows = rep.load_rows(db, device=device, model=model, every_run=every_run)
    if fmt == "table":
        from edgec.util import console

        out = console()
        out.print(rep.to_table(rows))
        for note in rep.threads_notes(rows):
            out.print(f"[yellow]note:[/] {note}")
    else:
        click.echo({"json": rep.to_json, "csv": rep.to_csv, "markdown": rep.to_markdown}[fmt](rows), nl=False)
        if fmt == "json":
            click.echo()
    if plot:
        path = rep.plot(rows, plot)
        click.echo(f"plot written to {path}", err=True)
