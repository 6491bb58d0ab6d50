"""edgec build: Keras model in, verified device artifacts out."""

from __future__ import annotations

from pathlib import Path

import click

from edgec.calibration.inputs import range_names
from edgec.commands._types import FINITE, FINITE_OR_AUTO, OutputDir
from edgec.config import Precision
from edgec.util import dumps_json


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", "targets", required=True, multiple=True, metavar="PROFILE",
              help="Device profile id (see 'edgec targets') or a profile .toml file; repeat it to build several "
                   "targets with shared work (load, float evaluation, fine-tuning once per QAT scheme).")
@click.option("-p", "--precision", type=click.Choice([p.value for p in Precision]), default=None,
              help="Artifact precision. Default: the profile's default (int8 for CPU devices).")
@click.option("--calib", metavar="DATA", help="Representative data for int8: .npz (x), .npy, image folder or module:function.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Calibration samples drawn from --calib.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling and training.")
@click.option("--eval", "eval", metavar="DATA", help="Data to verify the artifact against the float model (.npz with x and "
              "y labels, class folders, module:function); without labels: agreement and error per output.")
@click.option("--eval-output", metavar="NAME", help="The model output the --eval labels belong to (default: the single "
              "classification output).")
@click.option("--max-accuracy-drop", type=FINITE, metavar="POINTS",
              help="Fail (exit 1) when the artifact's accuracy is more than POINTS below the float model's.")
@click.option("--allow-float-ops", is_flag=True, help="Accept an int8 artifact that still computes some ops in float "
              "(listed either way); without it such a build fails (exit 1).")
@click.option("--accuracy-control", is_flag=True, help="int8: keep the fewest ops in float that bring the drop on --eval "
              "within --max-accuracy-drop (ranked by sensitivity, reverted greedily; see 'edgec analyze'). Without "
              "labels the drop is top-1 disagreement with the float model.")
@click.option("--equalize", is_flag=True, help="int8: cross-layer equalization of the float model first (same float "
              "function; see docs/accuracy.md).")
@click.option("--bias-correct", is_flag=True, help="int8: correct each layer's bias for its int8 weight error, "
              "measured on --calib.")
@click.option("--range", "act_range", type=click.Choice(["minmax", "percentile", "mse"]),
              help="int8 activation ranges: calibrated min/max, 99.99th percentiles, or the MSE-optimal clip per "
                   "tensor (TFLite targets).  [default: minmax]")
@click.option("--adaround", is_flag=True, help="int8: learn each weight's rounding (up/down) on --calib (AdaRound).")
@click.option("--int16-activations", is_flag=True, help="16-bit activations with int8 weights for the whole model "
              "(TFLite 16x8 kernels; not the Edge TPU or TensorRT).")
@click.option("--remedies/--no-remedies", default=True, show_default=True, help="With --accuracy-control: try the "
              "integer remedies above, in order of cost, before keeping ops in float.")
@click.option("--input-range", type=click.Choice(range_names()),
              help="What pixels (image folders, uint8 arrays) map onto for this model. Default: from a Rescaling or "
                   "Normalization input layer, else 0,1.")
@click.option("--normalize", metavar="PRESET", help="Per-channel normalization preset for pixels (imagenet, caffe) "
              "instead of --input-range.")
@click.option("--mean", metavar="M1,M2,M3", help="Per-channel mean for pixels: (pixel / 255 - mean) / std "
              "(values above 1: pixel units).")
@click.option("--std", metavar="S1,S2,S3", help="Per-channel std, with --mean.")
@click.option("-o", "--out", type=OutputDir(), default=Path("dist"), show_default=True,
              help="Output root; artifacts go to OUT/PROFILE.")
@click.option("--require-compiler", is_flag=True,
              help="Fail (exit 1) when the device compiler (edgetpu_compiler) cannot run here, instead of "
                   "writing the compiler-ready model and the command to finish the compile.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of tables.")
@click.option("--fine-tune", "fine_tune", metavar="DATA",
              help="Labelled data for the compression steps: .npz (x, y), class folders or module:function.")
@click.option("--epochs", type=int, help="Fine-tuning epochs per compression step (a held-out slice stops a step "
              "early). Default: 10, and 20 for --prune-channels and --low-rank.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Fine-tuning batch size.")
