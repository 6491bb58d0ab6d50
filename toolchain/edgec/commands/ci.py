"""edgec ci: every model x target of a config built, gated on budgets, reported for CI systems."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.ci.config import DEFAULT_CONFIG
from edgec.commands._types import FiniteFloat


class _CiGroup(click.Group):
    """``edgec ci [CONFIG] [options]`` runs; ``edgec ci plan|merge ...`` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


_config_arg = click.argument("config", required=False, default=DEFAULT_CONFIG,
                             type=click.Path(path_type=Path, dir_okay=False))


def _report_options(func):
    for flag, what in (("--markdown", "a Markdown summary (for a CI step summary)"),
                       ("--junit", "JUnit XML (one testcase per model x target x budget)"),
                       ("--json", "the results document (what --baseline and 'edgec ci merge' read)")):
        func = click.option(flag, flag.strip("-") + "_path", type=click.Path(path_type=Path, dir_okay=False),
                            metavar="FILE", help=f"Write {what} to FILE.")(func)
    return func


@click.group(cls=_CiGroup, subcommand_metavar="[CONFIG] [OPTIONS] | plan ... | merge ...",
             context_settings={"help_option_names": ["-h", "--help"]})
def ci() -> None:
    """Build every model x target of a config, gate the budgets, report in CI formats.

    \b
      edgec ci [CONFIG] [--only MODEL/TARGET ...] [--jobs N] [--baseline RESULTS.json]
               [--cache DIR | --no-cache] [--json FILE] [--junit FILE] [--markdown FILE] [--out DIR]
      edgec ci plan [CONFIG] --shards N        JSON matrix of N balanced shards
      edgec ci merge A.json B.json ... --junit FILE --markdown FILE
    CONFIG defaults to ./edgec.toml; 'edgec ci run --help' lists every option.
    Exit codes: 0 every budget holds, 1 a budget broke or a build failed, 2 a bad config.
    """


@ci.command("run")
@_config_arg
@click.option("--only", multiple=True, metavar="MODEL/TARGET",
              help="Build only these rows (repeatable; shell wildcards: 'digits/*').")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes building at once (each builds the rows of one model, sharing its work).")
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False), metavar="RESULTS.json",
              help="A previous run's --json results: the regression budgets compare with it.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Content-addressed cache of built rows (default: $EDGEC_CACHE_DIR, else ~/.cache/edgec/ci).")
@click.option("--no-cache", is_flag=True, help="Build every row; do not read or write the cache.")
@_report_options
@click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False), default=Path("dist"),
              show_default=True, help="Output root: each row builds into OUT/MODEL/TARGET.")
@click.option("-d", "--device", metavar="local|ssh://user@host[:port]",
              help="Measure the rows with latency budgets on this device.")
@click.option("--server", metavar="URL", help="Measure the rows with latency budgets on a fleet collector's devices "
              "(any device of each row's profile).")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="With --server: the collector's token (default: $EDGEC_TOKEN).")
@click.option("--min-seconds", type=FiniteFloat(min=0), help="Time inferences for at least S seconds.")
@click.option("--wait-timeout", type=FiniteFloat(min=1), default=3600, show_default=True,
              help="With --server: seconds to wait for each measurement.")
def run(config: Path, only: tuple[str, ...], jobs: int, baseline: Path | None, cache_dir: Path | None,
        no_cache: bool, json_path: Path | None, junit_path: Path | None, markdown_path: Path | None, out: Path,
        device: str | None, server: str | None, token_file: Path | None, min_seconds: float | None,
        wait_timeout: float) -> None:
    """Build, verify and gate every model x target of CONFIG (default ./edgec.toml)."""
    from edgec.ci import load_config
    from edgec.ci.runner import RunOptions
    from edgec.ci.runner import run as run_ci
    from edgec.errors import EdgecError

    if device and server:
        raise EdgecError("give --device or --server, not both")
    if token_file and not server:
        raise EdgecError("--token-file needs --server URL")
    cfg = load_config(config, out=out)
    opts = RunOptions(only=only, jobs=jobs, baseline=baseline, cache_dir=cache_dir, use_cache=not no_cache,
                      device=device, server=server, token_file=token_file, min_seconds=min_seconds,
                      wait_timeout=wait_timeout)
    doc = run_ci(cfg, opts, on_event=lambda row_id, text: click.echo(f"{row_id}: {text}", err=True))
    _finish(doc, json_path, junit_path, markdown_path)


def _finish(doc: dict, json_path: Path | None, junit_path: Path | None, markdown_path: Path | None) -> None:
    from edgec.ci import reports
    from edgec.errors import CheckFailed

    for path, render in ((json_path, reports.to_json), (junit_path, reports.to_junit),
                         (markdown_path, reports.to_markdown)):
        if path is not None:
            reports.write(path, render(doc))
    reports.print_console(doc)
    if doc["verdict"] != "passed":
        s = doc["summary"]
        bad = [f"{r['id']} ({'build error' if r['status'] == 'error' else ', '.join(v['name'] for v in r['budgets'] if v['verdict'] == 'failed')})"
               for r in doc["rows"] if r["status"] != "passed"]
        raise CheckFailed(f"{s['failed'] + s['errors']} of {s['rows']} rows failed: {'; '.join(bad)}")


@ci.command("plan")
@_config_arg
@click.option("--shards", type=click.IntRange(min=1), default=1, show_default=True, help="Number of shards.")
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False), metavar="RESULTS.json",
              help="Balance by the durations of this previous run (default: by row count).")
@click.option("--only", multiple=True, metavar="MODEL/TARGET", help="Plan only these rows.")
def plan(config: Path, shards: int, baseline: Path | None, only: tuple[str, ...]) -> None:
    """Print a JSON matrix of balanced shards, for a CI system's job matrix.

    \b
    {"include": [{"shard": 1, "of": 2, "rows": [...], "only": "--only digits/rpi5 ...", "estimate_s": 12.3}, ...]}
    Each shard runs: edgec ci CONFIG <only> --json shard-N.json
    """
    from edgec.ci import load_config
    from edgec.ci.runner import load_results
    from edgec.ci.shards import plan as plan_shards

    cfg = load_config(config)
    matrix = plan_shards(cfg, shards, load_results(baseline) if baseline else None, only)
    click.echo(json.dumps(matrix, separators=(",", ":")))


@ci.command("merge")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@_report_options
def merge(results: tuple[Path, ...], json_path: Path | None, junit_path: Path | None,
          markdown_path: Path | None) -> None:
    """Join the --json results of several shards into one report (exit 1 when any row failed)."""
    from edgec.ci.shards import merge as merge_results

    _finish(merge_results(list(results)), json_path, junit_path, markdown_path)
