"""edgec analyze: which ops int8 quantization hurts, per target kind."""

from __future__ import annotations

from pathlib import Path

import click

from edgec.calibration.inputs import range_names
from edgec.util import dumps_json


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", required=True, metavar="PROFILE",
              help="Device profile id (see 'edgec targets') or a profile .toml file; its target kind decides the "
                   "int8 scheme analyzed (TFLite, Edge TPU, TensorRT Q/DQ).")
@click.option("--calib", required=True, metavar="DATA", help="Representative data: .npz (x), .npy, image folder or "
              "module:function.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Calibration samples drawn from --calib.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling.")
@click.option("--eval", "eval", metavar="DATA", help="Data the metric is measured on: with labels, accuracy; without, "
              "top-1 agreement with the float model. Default: the calibration data (agreement).")
@click.option("--eval-output", metavar="NAME", help="The model output the metric is taken on (default: the single "
              "classification output).")
@click.option("--input-range", type=click.Choice(range_names()),
              help="What pixels map onto for this model (as for edgec build).")
@click.option("--normalize", metavar="PRESET", help="Per-channel normalization preset for pixels (imagenet, caffe).")
@click.option("--mean", metavar="M1,M2,M3", help="Per-channel mean for pixels (with --std).")
@click.option("--std", metavar="S1,S2,S3", help="Per-channel std, with --mean.")
@click.option("--sort", type=click.Choice(["graph", "sensitivity"]), default="graph", show_default=True,
              help="Row order: graph order, or most sensitive first.")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE.png",
              help="Write SQNR and sensitivity per layer as a PNG.")
@click.option("--custom-objects", multiple=True, metavar="PATH.py|MODULE",
              help="Import the code that registers the model's custom layers before loading it (repeatable).")
@click.option("--remedies/--no-remedies", default=True, show_default=True,
              help="Also measure each integer remedy alone (equalization, bias correction, ranges, AdaRound, 16x8).")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
def analyze(model: Path, target: str, sort: str, plot: Path | None, as_json: bool, **options) -> None:
    """Per quantizable op of MODEL's int8 artifact for PROFILE: weight and activation scales, the
    op's output error (RMSE in quantization steps, SQNR) and its sensitivity: the metric change when
    that op alone is left in float.

    \b
    Then keep the sensitive ops in float within a budget:
      edgec build MODEL --target PROFILE --precision int8 --calib DATA --eval DATA \\
          --max-accuracy-drop 1.0 --accuracy-control
    """
    from edgec import supervise

    # in a child process: a native crash is one line; the quick checks fail there just as fast
    result = supervise.call("edgec.analyze:analyze", model, target, what="analysis", **options)
    if plot is not None:
        from edgec.accuracy.report import plot as draw

        result["plot"] = str(draw(result, plot))
    if as_json:
        click.echo(dumps_json(result, what="--json", indent=2))
        return
    print_analysis(result, sort)


def print_analysis(result: dict, sort: str) -> None:
    from rich.markup import escape

    from edgec.accuracy.report import analysis_table
    from edgec.util import console

    out = console()
    out.print(f"[bold]{escape(result['profile'])}[/] ({escape(result['device'])}): {result['kind']} int8 of "
              f"{escape(result['model']['name'])}")
    out.print(analysis_table(result, sort))
    top = next(r for r in result["ops"] if r["rank"] == 1)
    out.print(escape(f"most sensitive: #{top['index']} {top['op']} ({top['layer']}), "
                     f"{top['sensitivity_points']:+.2f} points when left in float alone; "
                     f"{result['evaluations']} configurations measured"))
    if result.get("remedies"):
        from edgec.accuracy.report import alone_table

        out.print(alone_table(result))
    for line in result.get("notes", []):
        out.print(f"note: {escape(line)}")
    for line in result.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(line)}")
    if result.get("plot"):
        out.print(f"plot: {escape(result['plot'])}")