@click.option("--lr", type=FINITE, help="Fine-tuning learning rate (Adam) of every step. Default: 1e-3; 3e-3 for "
              "--prune-channels and --low-rank; 1e-4 for --qat alone or right after them.")
@click.option("--prune", type=FINITE_OR_AUTO, metavar="SPARSITY|auto",
              help="Magnitude pruning: share of Conv/Dense kernel weights set to zero, e.g. 0.8; auto: the "
                   "highest within --max-accuracy-drop on --eval.")
@click.option("--prune-schedule", type=click.Choice(["polynomial", "constant"]),
              help="Sparsity schedule for --prune. Default: polynomial (ramps up over the first half).")
@click.option("--prune-structure", type=click.Choice(["2:4"]),
              help="Structured pruning: 2 zeros in every 4 weights along the input axis.")
@click.option("--prune-channels", type=FINITE_OR_AUTO, metavar="FRACTION|auto",
              help="Channel pruning: remove FRACTION of each Conv/Dense layer's output channels and rebuild the "
                   "model with smaller layers (fewer MACs), e.g. 0.5; auto: the highest within --max-accuracy-drop.")
@click.option("--channel-criterion", type=click.Choice(["l1", "l2", "bn"]),
              help="How --prune-channels ranks channels: kernel L1 or L2 norm, or BatchNorm |gamma| (L1 where no "
                   "BatchNorm follows).  [default: bn]")
@click.option("--low-rank", type=FINITE, metavar="RANK_FRACTION",
              help="Low-rank factorization (SVD) of Dense/Conv kernels keeping RANK_FRACTION of each rank.")
@click.option("--low-rank-energy", type=FINITE, metavar="E",
              help="Low-rank factorization keeping the share E of each kernel's spectral energy, e.g. 0.9.")
@click.option("--sparse-inference", is_flag=True,
              help="Prune 1x1 convolutions for XNNPACK's sparse fp32/fp16 kernels and store them sparse "
                   "(CPU targets; --prune sets the sparsity, default 0.75).")
@click.option("--cluster", type=int, metavar="N", help="Weight clustering: N shared values per kernel (at most N per output channel in int8).")
@click.option("--qat", is_flag=True, help="Quantization-aware training for the int8 artifact.")
@click.option("--qat-skip", multiple=True, metavar="LAYER", help="Leave LAYER float during QAT (repeatable).")
@click.option("--custom-objects", multiple=True, metavar="PATH.py|MODULE",
              help="Import the code that registers the model's custom layers before loading it (repeatable).")
@click.option("--distill/--no-distill", default=None,
              help="Fine-tune with the original float model as teacher.  [default: on with --prune-channels or --low-rank]")
@click.option("--temperature", type=FINITE, metavar="T", help="Distillation temperature.  [default: 4]")
@click.option("--distill-weight", type=FINITE, default=0.5, show_default=True,
              help="Share of the loss from the teacher's soft targets.")
def build(model: Path, targets: tuple[str, ...], as_json: bool, **options) -> None:
    """Build and verify device artifacts for MODEL (.keras, .h5 or SavedModel dir).

    \b
    Compression (each step optional, in this order, fine-tuned on --fine-tune data):
      --prune-channels 0.5  ->  --low-rank 0.25  ->  --prune 0.8 | --prune-structure 2:4
      ->  --cluster 16  ->  --qat   [--distill]      (--sparse-inference: fp32/fp16 CPU builds)
    Several targets (--target rpi5 --target coral-usb) write OUT/rpi5 and OUT/coral-usb, each as a
    build for that target alone would.
    """
    from edgec import supervise
    from edgec.errors import CheckFailed

    target = targets[0] if len(targets) == 1 else list(targets)
    built = supervise.build(model, target, **options)  # in a child process: a native crash is one line
    results = [built] if len(targets) == 1 else built
    if as_json:
        payload = results[0].manifest if len(results) == 1 else [r.manifest for r in results]
        click.echo(dumps_json(payload, what="--json", indent=2))
    else:
        for result in results:
            print_summary(result)
    if len(results) == 1:
        results[0].raise_for_checks()
        return
    failed = [f"{r.manifest['profile']['id']}: {c['message']}" for r in results for c in r.checks if not c["passed"]]
    if failed:
        raise CheckFailed("; ".join(failed))


