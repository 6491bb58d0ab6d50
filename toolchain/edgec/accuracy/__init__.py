"""Accuracy-aware int8: find the ops that post-training quantization hurts, and keep only those in float.

``edgec analyze`` measures, per quantizable op of a target's int8 model, its weight and activation
scales, its per-layer error (RMSE in quantization steps, SQNR) and its sensitivity: the metric with
that op alone left in float. ``edgec build --accuracy-control`` keeps the fewest ops in float that
bring the drop within ``--max-accuracy-drop`` (NNCF's greedy revert; :mod:`.search`).

The metric is the labelled output's accuracy on ``--eval``, or top-1 agreement with the float model
when the data has no labels (:mod:`.metric`). Backends, one per target kind: TFLite selective
quantization on ``tf.lite.experimental.QuantizationDebugger`` (:mod:`.tflite`), TensorRT's Q/DQ ONNX
without Q/DQ around the chosen nodes (:mod:`.tensorrt`). The Edge TPU refuses accuracy control: a
float op leaves the TPU, and every op after it runs on the CPU.

Nothing here imports TensorFlow at module level: :func:`check_request` runs before it loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

#: target kinds accuracy control builds for (the Edge TPU is refused: float ops leave the TPU)
CONTROLLED_KINDS = ("tflite", "tensorrt")
#: target kinds ``edgec analyze`` analyzes (the Edge TPU's int8 model is TFLite's, with batch 1)
ANALYZED_KINDS = ("tflite", "edgetpu", "tensorrt")


def check_request(profile, precision, options) -> None:
    """Reject an ``--accuracy-control`` build that cannot work, before TensorFlow loads.

    Raises:
        EdgecError: (exit 2) the target kind, precision or options do not allow it.
    """
    if not getattr(options, "accuracy_control", False):
        return
    if profile.target == "edgetpu":
        raise EdgecError(f"--accuracy-control keeps some ops in float, and on profile '{profile.id}' ({profile.device}) "
                         "a float op leaves the Edge TPU: it and every op after it run on the CPU; recover int8 "
                         "accuracy with quantization-aware training instead: --qat --fine-tune DATA")
    if profile.target not in CONTROLLED_KINDS:
        raise EdgecError(f"--accuracy-control is available for target kinds {', '.join(CONTROLLED_KINDS)}; profile "
                         f"'{profile.id}' is a {profile.target} target")
    if precision.value != "int8":
        raise EdgecError(f"--accuracy-control chooses which ops of an int8 model stay float; this build's precision "
                         f"is {precision.value}: add --precision int8")
    if options.qat:
        raise EdgecError("--accuracy-control reverts ops of a post-training quantized model (ranges from --calib); "
                         "with --qat the ranges are learned: use one or the other")
    if not options.eval:
        raise EdgecError("--accuracy-control measures the drop on --eval DATA (with labels: accuracy; without: top-1 "
                         "agreement with the float model)")
    if options.max_accuracy_drop is None:
        raise EdgecError("--accuracy-control needs the budget it meets: add --max-accuracy-drop POINTS")


def float_ops(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The ops of an int8 artifact that still compute in float (empty when full-integer).

    TFLite: every op with a float activation, besides the conversions of float model inputs and
    outputs. ONNX (TensorRT's explicit quantization): every Conv/Gemm/MatMul whose input or weight
    does not come through a DequantizeLinear (TensorRT runs it in fp16/fp32).
    """
    if fmt == "tflite":
        from edgec import tflite_model

        return tflite_model.float_ops(tflite_model.load(path))
    if fmt == "onnx":
        from edgec.targets.tensorrt.quantize import unquantized_ops

        return unquantized_ops(path)
    raise ValueError(f"no float-op check for format {fmt}")


def mark_chosen(path: Path, fmt: str, float_ops: list[dict[str, Any]], chosen: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``float_ops`` of an artifact with the entries accuracy control kept in float marked
    ``"chosen": true`` (the full-integer check does not count those); others stay as they are."""
    if fmt == "tflite":
        from edgec.accuracy.tflite import chosen_float_ops

        return chosen_float_ops(path, float_ops, chosen)
    if fmt == "onnx":
        from edgec.accuracy.tensorrt import chosen_float_ops as onnx_chosen

        return onnx_chosen(float_ops, chosen)
    return float_ops


def backend_for(profile, model, calib, *, progress=None, threads: int | None = None):
    """The int8 quantization of ``model`` for the profile's target kind, with any ops left in float.

    Raises:
        EdgecError: a target kind without a backend; conversion errors.
    """
    from edgec.model_io import output_specs

    names = [o.name for o in output_specs(model)]
    layer_names = [layer.name for layer in getattr(model, "layers", [])]
    threads = threads or os.cpu_count() or 1
    if profile.target in ("tflite", "edgetpu"):
        from edgec.accuracy.tflite import TFLiteBackend

        return TFLiteBackend(model, calib, io_dtype=profile.int8_io, batch_size=1 if profile.target == "edgetpu" else None,
                             output_names=names, threads=threads, progress=progress)
    if profile.target == "tensorrt":
        from edgec.accuracy.tensorrt import TensorRTBackend
        from edgec.progress import Progress
        from edgec.targets.tensorrt.export import export_onnx
        from edgec.targets.tensorrt.quantize import quantize_model

        progress = progress or Progress(enabled=False)
        with progress.task(f"export: ONNX opset {profile.tensorrt['onnx_opset']} (tf2onnx)"):
            float_proto = export_onnx(model, int(profile.tensorrt["onnx_opset"]), names)
        qdq, _ = quantize_model(model, float_proto, {}, calib, progress)
        return TensorRTBackend(qdq, layer_names=layer_names, threads=threads)
    raise EdgecError(f"edgec analyze covers target kinds {', '.join(ANALYZED_KINDS)}; profile '{profile.id}' is a "
                     f"{profile.target} target")
