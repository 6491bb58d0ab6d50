"""TensorRT target (Jetson): ONNX with explicit symmetric Q/DQ, engine built where it runs.

The host exports the (optimized) Keras model to ONNX with tf2onnx at the profile's opset, checks it
(ONNX checker, ops against the profile's TensorRT ONNX parser), verifies it with ONNX Runtime and,
for int8, inserts TensorRT-style symmetric Q/DQ (from QAT ranges, or PTQ on --calib). An engine is
tied to the GPU architecture and TensorRT version, so ``model.engine`` is built here only when the
``tensorrt`` package imports and a CUDA GPU of the profile's compute capability is present;
otherwise the build is deferred: ``model.onnx`` + ``build.json`` (+ the equivalent trtexec line),
which the device agent builds on first run.

fp16: the ONNX stays fp32 and TensorRT picks fp16 kernels (``--fp16``), the usual approach; the
host verifies the fp32 graph, fp16 rounding is measured on the device.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError
from edgec.progress import Progress
from edgec.targets.base import Artifact, BuildContext, Target
from edgec.targets.schema import Profile, Spec, non_negative, positive
from edgec.targets.tensorrt.engine import (
    BUILD_SPEC,
    TensorRTRunner,
    build_engine,
    build_spec,
    engine_available,
)

log = logging.getLogger(__name__)

PARITY_SAMPLES = 64

#: the ``[tensorrt]`` table of a Jetson profile
SECTION: Spec = {
    "gpu": (str, True, None),
    "compute_capability": (str, True, None),
    "gpu_arch": (str, True, None),
    "jetpack": (str, False, None),
    "tensorrt": (str, True, None),
    "cuda": (str, False, None),
    "onnx_opset": (int, True, positive),
    "dla_cores": (int, False, non_negative),
    "workspace_mb": (int, False, positive),
}


def _fastest(profile: Profile) -> str:
    return next(p for p in ("int8", "fp16", "fp32") if p in profile.precisions)


class TensorRTTarget(Target):
    """NVIDIA Jetson boards: ONNX + TensorRT."""

    kind = "tensorrt"
    runtime = "tensorrt"
    section = ("tensorrt", SECTION)
    accuracy_control = True
    # per-channel int8 scales: weight sharing gains nothing here
    space = {"cluster": ["none"]}
    remedies = ("equalize", "bias_correct", "adaround")
    remedies_refused = {"int16": "TensorRT has no int16 precision",
                        "range": "TensorRT's Q/DQ scales come from edgec's ONNX calibration, not the TFLite one"}

    def analysis_notes(self, profile: Profile, remedies: bool) -> list[str]:
        return ["the integer remedies are not measured for TensorRT here; build with --equalize, --bias-correct or "
                "--adaround to apply them"] if remedies else []

    def check_kind(self, profile: Profile, precision: Precision, options: BuildOptions) -> None:
        trt = profile.section("tensorrt") or {}
        if precision is Precision.DYNAMIC:
            raise EdgecError(f"TensorRT has no dynamic-range precision; choose one of {', '.join(profile.precisions)} "
                             f"for '{profile.id}'")
        if precision is Precision.INT8 and not profile.supports("int8"):
            raise EdgecError(
                f"'{profile.id}' ({profile.device}, {trt.get('gpu_arch', '?')}, compute capability "
                f"{trt.get('compute_capability', '?')}) has no INT8 in TensorRT; {_fastest(profile)} is the fastest "
                f"precision it has: pass --precision {_fastest(profile)}")
        if precision is Precision.INT8 and not options.has_representative_data:
            raise EdgecError("precision int8 needs representative data to set the activation ranges: pass --calib DATA "
                             "(with a QAT model it only ranges the tensors QAT did not), or --qat with --fine-tune "
                             "DATA; or choose one of "
                             f"{', '.join(p for p in profile.precisions if p != 'int8')}")

    def qat_scheme(self, profile: Profile):
        """Symmetric activations (zero point 0), per-channel symmetric Conv/Dense weights."""
        if not profile.supports("int8"):
            raise EdgecError(f"'{profile.id}' ({profile.device}) has no INT8, so quantization-aware training has "
                             f"nothing to run there; {_fastest(profile)} is the fastest precision it has")
        from edgec.targets.tensorrt.qat import TensorRTQuantizeScheme

        return TensorRTQuantizeScheme()

    # ------------------------------------------------------------------ build

    def write(self, ctx: BuildContext) -> list[Artifact]:
        from edgec.targets.tensorrt import export as onnx_export
        from edgec.targets.tensorrt.onnx_io import OrtRunner, keras_vs_onnx

        trt = dict(ctx.profile.section("tensorrt") or {})
        opset = int(trt["onnx_opset"])
        model, ranges, qat = _float_model(ctx)
        if ctx.precision is Precision.INT8 and not qat and ctx.int8 is not None:
            model = ctx.int8.keras_model(ctx, model)  # --equalize, --bias-correct, --adaround
        with ctx.progress.task(f"export: ONNX opset {opset} (tf2onnx)"):
            float_proto = onnx_export.export_onnx(model, opset, ctx.output_names)
        checks = onnx_export.check_for_tensorrt(float_proto, trt["tensorrt"])
        sample = _parity_sample(ctx)
        export: dict[str, Any] = {"tool": "tf2onnx", "opset": opset, "from_qat_model": qat}
        if sample is not None:
            from edgec.verify import keras_predict

            runner = OrtRunner(float_proto.SerializeToString())
            export["float_max_abs_diff"] = keras_vs_onnx(keras_predict(model), ctx.output_names, runner, sample)
            from edgec.calibration import count

            export["float_parity_samples"] = count(sample)
        quant = None
        chosen: dict[str, Any] = {}
        proto = float_proto
        if ctx.precision is Precision.INT8:
            from edgec.targets.tensorrt.quantize import quantize_model

            proto, quant = quantize_model(model, float_proto, ranges, ctx.calib, ctx.progress)
            if ctx.options.accuracy_control and ctx.int8 is not None:
                from edgec.targets.tensorrt.quantize import qdq_report

                proto, chosen = ctx.int8.tensorrt_artifact(ctx, proto)
                quant = {**quant, **qdq_report(proto)}
            checks = onnx_export.check_for_tensorrt(proto, trt["tensorrt"])
        elif qat:
            log.warning("QAT model built at %s: its fake-quant is dropped and the float weights exported",
                        ctx.precision.value)

        import onnx

        path = ctx.workdir / "model.onnx"
        onnx.save(proto, path)
        spec = build_spec(path, proto, ctx.profile, ctx.precision)
        (ctx.workdir / BUILD_SPEC).write_text(json.dumps(spec, indent=2) + "\n")
        inputs, outputs = spec["inputs"], spec["outputs"]
        info = {"inputs": inputs, "outputs": outputs, "opset": checks["opset"], "op_counts": checks["op_counts"],
                "num_ops": sum(checks["op_counts"].values())}
        if quant is not None:
            info["quantization"] = {k: v for k, v in quant.items() if k not in ("weights_per_channel", "activation_matmuls", "weighted_inputs_quantized")}
        artifacts = [
            Artifact(file=path.name, role="model", format="onnx", precision=ctx.precision.value,
                     verify_with="onnxruntime", info={**info, **chosen}),
            Artifact(file=BUILD_SPEC, role="build_spec", format="json", precision=ctx.precision.value,
                     info={"trtexec": spec["trtexec"]}),
        ]
        available, reason = engine_available(ctx.profile)
        engine: dict[str, Any] = {"built": False, "reason": reason}
        if available:
            with ctx.progress.task("build: TensorRT engine"):
                engine = build_engine(path, spec, ctx.workdir)
            artifacts.append(Artifact(file="model.engine", role="engine", format="engine", precision=ctx.precision.value,
                                      verify_with="tensorrt", info={k: v for k, v in engine.items() if k != "built"}))
        ctx.extra["tensorrt"] = {
            "engine": "built" if engine["built"] else "deferred",
            "engine_reason": None if engine["built"] else reason,
            "build_spec": BUILD_SPEC, "trtexec": spec["trtexec"],
            "export": export, "checks": checks, "quantization": quant,
            "host_runtime_note": "ONNX Runtime CPU with session.x64quantprecision=1 (exact int8 accumulation, as TensorRT)",
        }
        return artifacts

    def runner(self, path: Path, ctx: BuildContext | None = None):
        import os

        from edgec.targets.tensorrt.onnx_io import OrtRunner

        path = Path(path)
        if path.suffix == ".engine":
            return TensorRTRunner(path)
        return OrtRunner(path, threads=os.cpu_count())

    def shipment(self, workdir: Path, artifacts: list[Artifact]) -> dict[str, dict[str, Any]]:
        """The bundle the agent builds the engine from (build.json + model.onnx, and the engine
        when it was built here), for the TensorRT runtime; any other runtime gets model.onnx."""
        onnx = artifacts[0].file
        files = {f"bundle/{name}": name for name in (BUILD_SPEC, onnx)}
        return {"tensorrt": {"files": files, "optional": {"bundle/model.engine": "model.engine"}, "run": "bundle",
                             "runtime": "tensorrt", "record": onnx}}

    def accuracy_backend(self, profile: Profile, model, calib, *, progress: Progress | None = None,
                         threads: int = 1):
        """The target's own symmetric Q/DQ ONNX with any nodes left unquantized
        (:class:`edgec.targets.tensorrt.accuracy.TensorRTBackend`)."""
        from edgec.model_io import output_specs
        from edgec.targets.tensorrt.accuracy import TensorRTBackend
        from edgec.targets.tensorrt.export import export_onnx
        from edgec.targets.tensorrt.quantize import quantize_model

        progress = progress or Progress(enabled=False)
        opset = int(profile.section("tensorrt")["onnx_opset"])
        with progress.task(f"export: ONNX opset {opset} (tf2onnx)"):
            float_proto = export_onnx(model, opset, [o.name for o in output_specs(model)])
        qdq, _ = quantize_model(model, float_proto, {}, calib, progress)
        return TensorRTBackend(qdq, layer_names=[layer.name for layer in getattr(model, "layers", [])],
                               threads=threads)

    def float_ops(self, path: Path, fmt: str) -> list[dict[str, Any]] | None:
        """Every Conv/Gemm/MatMul whose input or weight does not come through a DequantizeLinear
        (TensorRT runs it in fp16/fp32)."""
        if fmt != "onnx":
            return None
        from edgec.targets.tensorrt.quantize import unquantized_ops

        return unquantized_ops(path)

    def mark_chosen(self, path: Path, fmt: str, float_ops: list[dict[str, Any]],
                    chosen: list[dict[str, str]]) -> list[dict[str, Any]] | None:
        if fmt != "onnx":
            return None
        from edgec.targets.tensorrt.accuracy import chosen_float_ops

        return chosen_float_ops(float_ops, chosen)


# ---------------------------------------------------------------------- helpers


def _float_model(ctx: BuildContext):
    """The model to export, the QAT ranges (layer name -> (min, max)) and whether it was QAT."""
    if not any(type(layer).__name__ in ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer")
               for layer in ctx.model.layers):
        return ctx.model, {}, False
    from edgec.targets.tensorrt.qat import float_twin

    twin, ranges = float_twin(ctx.model)
    return twin, ranges, True


def _parity_sample(ctx: BuildContext) -> np.ndarray | None:
    for data in (ctx.eval, ctx.calib):
        if data is not None and len(data):
            from edgec.calibration import take

            return take(data.x, slice(0, PARITY_SAMPLES))
    return None