def print_summary(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import console, human_bytes

    m = result.manifest
    out = console()
    out.print(f"[bold]{m['profile']['id']}[/] ({m['profile']['device']}): {m['target']} {m['precision']} "
              f"-> {result.out_dir}")
    inp = m.get("input") or {}
    if inp:
        how = f"range [{inp['range'][0]:g}, {inp['range'][1]:g}]" if "range" in inp else f"normalized {inp['formula']}"
        out.print(escape(f"input: pixels -> {how} ({inp['source']})"))
    if len(m.get("inputs") or []) > 1:  # several inputs: which of them the pixel preprocessing applied to
        out.print(escape("inputs: " + ", ".join(
            f"{i['name']} {i['dtype']}{i['shape']} ({'pixels' if isinstance(i['preprocessing'], dict) else 'as given'})"
            for i in m["inputs"])))
    arts = Table(title="artifacts", title_justify="left")
    for col in ("file", "role", "precision", "size", "sha256", "inputs", "outputs"):
        arts.add_column(col)
    for a in m["artifacts"]:
        io = lambda ts: ", ".join(f"{t.get('name', '') + ' ' if len(ts) > 1 else ''}{t['dtype']}{t['shape']}"  # noqa: E731
                                  for t in ts) if ts else "-"
        arts.add_row(escape(a["file"]), a["role"], a.get("precision") or "-", human_bytes(a["bytes"]), a["sha256"][:12],
                     escape(io(a.get("inputs"))), escape(io(a.get("outputs"))))
    out.print(arts)
    v = m.get("verification")
    if v:
        out.print(verification_table(v, m["precision"]))
        if v.get("reordered_outputs"):
            out.print("[yellow]warning:[/] " + escape(
                f"{v['artifact']} orders its outputs differently from the model; by name: "
                + ", ".join(f"{o['name']} -> output {o['index']}" for o in v["outputs"])))
    if m.get("accuracy_control"):
        from edgec.accuracy.report import control_table

        out.print(control_table(m["accuracy_control"]))
        from edgec.accuracy.report import remedies_table

        extra = remedies_table(m["accuracy_control"])
        if extra is not None:
            out.print(extra)
    for a in m["artifacts"]:
        unchosen = [o for o in a.get("float_ops") or [] if not o.get("chosen")]
        if unchosen:
            ops = ", ".join(f"#{o['index']} {o['op']}" for o in unchosen[:12])
            out.print(escape(f"float ops in {a['file']}: {ops}{' ...' if len(unchosen) > 12 else ''}"))
    for line in (m.get(m.get("target") or "") or {}).get("summary", []):  # the target kind's own section
        out.print(escape(line))
    if m.get("optimization"):
        print_optimization(out, m["optimization"])
    for line in m.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(line)}")
    for check in m.get("checks", []):
        mark = "[green]PASS[/]" if check["passed"] else "[red]FAIL[/]"
        out.print(f"{mark} {escape(check['message'])}")


def verification_table(v: dict, precision: str):
    """One row per model output: its index in the artifact, accuracy where labelled, agreement
    where a distribution, relative errors and SQNR."""
    from rich.markup import escape
    from rich.table import Table

    labels = "labelled" if v.get("labelled") else "no labels: agreement and error only"
    table = Table(title=f"verification on {v['samples']} samples of {v['data']} ({labels}; {v.get('runtime', '')} "
                        f"vs float)", title_justify="left")
    for col, justify in (("output", "left"), ("index", "right"), ("float acc", "right"), (f"{precision} acc", "right"),
                         ("drop (pts)", "right"), ("top-1 agree", "right"), ("rel max err", "right"),
                         ("rel mean err", "right"), ("SQNR dB", "right")):
        table.add_column(col, justify=justify)

    def pct(x):
        return f"{x * 100:.2f} %" if x is not None else "-"

    def num(x, fmt):
        return fmt.format(x) if x is not None else "-"

    for o in v["outputs"]:
        name = o["name"] + (" (labels)" if o.get("labelled") else "")
        sqnr = num(o["sqnr_db"], "{:.1f}") if o["sqnr_db"] is not None else ("exact" if o["max_abs_diff"] == 0 else "-")
        table.add_row(escape(name), str(o["index"]), pct(o.get("float_accuracy")), pct(o.get("artifact_accuracy")),
                      num(o.get("accuracy_drop_points"), "{:.2f}"), pct(o.get("agreement")),
                      num(o["relative_max_abs_error"], "{:.4f}"), num(o["relative_mean_abs_error"], "{:.4f}"), sqnr)
    return table


