"""edgec inspect: what is inside an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
def inspect(artifact: Path, as_json: bool) -> None:
    """Per-op table of ARTIFACT (.tflite): op, dtype, shape, parameters, zero share, unique values, bytes.

    Sparsity, shared values (clusters) and 2:4 structure are read from the file itself.
    """
    from edgec.errors import EdgecError
    from edgec.inspection import inspect_tflite

    if artifact.suffix.lower() != ".tflite":
        raise EdgecError(f"cannot inspect '{artifact}': expected a .tflite file")
    report = inspect_tflite(artifact)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    print_tflite_report(report)


def print_tflite_report(report: dict) -> None:
    from rich.table import Table

    from edgec.util import console, human_bytes

    out = console()
    io = lambda ts: ", ".join(  # noqa: E731
        f"{t['dtype']}{t['shape']}" + (f" q(scale={t['quantization']['scale']:.4g}, zp={t['quantization']['zero_point']})"
                                       if t.get("quantization") and not isinstance(t["quantization"]["scale"], list) else "")
        for t in ts)
    out.print(f"[bold]{report['file']}[/]  inputs: {io(report['inputs'])}  outputs: {io(report['outputs'])}")
    table = Table()
    for col, justify in (("#", "right"), ("op", "left"), ("out dtype", "left"), ("out shape", "left"),
                         ("weights", "left"), ("params", "right"), ("zeros", "right"), ("unique/ch", "right"),
                         ("bytes", "right")):
        table.add_column(col, justify=justify)
    for r in report["ops"]:
        weights = f"{r['weight_dtype']}{r['weight_shape']}" if r["weight_dtype"] else "-"
        zeros = f"{r['zero_share'] * 100:.1f} %" if r["zero_share"] is not None else "-"
        uniq = str(r["unique_values"]) if r["unique_values"] is not None else "-"
        table.add_row(str(r["index"]), r["op"], r["dtype"] or "-", str(r["shape"]), weights,
                      f"{r['params']:,}", zeros, uniq, f"{r['bytes']:,}")
    out.print(table)
    t = report["totals"]
    extra = f", zstd {human_bytes(t['zstd_bytes'])}" if "zstd_bytes" in t else ""
    out.print(
        f"totals: {t['ops']} ops, {t['params']:,} parameters, weights {human_bytes(t['weight_bytes'])}, "
        f"kernel zeros {t['kernel_zero_share'] * 100:.1f} %, file {human_bytes(t['file_bytes'])} "
        f"(gzip {human_bytes(t['gzip_bytes'])}{extra})"
    )
    kernels = [r for r in report["ops"] if r["unique_values"] is not None]
    if kernels:
        structured = t.get("sparsity_2_4_min")
        out.print(
            f"compression: {t['kernel_zero_share'] * 100:.1f} % zeros in {len(kernels)} kernels, at most "
            f"{t['max_unique_per_channel']} unique values per output channel "
            f"({max(r['unique_values_tensor'] for r in kernels)} per kernel)"
            + (f", 2:4 groups: {structured * 100:.1f} % compliant (worst kernel)"
               if structured is not None else "")
        )
    if t.get("saturated_bias"):
        out.print(f"[yellow]warning[/]: {t['saturated_bias']} int32 bias values sit at the int32 limit "
                  "(bias scale too small for the bias: the artifact computes clipped values)")
    out.print("op counts: " + ", ".join(f"{k} x{v}" for k, v in report["op_counts"].items()))
