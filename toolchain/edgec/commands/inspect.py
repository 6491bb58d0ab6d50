"""edgec inspect: what is inside an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgec.util import dumps_json


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
@click.option("--edgetpu", is_flag=True,
              help="Op-by-op Edge TPU map instead (.tflite): which ops the Edge TPU runs, which fall back to the CPU and why.")
def inspect(artifact: Path, as_json: bool, edgetpu: bool) -> None:
    """Per-op table of ARTIFACT (.tflite or .onnx): ops, weights, parameters, quantization, bytes.

    For .tflite, sparsity, shared values (clusters) and 2:4 structure are read from the file itself.
    """
    from edgec.errors import EdgecError

    suffix = artifact.suffix.lower()
    if suffix == ".onnx" and edgetpu:
        raise EdgecError(f"--edgetpu analyses .tflite models; '{artifact}' is an ONNX model")
    if suffix == ".onnx":
        from edgec.targets.tensorrt.inspect import inspect_onnx

        report, show = inspect_onnx(artifact), print_onnx_report
    elif suffix != ".tflite":
        raise EdgecError(f"cannot inspect '{artifact}': expected a .tflite or .onnx file")
    elif edgetpu:
        from edgec.targets.edgetpu import analyze

        report, show = analyze(artifact), print_edgetpu_report
    else:
        from edgec.inspection import inspect_tflite

        report, show = inspect_tflite(artifact), print_tflite_report
    if not edgetpu:
        report["output_map"] = output_map(artifact, report["outputs"])
    if as_json:
        click.echo(dumps_json(report, what="--json", indent=2))
    else:
        show(report)
        print_output_map(report.get("output_map"), report.get("float_ops"))


def output_map(artifact: Path, outputs: list[dict]) -> dict[str, Any]:
    """The artifact's outputs by name and index, and, when the build's manifest.json sits beside
    it, whether they follow the model's order."""
    from edgec import manifest as manifest_mod
    from edgec.errors import EdgecError

    names = [o.get("name") for o in outputs]
    out: dict[str, Any] = {"outputs": [{"index": i, "name": n} for i, n in enumerate(names)]}
    beside = artifact.parent / manifest_mod.FILENAME
    if beside.is_file():
        try:
            model_names = [o["name"] for o in (manifest_mod.read(beside).get("source") or {}).get("outputs", [])]
        except (EdgecError, KeyError, TypeError):
            model_names = []
        if model_names and sorted(model_names) == sorted(n for n in names if n):
            out["model_order"] = model_names
            out["order_kept"] = model_names == names
    return out


def print_output_map(mapping: dict[str, Any] | None, float_ops: list[dict] | None) -> None:
    from rich.markup import escape

    from edgec.util import console

    out = console()
    if mapping and len(mapping["outputs"]) > 1:
        out.print(escape("outputs by index: " + ", ".join(f"{o['index']} {o['name']}" for o in mapping["outputs"])))
        if mapping.get("order_kept") is False:
            out.print("[yellow]warning:[/] " + escape(
                "the outputs are not in the model's order (" + ", ".join(mapping["model_order"]) + "): index them by "
                "name, as mapped above"))
    if float_ops:
        out.print("[yellow]float ops:[/] " + escape(", ".join(f"#{o['index']} {o['op']}" for o in float_ops)
                                                   + " compute in float in this integer model"))


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


def print_edgetpu_report(report: dict) -> None:
    from rich.table import Table

    from edgec.targets.edgetpu import summary_lines
    from edgec.util import console

    out = console()
    r = report["rules"]
    out.print(f"[bold]{report['file']}[/]  Edge TPU rules: runtime >= {r['min_runtime_version']}, "
              f"{r['cache_mb']:g} MiB parameter cache x {r['num_tpus']} TPU(s)")
    table = Table()
    for col, justify in (("#", "right"), ("op", "left"), ("v", "right"), ("Edge TPU", "left"), ("reason", "left"),
                         ("MACs", "right"), ("param bytes", "right")):
        table.add_column(col, justify=justify)
    for row in report["ops"]:
        mark = "[green]yes[/]" if row["on_tpu"] else "[red]CPU[/]"
        reason = row["reason"] + (f" (note: {row['note']})" if row.get("note") and row["on_tpu"] else "")
        table.add_row(str(row["index"]), row["op"], str(row["version"]), mark, reason, f"{row['macs']:,}",
                      f"{row['param_bytes']:,}")
    out.print(table)
    for line in summary_lines(report):
        out.print(line)
    for warning in report["warnings"]:
        out.print(f"[yellow]warning:[/] {warning}")


def print_onnx_report(report: dict[str, Any]) -> None:
    """The ``edgec inspect model.onnx`` tables: ops, Q/DQ placement, totals."""
    from rich.table import Table

    from edgec.util import console, human_bytes

    out = console()
    io = lambda ts: ", ".join(f"{t['name']} {t['dtype']}{t['shape']}" for t in ts)  # noqa: E731
    out.print(f"[bold]{report['file']}[/]  ONNX opset {report['opset']} ({report['producer'] or '?'})  "
              f"inputs: {io(report['inputs'])}  outputs: {io(report['outputs'])}")
    table = Table(title="ops", title_justify="left")
    for col, justify in (("#", "right"), ("op", "left"), ("out shape", "left"), ("weights", "left"),
                         ("params", "right"), ("q input", "left"), ("zeros", "right"), ("bytes", "right")):
        table.add_column(col, justify=justify)
    for r in report["ops"]:
        weights = f"{r['weight_dtype']}{r['weight_shape']}" if r["weight_dtype"] else "-"
        zeros = f"{r['zero_share'] * 100:.1f} %" if r["zero_share"] is not None else "-"
        table.add_row(str(r["index"]), r["op"], str(r["shape"]), weights, f"{r['params']:,}",
                      "int8" if r["quantized_input"] else "-", zeros, f"{r['bytes']:,}")
    out.print(table)
    if report["qdq"]:
        q = Table(title="Q/DQ placement", title_justify="left")
        for col in ("tensor", "kind", "dtype", "granularity", "scale", "zero points", "feeds"):
            q.add_column(col)
        for r in report["qdq"]:
            gran = f"per-channel x{r['channels']} (axis {r['axis']})" if r["per_channel"] else "per-tensor"
            scale = (f"{r['scale']:.4g}" if r["scale"] is not None else
                     f"{r['scale_range'][0]:.3g}..{r['scale_range'][1]:.3g}" if r["scale_range"] else "-")
            q.add_row(r["tensor"][-60:], r["kind"], r["dtype"], gran, scale, str(r["zero_points"]),
                      ", ".join(r["consumers"]))
        out.print(q)
    t = report["totals"]
    extra = f", zstd {human_bytes(t['zstd_bytes'])}" if "zstd_bytes" in t else ""
    zp = f", zero points {t['zero_points']}" if t["qdq_tensors"] else ""
    out.print(f"totals: {t['ops']} ops ({t['nodes']} nodes), {t['params']:,} parameters, initializers "
              f"{human_bytes(t['initializer_bytes'])}, Q/DQ on {t['qdq_weights']} weights + {t['qdq_activations']} "
              f"activations{zp}, file {human_bytes(t['file_bytes'])} (gzip {human_bytes(t['gzip_bytes'])}{extra})")
    out.print("op counts: " + ", ".join(f"{k} x{v}" for k, v in report["op_counts"].items()))