def print_optimization(out, o: dict) -> None:
    """The compression report: accuracy after each step, per-layer table, totals."""
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import human_bytes

    steps = Table(title=f"compression: {' -> '.join(o['steps'])} (accuracy on {o['accuracy_data']})",
                  title_justify="left")
    for col, justify in (("stage", "left"), ("accuracy", "right"), ("drop (points)", "right"),
                         ("epochs", "right"), ("detail", "left")):
        steps.add_column(col, justify=justify)
    details = {s["step"]: s for s in o["step_details"]}
    for entry in o["accuracy"]:
        step = details.get(entry["stage"], {})
        fit = step.get("fine_tune") or {}
        epochs = f"{fit['epochs_run']} (best {fit['best_epoch']})" if fit else "-"
        steps.add_row(entry["stage"], f"{entry['accuracy'] * 100:.2f} %", f"{entry['drop_points']:.2f}", epochs,
                      _step_detail(step))
    out.print(steps)
    if o.get("auto"):
        a = o["auto"]
        curve = ", ".join(f"{c['level']:g} -> {c['drop_points']:.2f}" for c in a["curve"])
        out.print(escape(f"{a['option']} auto: {a['chosen']:g} (budget {a['max_accuracy_drop']:g} points; "
                         f"measured level -> drop: {curve})" + ("" if a["within_budget"] else f"; {a['note']}")))
    for step in o["step_details"]:
        for e in step.get("layers", []):
            if e.get("pruned") is False or e.get("clustered") is False:
                out.print(escape(f"{step['step']}: {e['layer']}: {e.get('reason', 'left as it is')}"))
    print_structure(out, o)
    if not o.get("layers"):
        if o.get("artifact_unavailable"):
            out.print(f"per-layer table unavailable: {o['artifact_unavailable']}")
        return
    table = Table(title=f"per layer, read from {o['artifact']}", title_justify="left")
    cols = [("layer", "left"), ("op", "left"), ("params", "right"), ("kept", "right"), ("unique/ch", "right"),
            ("unique", "right"), ("bits", "right"), ("index bits", "right"), ("zstd bits", "right"),
            ("bytes", "right")]
    structured = any(r.get("sparsity_2_4") is not None for r in o["layers"]) and o.get("prune") and o["prune"].get("structure")
    if structured:
        cols.append(("2:4 groups", "right"))
    for col, justify in cols:
        table.add_column(col, justify=justify)
    for r in o["layers"]:
        row = [r["layer"], r["op"], f"{r['params']:,}", f"{r['kept_share'] * 100:.1f} %", str(r["unique_per_channel"]),
               str(r["unique"]), str(r["bits"] or "-"), str(r["index_bits"]),
               f"{r['zstd_bits']:.2f}" if r["zstd_bits"] is not None else "-", f"{r['bytes']:,}"]
        if structured:
            row.append(f"{r['sparsity_2_4'] * 100:.1f} %" if r.get("sparsity_2_4") is not None else "-")
        table.add_row(*row)
    out.print(table)
    t = o["totals"]
    rate = t.get("compression_rate", {})
    zstd = f", zstd {human_bytes(t['zstd_bytes'])}" if t.get("zstd_bytes") else ""
    out.print(f"totals: {t['params']:,} parameters, {t['kernel_kept_share'] * 100:.1f} % of kernel weights kept, "
              f"at most {t['max_unique_per_channel']} unique values per channel")
    out.print(f"size: artifact {human_bytes(t['artifact_bytes'])} (gzip {human_bytes(t['gzip_bytes'])}{zstd}), "
              f"float .tflite {human_bytes(t['float_tflite_bytes'])}; compression vs float .tflite: "
              + ", ".join(f"{k} {v:.1f}x" for k, v in rate.items()))
    if t.get("saturated_bias"):
        out.print(f"[yellow]warning[/]: {t['saturated_bias']} int32 bias values sit at the int32 limit "
                  "(bias scale too small; see the per-layer 'saturated_bias' in manifest.json)")
    if o.get("representative_data"):
        out.print(f"int8 representative data: {o['representative_data']}")


