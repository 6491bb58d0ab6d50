"""edgec jobs: the jobs of a collector, one job with its attempts, or cancel one."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.agent.vocab import JOB_STATES
from edgec.commands._server import ago, connect, server_options


@click.command()
@click.argument("job_id", required=False, type=click.IntRange(min=1))
@server_options
@click.option("--state", type=click.Choice(JOB_STATES), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True, help="Newest jobs shown.")
@click.option("--cancel", is_flag=True, help="Cancel JOB_ID (queued or running).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs(job_id: int | None, server: str, token_file: Path | None, cafile: Path | None, state: str | None, limit: int, cancel: bool,
         as_json: bool) -> None:
    """The collector's jobs (newest first), or JOB_ID with every attempt.

    \b
    A job is leased to one agent at a time; a lease that is not renewed (the agent died or
    lost power) expires and the job is re-queued, up to its attempt limit, then failed with
    the reason.
    """
    from edgec.errors import EdgecError

    if cancel and job_id is None:
        raise EdgecError("--cancel needs a JOB_ID")
    with connect(server, token_file, cafile) as client:
        if job_id is not None:
            doc = client.cancel(job_id) if cancel else client.job(job_id)
            if as_json:
                click.echo(json.dumps(doc, indent=2))
            else:
                _print_job(doc)
            return
        found = client.jobs(state=state, limit=limit)
    if as_json:
        click.echo(json.dumps({"jobs": found}, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import console

    table = Table(title=f"jobs on {server} (newest first)", title_justify="left")
    for col in ("job", "state", "artifact", "precision", "model", "for", "attempts", "device / result", "created"):
        table.add_column(col, justify="right" if col in ("job", "attempts") else "left")
    for j in found:
        where = f"device {j['device']}" if j["device"] else f"profile {j['profile']}"
        status = (f"result {j['result_id']}" if j["result_id"] else j["leased_to"] or
                  (j["error"][:60] + ("…" if len(j["error"]) > 60 else "") if j["error"] else "-"))
        table.add_row(str(j["id"]), j["state"], escape(j["artifact"]["file"]), escape(j["artifact"]["precision"] or "-"),
                      escape(j["artifact"]["model"] or "-"), escape(where), f"{j['attempts']}/{j['max_attempts']}",
                      escape(status), ago(j["created"]))
    console().print(table)


def _print_job(j: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import console

    out = console()
    where = f"device {j['device']}" if j["device"] else f"any device of profile {j['profile']}"
    labels = ", ".join(f"{k}={v}" for k, v in sorted(j["labels"].items()))
    out.print(escape(f"job {j['id']}: {j['state']}; {j['artifact']['file']} ({j['artifact']['precision']}, "
                     f"sha256 {j['artifact']['sha256'][:12]}) with {j['runtime']} on {where}"
                     + (f" labelled {labels}" if labels else "")))
    out.print(escape(f"attempts {j['attempts']} of {j['max_attempts']}, lease {j['lease_seconds']:g} s, "
                     f"created {ago(j['created'])}, updated {ago(j['updated'])}"))
    if j["result_id"]:
        out.print(f"result {j['result_id']}")
    if j["error"]:
        out.print(escape(f"error: {j['error']}"))
    if j.get("leases"):
        table = Table(title="attempts", title_justify="left")
        for col in ("attempt", "device", "leased", "ended", "outcome", "detail"):
            table.add_column(col)
        for lease in j["leases"]:
            table.add_row(str(lease["attempt"]), escape(lease["device"]), ago(lease["issued"]), ago(lease["ended"]),
                          lease["outcome"] or "running", escape(lease["detail"] or "-"))
        out.print(table)
