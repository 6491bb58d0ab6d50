"""edgec build: Keras model in, verified device artifacts out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.config import Precision


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", required=True, metavar="PROFILE",
              help="Device profile id (see 'edgec targets') or a profile .toml file.")
@click.option("-p", "--precision", type=click.Choice([p.value for p in Precision]), default=None,
              help="Artifact precision. Default: the profile's default (int8 for CPU devices).")
@click.option("--calib", metavar="DATA", help="Representative data for int8: .npz (x), .npy, image folder or module:function.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Calibration samples drawn from --calib.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling and training.")
@click.option("--eval", "eval_", metavar="DATA", help="Labelled data (.npz with x, y or class folders) to verify the artifact against the float model.")
@click.option("--max-accuracy-drop", type=float, metavar="POINTS",
              help="Fail (exit 1) when the artifact's accuracy is more than POINTS below the float model's.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("dist"), show_default=True,
              help="Output root; artifacts go to OUT/PROFILE.")
@click.option("--require-compiler", is_flag=True,
              help="Fail (exit 1) when the device compiler (edgetpu_compiler) cannot run here, instead of "
                   "writing the compiler-ready model and the command to finish the compile.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of tables.")
def build(model: Path, target: str, precision: str | None, calib: str | None, calib_samples: int, seed: int,
          eval_: str | None, max_accuracy_drop: float | None, out: Path, require_compiler: bool,
          as_json: bool) -> None:
    """Build and verify device artifacts for MODEL (.keras, .h5 or SavedModel dir)."""
    from edgec.pipeline import build as run_build
    from edgec.progress import Progress

    result = run_build(
        model, target, precision=precision, calib=calib, calib_samples=calib_samples, seed=seed,
        eval=eval_, max_accuracy_drop=max_accuracy_drop, out=out, require_compiler=require_compiler,
        progress=Progress(),
    )
    if as_json:
        click.echo(json.dumps(result.manifest, indent=2))
    else:
        print_summary(result)
    result.raise_for_checks()


def print_summary(result) -> None:
    from rich.table import Table

    from edgec.util import console, human_bytes

    m = result.manifest
    out = console()
    out.print(f"[bold]{m['profile']['id']}[/] ({m['profile']['device']}): {m['target']} {m['precision']} "
                  f"-> {result.out_dir}")
    arts = Table(title="artifacts", title_justify="left")
    for col in ("file", "role", "precision", "size", "sha256", "inputs", "outputs"):
        arts.add_column(col)
    for a in m["artifacts"]:
        io = lambda ts: ", ".join(f"{t['dtype']}{t['shape']}" for t in ts) if ts else "-"  # noqa: E731
        arts.add_row(a["file"], a["role"], a.get("precision") or "-", human_bytes(a["bytes"]), a["sha256"][:12],
                     io(a.get("inputs")), io(a.get("outputs")))
    out.print(arts)
    v = m.get("verification")
    if v:
        out.print(verification_table(v, m["precision"]))
    for line in (m.get("edgetpu") or {}).get("summary", []):
        out.print(line)
    for check in m.get("checks", []):
        mark = "[green]PASS[/]" if check["passed"] else "[red]FAIL[/]"
        out.print(f"{mark} {check['message']}")


def verification_table(v: dict, precision: str):
    from rich.table import Table

    table = Table(title=f"verification on {v['samples']} samples ({v.get('runtime', '')} vs Keras float)",
                  title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "float_accuracy" in v:
        table.add_row("float accuracy", f"{v['float_accuracy'] * 100:.2f} %")
        table.add_row(f"{precision} accuracy", f"{v['artifact_accuracy'] * 100:.2f} %")
        table.add_row("drop (points)", f"{v['accuracy_drop_points']:.2f}")
    if "agreement" in v:
        table.add_row("top-1 agreement", f"{v['agreement'] * 100:.2f} %")
    table.add_row("max abs diff", f"{v['max_abs_diff']:.4g}")
    table.add_row("mean abs diff", f"{v['mean_abs_diff']:.4g}")
    return table