def print_structure(out, o: dict) -> None:
    """Channel pruning and low-rank rows (channels or rank, parameters and MACs before/after), and
    the model's parameters and MACs against the original."""
    from rich.table import Table

    for step in o["step_details"]:
        if step["step"] not in ("channels", "low_rank"):
            continue
        structural = step["step"] == "channels"
        table = Table(title=f"{'channels' if structural else 'low-rank'}: per layer (Keras model)",
                      title_justify="left")
        for col in ("layer", "type", "channels" if structural else "rank", "params", "MACs", "note"):
            table.add_column(col, justify="left" if col in ("layer", "type", "note") else "right")
        for r in step["layers"]:
            if structural:
                size = f"{r['channels_before']} -> {r['channels_after']}" if "channels_before" in r else "-"
                note = r.get("kept_whole") or (f"tied with {', '.join(r['tied_with'])}" if r.get("tied_with") else "")
            else:
                size = f"{r['rank']} of {r['full_rank']} ({r['form']})" if r.get("factorized") else "-"
                note = f"energy {r['energy_kept'] * 100:.1f} %" if r.get("factorized") else r.get("reason", "")
            after = r.get("params_after", r["params_before"]), r.get("macs_after", r["macs_before"])
            table.add_row(r["layer"], r["type"], size, f"{r['params_before']:,} -> {after[0]:,}",
                          f"{r['macs_before']:,} -> {after[1]:,}", note)
        out.print(table)
    sparse = o.get("sparse_inference") or {}
    if "densify_ops" in sparse:
        out.print(f"sparse inference: {len(sparse['sparse_kernels'])} kernels stored sparse behind "
                  f"{sparse['densify_ops']} DENSIFY ops; speed: {sparse['speed']}")
    st = o.get("structure")
    if st:
        out.print(f"model: {st['params']['before']:,} -> {st['params']['after']:,} parameters "
                  f"({st['params']['cut_percent']:.1f} % fewer), {st['macs']['before']:,} -> {st['macs']['after']:,} "
                  f"MACs per sample ({st['macs']['cut_percent']:.1f} % fewer)")


def _step_detail(step: dict) -> str:
    name = step.get("step")
    if name == "channels":
        g = step["groups"]
        return (f"{step['fraction']:g} of the channels removed ({step['criterion']}), {g['pruned']} groups; "
                f"{g['kept_whole']} kept whole")
    if name == "low_rank":
        done = [r for r in step["layers"] if r.get("factorized")]
        how = (f"rank fraction {step['rank_fraction']:g}" if step["rank_fraction"] is not None
               else f"energy {step['energy']:g}")
        return f"{how}, {len(done)} of {len(step['layers'])} layers factorized"
    if name == "prune":
        kept = [e for e in step["layers"] if e.get("pruned")]
        left = [e["layer"] for e in step["layers"] if not e.get("pruned")]
        text = f"{step.get('structure') or step['schedule']['kind']} to {step['sparsity']:g}, {len(kept)} layers"
        if step.get("pruning_policy"):
            text += f" ({step['pruning_policy']})"
        return text + (f"; unpruned: {', '.join(left)}" if left else "")
    if name == "cluster":
        kept = [e for e in step["layers"] if e.get("clustered")]
        left = [e["layer"] for e in step["layers"] if not e.get("clustered")]
        text = f"{step['clusters']} clusters, {len(kept)} layers"
        return text + (f"; unclustered: {', '.join(left)}" if left else "")
    if name == "qat":
        text = f"{step['scheme']} ({step['preserves']}), {len(step['annotated_layers'])} layers annotated"
        if step["float_layers"]:
            text += "; float in training: " + ", ".join(f"{e['layer']}" for e in step["float_layers"])
        return text
    return ""
