"""Edge TPU target: a full-integer TFLite model, an op-by-op Edge TPU map, and the compiler.

The build reuses the TFLite target's int8 conversion with a static batch of 1, then reads the
artifact itself to decide, op by op, whether the Edge TPU can run it (:mod:`.analysis`, with the
rules of :mod:`.rules`). When ``edgetpu_compiler`` is on PATH of an x86-64 host it is run with
the profile's options (:mod:`.compiler`); its log is kept, parsed (:mod:`.compiler_log`) and
compared with the analysis. When it is not, the EdgeTPU-ready ``model_int8.tflite`` is the
artifact and the manifest gives the exact command that finishes the compile.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

from edgec.budgets import CI, Budget
from edgec.config import BuildOptions, Precision
from edgec.errors import CheckFailed, EdgecError
from edgec.progress import Progress
from edgec.targets.base import Artifact, BuildContext, Target
from edgec.targets.edgetpu.analysis import analyze, summary_lines
from edgec.targets.edgetpu.compiler import (
    COMPILER_STDOUT,
    compile_model,
    compiler_command,
    unavailable_reason,
)
from edgec.targets.edgetpu.compiler_log import compare_with_analysis, compiler_totals
from edgec.targets.edgetpu.rules import SECTION, EdgeTPUSettings
from edgec.targets.schema import Profile

log = logging.getLogger(__name__)

INT8_MODEL = "model_int8.tflite"
REPORT_FILE = "edgetpu_report.json"

# --------------------------------------------------------------------------------------------
# the target


class EdgeTPUTarget(Target):
    """Coral devices (USB Accelerator, Dev Board, M.2 and Dual M.2 cards) running the Edge TPU."""

    kind = "edgetpu"
    runtime = "edgetpu"
    device_compiler = "edgetpu_compiler"
    section = ("edgetpu", SECTION)
    # no sparse kernels on the Edge TPU; unstructured zeros compress as well
    space = {"prune_structure": ["none"]}
    remedies = ("equalize", "bias_correct", "adaround")
    remedies_refused = {"int16": "the Edge TPU has no 16-bit kernels",
                        "range": "the Edge TPU build quantizes with the converter's own min/max calibration"}
    remedies_analyzed = True

    def analysis_notes(self, profile: Profile, remedies: bool) -> list[str]:
        return [f"on the Edge TPU ('{profile.id}') an op left in float runs on the CPU with every op after it, so "
                "--accuracy-control is refused there; recover the sensitive ops' accuracy with --qat"]
    budgets = (Budget("min_edgetpu_op_share", "share", "share of ops on the Edge TPU (0..1)", "edgetpu_op_share", "min",
                      (CI,), kinds=("edgetpu",), bounds=(0, 1), bounds_note="1.0: every op on the Edge TPU"),)

    def check_kind(self, profile: Profile, precision: Precision, options: BuildOptions) -> None:
        if precision is not Precision.INT8:
            raise EdgecError(
                f"the Edge TPU runs only full-integer 8-bit models, so profile '{profile.id}' ({profile.device}) "
                f"cannot build precision '{precision.value}'; use --precision int8 (its default) with --calib DATA, "
                "or a CPU profile (x86-cpu, rpi5) for float artifacts"
            )
        if not options.has_representative_data:
            raise EdgecError(
                f"the Edge TPU needs a full-integer model calibrated on representative data: pass --calib DATA "
                f"(.npz, .npy, image folder or module:function), or --qat with --fine-tune DATA, "
                f"for profile '{profile.id}'"
            )
        if options.require_compiler:
            problem = unavailable_reason()
            if problem:
                out = Path(options.out) / profile.id
                cmd = shlex.join(compiler_command(out / INT8_MODEL, out, EdgeTPUSettings.from_profile(profile)))
                raise CheckFailed(f"--require-compiler: {problem}; without --require-compiler edgec writes the "
                                  f"EdgeTPU-ready {INT8_MODEL} and the op map, then compile with: {cmd}")

    def write(self, ctx: BuildContext) -> list[Artifact]:
        from edgec.targets.tflite import artifact_info, convert

        settings = EdgeTPUSettings.from_profile(ctx.profile)
        model = ctx.int8.keras_model(ctx) if ctx.int8 is not None else ctx.model
        content = convert(model, Precision.INT8, calib=ctx.calib, io_dtype=ctx.profile.int8_io,
                          progress=ctx.progress, batch_size=1, output_names=ctx.output_names)
        int8 = ctx.workdir / INT8_MODEL
        int8.write_bytes(content)
        with ctx.progress.task("analyze: Edge TPU op map"):
            report = analyze(int8, settings)
        report["file"] = INT8_MODEL
        with ctx.progress.task("compile: edgetpu_compiler"):
            compiled = compile_model(int8, settings, user_out_dir=ctx.final_dir)
        compiler: dict[str, Any] = {k: compiled.get(k) for k in ("status", "reason", "command", "invocation",
                                                                  "returncode", "version", "install") if
                                    compiled.get(k) is not None}
        if compiled.get("parsed") is not None:
            parsed = compiled["parsed"]
            compiler.update(parsed=parsed, totals=compiler_totals(parsed), log=COMPILER_STDOUT)
            if compiled["status"] == "compiled":
                compiler["disagreements"] = compare_with_analysis(report, parsed)
        report["compiler"] = compiler
        (ctx.workdir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")

        for line in summary_lines(report):
            log.info("%s", line)
        if compiled["status"] != "compiled":
            log.warning("%s: %s%s", compiled["status"].replace("_", " "), compiled["reason"],
                        f"; compile with: {compiled['command']}" if compiled.get("command") else "")
        if ctx.options.require_compiler and compiled["status"] != "compiled":
            raise CheckFailed(f"--require-compiler: {compiled['reason']}; rerun without --require-compiler to keep "
                              f"{INT8_MODEL}, {REPORT_FILE} and the compiler log")

        int8_art = Artifact(file=INT8_MODEL, role="model", format="tflite", precision="int8", verify_with="litert",
                            info=artifact_info(int8))
        report_art = Artifact(file=REPORT_FILE, role="report", format="json")
        extra_files = [Artifact(file=f, role="log", format="text") for f in compiled.get("files", [])
                       if not f.endswith(".tflite")]
        tpu_models = [Artifact(file=f, role="edgetpu_model", format="tflite", precision="int8", verify_with=None,
                               info={"segment": _segment(f), "runs_on": "Edge TPU (needs libedgetpu)",
                                     "outputs": compiled_outputs(ctx.workdir / f, int8)})
                      for f in compiled.get("models", [])]
        t = report["totals"]
        ctx.extra["edgetpu"] = {
            "compiled": compiled["status"] == "compiled",
            "compiler": {k: v for k, v in compiler.items() if k != "parsed"},
            "analysis": {"report": REPORT_FILE, "first_cpu_op": report["first_cpu_op"], "warnings": report["warnings"],
                         **{k: t[k] for k in ("ops", "ops_on_tpu", "op_share", "macs", "macs_on_tpu", "mac_share",
                                              "param_bytes_on_tpu", "cache_bytes", "off_chip_bytes_estimate")},
                         "float_tensors": len(report["float_tensors"])},
            "settings": dataclasses.asdict(settings),
            "summary": summary_lines(report),
        }
        if compiled["status"] != "compiled":
            ctx.extra["edgetpu"]["not_compiled"] = f"{compiled['status'].replace('_', ' ')}: {compiled['reason']}"
        # the device runs the compiled model when there is one; LiteRT verifies the int8 model on the host
        return [*tpu_models, int8_art, report_art, *extra_files]

    def runner(self, path: Path, ctx: BuildContext | None = None):
        from edgec.targets.tflite import LiteRTRunner

        if Path(path).name != INT8_MODEL:
            raise EdgecError(f"'{Path(path).name}' runs only on an Edge TPU; the host verifies {INT8_MODEL}")
        threads = ctx.profile.threads if ctx is not None and ctx.profile.threads else None
        return LiteRTRunner(path, threads=min(threads or os.cpu_count() or 1, os.cpu_count() or 1))

    def shipment(self, workdir: Path, artifacts: list[Artifact]) -> dict[str, dict[str, Any]]:
        """The compiled model for the Edge TPU runtime; without one, the int8 model on the CPU."""
        compiled = [a.file for a in artifacts if a.role == "edgetpu_model"]
        if compiled:
            tpu = {"files": {compiled[0]: compiled[0]}, "run": compiled[0], "runtime": "edgetpu"}
        else:
            tpu = {"files": {INT8_MODEL: INT8_MODEL}, "run": INT8_MODEL, "runtime": "litert",
                   "warning": "no Edge TPU model in this build (edgetpu_compiler was not run): measuring "
                              f"{INT8_MODEL} on the device's CPU with LiteRT"}
        return {"edgetpu": tpu}

    def accuracy_backend(self, profile: Profile, model, calib, *, progress: Progress | None = None,
                         threads: int = 1):
        """The TFLite backend on the Edge TPU's int8 model (batch 1), for analysis."""
        from edgec.targets.tflite import TFLiteTarget

        return TFLiteTarget().accuracy_backend(profile, model, calib, progress=progress, threads=threads, batch_size=1)

    def accuracy_control_refusal(self, profile: Profile) -> str:
        return (f"--accuracy-control keeps some ops in float, and on profile '{profile.id}' ({profile.device}) a float "
                "op leaves the Edge TPU: it and every op after it run on the CPU; recover int8 accuracy with "
                "quantization-aware training instead: --qat --fine-tune DATA")

    def float_ops(self, path: Path, fmt: str) -> list[dict[str, Any]] | None:
        from edgec.targets.tflite import TFLiteTarget

        return TFLiteTarget().float_ops(path, fmt)

    def figures(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The share of ops the Edge TPU runs, by the op map; whether the compiler ran."""
        tpu = manifest.get("edgetpu")
        if not tpu:
            return {}
        analysis = tpu.get("analysis") or {}
        return {"edgetpu_op_share": analysis.get("op_share"), "edgetpu_ops": analysis.get("ops"),
                "edgetpu_ops_on_tpu": analysis.get("ops_on_tpu"), "edgetpu_first_cpu_op": analysis.get("first_cpu_op"),
                "edgetpu_compiled": bool(tpu.get("compiled"))}


def compiled_outputs(compiled: Path, int8: Path) -> list[dict[str, Any]]:
    """The outputs of a compiled model, each named as in the int8 model it was compiled from.

    The compiler keeps the model's output tensors (it replaces the ops between them by its custom
    op); they are matched by tensor name, so the manifest maps every output name to its index even
    if the compiled file dropped the signature.
    """
    from edgec import tflite_model

    source, done = tflite_model.load(int8), tflite_model.load(compiled)
    by_tensor = {source.tensors[i].name: n for i, n in zip(source.outputs, source.output_names(), strict=True)}
    return [dict(done.tensors[i].describe(), name=by_tensor.get(done.tensors[i].name, done.tensors[i].name), index=k)
            for k, i in enumerate(done.outputs)]


def _segment(name: str) -> dict[str, int] | None:
    m = re.search(r"_segment_(\d+)_of_(\d+)_edgetpu\.tflite$", name)
    return {"index": int(m.group(1)), "of": int(m.group(2))} if m else None
