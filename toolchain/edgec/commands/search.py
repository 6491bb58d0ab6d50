"""edgec search: hardware-in-the-loop compression search (:mod:`edgec.search`).

``edgec search MODEL ...`` runs a search (the ``run`` subcommand, named or not); ``edgec search
show`` prints a study's front and ``edgec search export`` copies a trial's build directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.commands._types import FINITE, FiniteFloat


class SearchGroup(click.Group):
    """``edgec search MODEL ...`` is ``edgec search run MODEL ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=SearchGroup)
def search() -> None:
    """Search compression settings (and model hyperparameters) by building and measuring on the device.

    \b
      edgec search model.keras --target rpi5 --fine-tune train.npz --eval eval.npz --trials 20
      edgec search --builder models.py:build --train train.npz --target rpi5 --eval eval.npz
      edgec search show --study digits_cnn-rpi5 --plot front.png
      edgec search export --study digits_cnn-rpi5 --trial 7 --out dist/chosen
    (`edgec search MODEL ...` runs `edgec search run MODEL ...`.)
    """


def _storage_options(func):
    func = click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), default=Path("search"),
                        show_default=True, help="The search's output directory (its default storage is "
                        "OUT/search.db).")(func)
    func = click.option("--storage", metavar="URL", help="Optuna storage: sqlite:///FILE or "
                        "postgresql://USER@HOST/DB (default: OUT/search.db).")(func)
    return func


@search.command("run")
@click.argument("model", required=False, type=click.Path(path_type=Path, exists=True))
@click.option("--builder", metavar="module:function", help="A function taking `hp` and returning an untrained "
              "tf-keras model; trained on --train in each trial.")
@click.option("-t", "--target", required=True, metavar="PROFILE", help="Device profile id or .toml file.")
@click.option("--fine-tune", "fine_tune", metavar="DATA", help="Labelled data for the compression steps "
              "(with --builder: default --train).")
@click.option("--eval", "eval_data", required=True, metavar="DATA", help="Labelled data: every trial's accuracy.")
@click.option("--calib", metavar="DATA", help="int8 representative data (default: the fine-tune inputs).")
@click.option("--train", metavar="DATA", help="With --builder: labelled training data.")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Finished trials (complete or stopped early) the study ends with, across all its workers.")
@click.option("--timeout", type=FiniteFloat(min=0), help="Start no trial after S seconds.")
@click.option("--objectives", metavar="LIST", help="Comma-separated among accuracy, latency, size (zstd bytes), "
              "bytes, params, energy (default: accuracy,latency,size and energy where the device reads power).")
@click.option("--max-accuracy-drop", type=FINITE, metavar="POINTS", help="Constraint: accuracy drop against the "
              "float model.")
@click.option("--max-latency-p50-ms", type=FINITE, metavar="L", help="Constraint: median (p50) latency in ms, "
              "as the latency objective; checked before fine-tuning.")
@click.option("--max-latency-ms", "max_latency_ms_deprecated", type=FINITE, metavar="L", hidden=True,
              help="Deprecated spelling of --max-latency-p50-ms.")
@click.option("--max-bytes", type=FINITE, metavar="B", help="Constraint: artifact bytes; checked before fine-tuning.")
@click.option("--space", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="TOML file overriding the default search space of the target kind.")
@click.option("--sampler", type=click.Choice(["tpe", "nsga2", "random"]), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(["hyperband", "none"]), default="hyperband", show_default=True,
              help="Early stopping on training and fine-tune epochs.")
@click.option("-d", "--device", metavar="local|ssh://user@host[:port]|ID",
              help="Where trials are measured (default local); with --server, a registered device id.")
