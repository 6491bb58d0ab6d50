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
def report(fmt: str, plot: Path | None, device: str | None, model: str | None, every_run: bool,
           db: Path | None) -> None:
    """Latency (and energy) against accuracy and size, one point per artifact, with speed-up and
    compression against the fp32 artifact of the same model."""
    from edgec import report as rep

    rows = rep.load_rows(db, device=device, model=model, every_run=every_run)
    if fmt == "table":
        from edgec.util import console

        console().print(rep.to_table(rows))
    else:
        click.echo({"json": rep.to_json, "csv": rep.to_csv, "markdown": rep.to_markdown}[fmt](rows), nl=False)
        if fmt == "json":
            click.echo()
    if plot:
        path = rep.plot(rows, plot)
        click.echo(f"plot written to {path}", err=True)
