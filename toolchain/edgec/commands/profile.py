"""edgec profile: measure build artifacts on a device with the edgec agent (:mod:`edgec.measure`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.agent.vocab import RUNTIMES, SENSOR_CHOICES
from edgec.commands._types import FiniteFloat


@click.command()
@click.argument("build_dirs", nargs=-1, required=True, metavar="ARTIFACT_DIR...",
                type=click.Path(path_type=Path, file_okay=False))
@click.option("-d", "--device", metavar="local|ssh://user@host[:port]|ID",
              help="Where the agent runs: here (default), a device reached with the system ssh/scp, or with "
                   "--server the id of a registered device.")
@click.option("--server", metavar="URL", help="Queue the measurements on a collector ('edgec serve'); its agents "
              "run them.")
@click.option("-t", "--target", "target_profile", metavar="PROFILE",
              help="With --server: any device of this profile may run it (default: the build's profile).")
@click.option("--labels", metavar="k=v,...", help="With --server: the device must carry these labels.")
@click.option("--wait", is_flag=True, help="With --server: wait for the results and print them.")
@click.option("--wait-timeout", type=FiniteFloat(min=1), default=3600, show_default=True,
              help="With --wait: give up waiting after S seconds (the jobs go on).")
@click.option("--attempts", type=click.IntRange(1, 100), default=3, show_default=True,
              help="With --server: leases before a job is failed (an agent that dies loses its lease).")
@click.option("--lease-seconds", type=FiniteFloat(1, 86400),
              help="With --server: the job's lease without a heartbeat (default: the collector's).")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="With --server: file holding the collector's token (default: $EDGEC_TOKEN).")
@click.option("--runs", type=click.IntRange(min=1), help="Timed inferences (default: as many as fit in 2 s).")
@click.option("--min-seconds", type=FiniteFloat(min=0), help="Time inferences for at least S seconds.")
@click.option("--warmup", type=click.IntRange(min=0), help="Untimed inferences after the cold one (default 10).")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime CPU threads (default: the profile's threads).")
@click.option("--batch", type=click.IntRange(min=1), help="Batch size (models with a dynamic batch axis).")
@click.option("--runtime", type=click.Choice(RUNTIMES), help="Agent runtime (default: the build's runtime).")
@click.option("--power", type=click.Choice(SENSOR_CHOICES), help="Power sensor on the device (default: auto).")
@click.option("--power-command", metavar="CMD", help="Command on the device that prints watts, one number per line.")
@click.option("--power-rail", metavar="RAIL", help="Rail to report as the total (default: module input, else sum).")
@click.option("--idle-seconds", type=FiniteFloat(min=0), help="Idle power window before loading (default 1).")
@click.option("--python", "python", metavar="PATH",
              help="The device's Python (default: this interpreter for local, python3 over ssh).")
@click.option("-i", "--identity", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="ssh private key (ssh -i).")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE", help="Extra ssh -o option (repeatable).")
@click.option("--timeout", type=FiniteFloat(min=1), default=600, show_default=True,
              help="Seconds allowed for each step on the device.")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="Results database (default: $EDGEC_RESULTS_DB or ~/.local/share/edgec/results.db).")
@click.option("--no-store", is_flag=True, help="Do not record the results.")
@click.option("--json", "as_json", is_flag=True, help="Print the agent reports as JSON.")
def profile(build_dirs: tuple[Path, ...], device: str | None, server: str | None, target_profile: str | None,
            labels: str | None, wait: bool, wait_timeout: float, attempts: int, lease_seconds: float | None,
            token_file: Path | None, runs: int | None, min_seconds: float | None,
            warmup: int | None, threads: int | None, batch: int | None, runtime: str | None, power: str | None,
            power_command: str | None, power_rail: str | None, idle_seconds: float | None, python: str | None,
            identity: Path | None, ssh_options: tuple[str, ...], timeout: float, db: Path | None, no_store: bool,
            as_json: bool) -> None:
    """Measure the artifact of each ARTIFACT_DIR (OUT/PROFILE from 'edgec build') on a device.

    \b
    Latency percentiles, throughput and (where the device has a sensor) power and energy per
    inference; each result is kept in the results database for 'edgec report'.
      edgec profile dist/x86-cpu --device local
      edgec profile dist/jetson-nano --device ssh://nvidia@nano.local
    With --server the artifacts are uploaded to a collector and measured by its agents; the
    results stay there ('edgec report --server URL'):
      edgec profile dist/rpi5 --server http://host:8750 --wait
      edgec profile dist/rpi5 --server http://host:8750 --device bench-pi-3 --labels lab=a
    """
    from edgec import measure
    from edgec.agent.vocab import parse_labels
    from edgec.errors import EdgecError

    if runs is not None and min_seconds is not None:
        raise EdgecError("give --runs or --min-seconds, not both")
    bench = dict(runs=runs, min_seconds=min_seconds, warmup=warmup, threads=threads, batch=batch, power=power,
                 power_rail=power_rail, idle_seconds=idle_seconds)
    if server:
        given = [flag for flag, value in (("--python", python), ("--identity", identity), ("--ssh-option", ssh_options),
                                          ("--db", db), ("--no-store", no_store), ("--power-command", power_command))
                 if value]
        if given:
            raise EdgecError(f"{', '.join(given)} do(es) not apply with --server: the collector keeps the results and "
                             "each agent has its own settings (edgec-agent run --power-command)")
        try:
            label_dict = parse_labels(labels)
        except ValueError as exc:
            raise EdgecError(str(exc)) from None
        request = measure.FleetRequest(server=server, token_file=token_file, profile=target_profile, device=device,
                                       labels=label_dict, runtime=runtime, attempts=attempts,
                                       lease_seconds=lease_seconds, timeout=timeout, bench=bench)
        _profile_on_fleet(build_dirs, request, wait, wait_timeout, as_json)
        return
    given = [flag for flag, value in (("--target", target_profile), ("--labels", labels), ("--wait", wait),
                                      ("--lease-seconds", lease_seconds), ("--token-file", token_file)) if value]
    if given:
        raise EdgecError(f"{', '.join(given)} need(s) --server URL (a collector started with 'edgec serve')")
    device = device or "local"
    results = [measure.measure(build_dir, device, runtime=runtime, python=python, identity=identity,
                               ssh_options=ssh_options, timeout=timeout, db=db, store=not no_store,
                               power_command=power_command, **bench)
               for build_dir in build_dirs]
    comparison = measure.baselines(results, db if not no_store else None)
    if as_json:
        click.echo(json.dumps({"results": [
            {"build_dir": str(r.build_dir), "device": r.device, "result_id": r.result_id,
             "db": str(r.db) if r.db else None, **comparison.get(id(r), {}), "report": r.report}
            for r in results]}, indent=2))
        return
    for r in results:
        print_result(r)
    print_comparison(results, comparison)


def _profile_on_fleet(build_dirs, request, wait: bool, wait_timeout: float, as_json: bool) -> None:
    """Queue each build on the collector; with ``wait``, print the results like a local run."""
    from edgec import measure
    from edgec.errors import EdgecError
    from edgec.fleet.client import Client
    from edgec.fleet.tokens import client_token

    with Client(request.server, client_token(request.token_file)) as client:
        queued = measure.queue_on_fleet(client, build_dirs, request)
        for job in queued:
            where = f"device {job['device']}" if job["device"] else f"profile {job['profile']}"
            click.echo(f"queued job {job['id']}: {job['build_dir']}/{job['record']['file']} on {where}", err=True)
            if not job["matching_devices"]:
                labels = ",".join(f"{k}={v}" for k, v in request.labels.items())
                click.echo(f"warning: no registered device can run job {job['id']} ({where}"
                           f"{', labels ' + labels if labels else ''}, runtime {job['runtime']}); it waits until "
                           "one registers ('edgec devices' lists them)", err=True)
        if not wait:
            if as_json:
                click.echo(json.dumps({"jobs": [{k: v for k, v in j.items() if k not in ("manifest", "record")}
                                                | {"build_dir": str(j["build_dir"])} for j in queued]}, indent=2))
            else:
                click.echo(f"follow them with: edgec jobs --server {client.url}", err=True)
            return
        results, failures = measure.collect_from_fleet(client, queued, wait_timeout)
    comparison = measure.baselines(results, None)
    if as_json:
        click.echo(json.dumps({"server": client.url, "results": [
            {"build_dir": str(r.build_dir), "device": r.device, "job_id": r.job_id, "result_id": r.result_id,
             **comparison.get(id(r), {}), "report": r.report} for r in results]}, indent=2))
    else:
        for r in results:
            print_result(r)
            click.echo(f"stored as result {r.result_id} on {client.url} (job {r.job_id})")
        print_comparison(results, comparison)
    if failures:
        raise EdgecError("; ".join(failures))


def print_result(r) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import console, human_bytes

    out = console()
    rep = r.report
    rt, dev, lat, thr = rep["runtime"], rep["device"], rep["latency_ms"], rep["throughput"]
    precision = r.precision
    out.print(f"[bold]{escape(str(r.build_dir))}[/] {escape(r.artifact['file'])} ({precision}, "
              f"{human_bytes(rep['artifact']['bytes'])}) on {escape(r.device)}: {escape(dev['model'])} "
              f"({escape(dev['kind'])})")
    out.print(escape(f"runtime {rt['name']} {rt['version'] or ''}"
                     f"{' (' + rt['delegate'] + ')' if rt['delegate'] else ''}, threads {rt['threads'] or 'default'}, "
                     f"batch {thr['batch']}; load {rep['timings_ms']['load']:.1f} ms, "
                     f"cold first inference {rep['timings_ms']['cold_first_inference']:.3f} ms"))
    table = Table(title=f"latency over {lat['count']} runs ({thr['timed_s']:.2f} s)", title_justify="left")
    for col in ("min", "median", "mean", "p90", "p99", "max", "std"):
        table.add_column(f"{col} ms", justify="right")
    table.add_column("inferences/s", justify="right")
    table.add_row(*[f"{lat[c]:.4f}" for c in ("min", "median", "mean", "p90", "p99", "max", "std")],
                  f"{thr['inferences_per_s']:.1f}")
    out.print(table)
    p = rep["power"]
    if p["available"]:
        e = p["energy_mj_per_inference"]
        idle = f"{p['idle_w']:.3f} W" if p["idle_w"] is not None else "-"
        above = f"{e['above_idle']:.4f}" if e["above_idle"] is not None else "-"
        out.print(escape(f"power ({p['sensor']}, {p['scope']}, total {p['total_rail'] or 'sum of rails'}): "
                         f"idle {idle}, active {p['active_w']:.3f} W, peak {p['peak_w']:.3f} W; energy "
                         f"{e['total']:.4f} mJ/inference ({above} above idle); {p['samples']['total']} samples "
                         f"at {p['rate_hz']:.0f} Hz"))
    else:
        out.print(escape(f"power: unavailable ({p['reason']})"))
    for w in rep["warnings"]:
        out.print(f"[yellow]warning:[/] {escape(w)}")
    if r.result_id is not None and r.db is not None:
        out.print(escape(f"stored as result {r.result_id} in {r.db}"))


def print_comparison(results, comparison) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import console

    if not any(c["speedup_vs_fp32"] is not None for c in comparison.values()):
        return
    table = Table(title="against the fp32 artifact of the same model on the same device", title_justify="left")
    for col, justify in (("artifact", "left"), ("precision", "left"), ("median ms", "right"), ("p90 ms", "right"),
                         ("p99 ms", "right"), ("speedup x", "right"), ("compression x", "right"), ("baseline", "left")):
        table.add_column(col, justify=justify)
    for r in results:
        c = comparison[id(r)]
        lat = r.report["latency_ms"]
        table.add_row(escape(f"{r.build_dir}/{r.artifact['file']}"), r.precision,
                      f"{lat['median']:.4f}", f"{lat['p90']:.4f}", f"{lat['p99']:.4f}",
                      f"{c['speedup_vs_fp32']:.2f}" if c["speedup_vs_fp32"] is not None else "-",
                      f"{c['compression_vs_fp32']:.2f}" if c["compression_vs_fp32"] is not None else "-",
                      escape(c["baseline"] or "-"))
    out = console()
    out.print(table)
    for r in results:
        c = comparison[id(r)]
        if c["threads_differ"]:
            out.print(escape(f"note: {r.build_dir}/{r.artifact['file']} ran with {r.report['runtime']['threads'] or 'default'} "
                             f"threads, its fp32 baseline ({c['baseline']}) with {c['baseline_threads'] or 'default'}: "
                             "the speed-up is not like for like; pass the same --threads to both"))