@click.option("--server", metavar="URL", help="Measure on a fleet collector ('edgec serve'): each repetition a job.")
@click.option("--labels", metavar="k=v,...", help="With --server: the device must carry these labels.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="With --server: the collector's admin token (default: $EDGEC_TOKEN).")
@click.option("--cafile", type=click.Path(path_type=Path, dir_okay=False), envvar="EDGEC_CAFILE",
              help="With --server: CA certificate of an https:// collector.")
@click.option("--runs", type=click.IntRange(min=1), help="Timed inferences per repetition (default: 2 s of them).")
@click.option("--min-seconds", type=FiniteFloat(min=0), help="Time each repetition for at least S seconds.")
@click.option("--warmup", type=click.IntRange(min=0), help="Warm-up inferences per repetition (default 10).")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime threads (default: the profile's).")
@click.option("--min-repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Agent runs per measurement before its interval is judged.")
@click.option("--max-repeats", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most agent runs per measurement.")
@click.option("--latency-rtol", type=FiniteFloat(min=0), default=0.02, show_default=True,
              help="Stop repeating once the 95 %% interval is within this share of the median.")
@click.option("--python", metavar="PATH", help="The device's Python (ssh devices).")
@click.option("-i", "--identity", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="ssh -i key.")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE", help="ssh -o option (repeatable).")
@_storage_options
@click.option("--study", metavar="NAME", help="Study name (default: MODEL-TARGET); the same name resumes it.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes here (others may join from other machines on the same --storage).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds builds, training and the sampler.")
@click.option("--heartbeat", type=click.IntRange(min=1), default=20, show_default=True,
              help="Seconds between a running trial's heartbeats; one silent for twice that is retried.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Retries of a trial whose worker died.")
@click.option("--json", "as_json", is_flag=True, help="Print the study summary as JSON.")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), help="Write the front plot (PNG).")
@click.option("--custom-objects", multiple=True, metavar="PATH.py|MODULE",
              help="Import the code that registers the model's custom layers before loading it (repeatable).")
def run(model, builder, target, fine_tune, eval_data, calib, train, trials, timeout, objectives, max_accuracy_drop,
        max_latency_p50_ms, max_latency_ms_deprecated, max_bytes, space, sampler, pruner, device, server, labels,
        token_file, cafile, runs, min_seconds, warmup, threads, min_repeats, max_repeats, latency_rtol, python,
        identity, ssh_options, out, storage, study, workers, seed, heartbeat, retries, as_json, plot,
        custom_objects) -> None:
    """Search compression settings for MODEL on a device; print the Pareto front.

    \b
    Every trial is built and verified like `edgec build` and measured on the device like
    `edgec profile`; the study resumes under the same --study and --storage.
    """
    from edgec.agent.vocab import parse_labels
    from edgec.errors import EdgecError
    from edgec.search import api
    from edgec.search.device import Device

    if max_latency_ms_deprecated is not None:
        if max_latency_p50_ms is not None:
            raise EdgecError("give --max-latency-p50-ms, not also its deprecated spelling --max-latency-ms")
        click.echo("Warning: --max-latency-ms is deprecated: it limits the median (p50) latency; write "
                   "--max-latency-p50-ms (CI's latency budget is max_latency_p90_ms)", err=True)
        max_latency_p50_ms = max_latency_ms_deprecated
    if runs is not None and min_seconds is not None:
        raise EdgecError("give --runs or --min-seconds, not both")
    if not server:
        given = [f for f, v in (("--labels", labels), ("--token-file", token_file)) if v]
        if given:
            raise EdgecError(f"{', '.join(given)} need(s) --server URL")
    try:
        label_dict = parse_labels(labels)
    except ValueError as exc:
        raise EdgecError(str(exc)) from None
    dev = Device(device=device if server else (device or "local"), server=server, labels=label_dict,
                 token_file=token_file, cafile=cafile, runs=runs, min_seconds=min_seconds, warmup=warmup,
                 threads=threads, min_runs=min_repeats, max_runs=max_repeats, rtol=latency_rtol, python=python,
                 identity=identity, ssh_options=tuple(ssh_options))
    request = api.Request(
        target=target, eval=eval_data, model=model, builder=builder, fine_tune=fine_tune, calib=calib, train=train,
        trials=trials, timeout=timeout,
        objectives=[o.strip() for o in objectives.split(",") if o.strip()] if objectives is not None else None,
        max_accuracy_drop=max_accuracy_drop, max_latency_p50_ms=max_latency_p50_ms, max_bytes=max_bytes, space=space,
        sampler=sampler, pruner=pruner, device=dev, storage=storage, study=study, workers=workers, seed=seed,
        out=out, heartbeat=heartbeat, retries=retries, custom_objects=tuple(custom_objects))

    def progress(line: str, event: dict) -> None:
        click.echo(line, err=True)

    doc = api.run(request, on_event=progress)
    _finish(doc, as_json, plot)
    if doc["stopped"] == "timeout" and doc["counts"]["finished"] < trials:
        click.echo(f"--timeout reached after {doc['counts']['finished']} of {trials} trials; run the same command "
                   "again to continue the study", err=True)
    if not doc["front"]:
        from edgec.errors import CheckFailed

        raise CheckFailed("no trial met every constraint; relax --max-accuracy-drop/--max-latency-p50-ms/--max-bytes "
                          "or widen the --space")


def _finish(doc: dict, as_json: bool, plot: Path | None) -> None:
    from edgec.search import report

    if plot is not None:
        report.plot(doc, plot)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        report.print_summary(doc)
    if plot is not None:
        click.echo(f"plot: {plot}", err=True)


@search.command("show")
@_storage_options
@click.option("--study", required=True, metavar="NAME", help="The study.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), help="Write the front plot (PNG).")
def show(out, storage, study, as_json, plot) -> None:
    """Print a study's Pareto front, baselines and trial counts."""
    from edgec.search import api

    _finish(api.show(study, storage=storage, out=out), as_json, plot)


@search.command("export")
@click.option("--storage", metavar="URL", help="Optuna storage (default: search/search.db, or --from DIR).")
@click.option("--from", "from_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("search"),
              show_default=True, help="The search's output directory (for its default storage).")
@click.option("--study", required=True, metavar="NAME", help="The study.")
@click.option("--trial", required=True, type=click.IntRange(min=0), help="The trial's number.")
@click.option("--out", "dest", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where the build directory goes (DIR/PROFILE, as 'edgec build --out DIR').")
def export(storage, from_dir, study, trial, dest) -> None:
    """Copy a trial's build directory (artifact + manifest.json) out of the search."""
    from edgec.search import api

    final = api.export(study, trial, dest, storage=storage, out=from_dir)
    click.echo(str(final))
