"""TFLite conversion and LiteRT runs: TFLiteConverter -> .tflite bytes, and a host runner.

Shared by the TFLite target, its accuracy backend and the Edge TPU target, which needs the same
full-integer model before its compiler step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgec.calibration import Dataset
from edgec.config import Precision
from edgec.errors import EdgecError
from edgec.progress import Progress


def convert(model, precision: Precision, *, calib: Dataset | None = None, io_dtype: str = "int8",
            progress: Progress | None = None, batch_size: int | None = None,
            output_names: list[str] | None = None, sparsity: bool = False) -> bytes:
    """Convert a tf-keras model to TFLite bytes.

    Args:
        model: tf-keras model (QAT-annotated models convert to int8 with their learned ranges).
        precision: fp32, fp16 (float16 weights), dynamic (int8 weights, float activations) or
            int8 (full-integer, int8/uint8 I/O, calibrated on ``calib``).
        calib: representative data, required for int8.
        io_dtype: "int8" or "uint8" input/output type for int8.
        progress: shows calibration and conversion progress.
        batch_size: fix the batch dimension (the Edge TPU needs 1); ``None`` keeps it dynamic.
        output_names: the names the artifact's outputs get, in the model's output order (default:
            the model's own, :func:`edgec.model_io.output_specs`).
        sparsity: store sparse kernels in TFLite's sparse format behind DENSIFY ops (the
            converter's EXPERIMENTAL_SPARSITY), which XNNPACK's sparse fp32/fp16 path reads.

    Raises:
        EdgecError: missing calibration data, or the converter rejected the model (the message
            carries the converter's own error lines, naming the op).
    """
    from edgec import tflite_model
    from edgec.model_io import SignatureModel, named_function, output_specs
    from edgec.tfcompat import tf_and_keras
    from edgec.util import capture_native_stderr

    tf, _ = tf_and_keras()
    progress = progress or Progress(enabled=False)
    # one signature whose outputs carry the model's output names (the converter sorts outputs by
    # name; they are put back in the model's order below)
    names = output_names or [o.name for o in output_specs(model)]
    concrete = named_function(model, batch_size, names)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [concrete], model.loaded if isinstance(model, SignatureModel) else model)
    if precision is Precision.FP16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision is Precision.DYNAMIC:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision is Precision.INT8:
        if calib is None:
            raise EdgecError("precision int8 needs representative data (--calib)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"int8": tf.int8, "uint8": tf.uint8}[io_dtype]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
        converter.representative_dataset = representative_dataset(calib, progress)
    if sparsity:
        converter.optimizations = [*converter.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    with progress.task(f"convert: TFLite {precision.value}") as _task, capture_native_stderr() as native:
        try:
            content = converter.convert()
        except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
            error = exc
        else:
            error = None
    if error is not None:
        raise EdgecError(f"TFLite conversion ({precision.value}) failed: {converter_reason(error, native)}") from error
    return tflite_model.reorder_outputs(bytes(content), names)


def representative_dataset(calib: Dataset, progress: Progress):
    # several inputs go by name: the converter matches a dict's keys to the signature's inputs,
    # which it orders its own way (not the model's)
    def gen():
        with progress.task("calibrate: int8 ranges", total=len(calib)) as task:
            for i in range(len(calib)):
                if isinstance(calib.x, dict):
                    yield {name: arr[i:i + 1] for name, arr in calib.x.items()}
                else:
                    yield [calib.x[i:i + 1]]
                task.advance()

    return gen


def converter_reason(error: Exception, native: list[str]) -> str:
    text = "\n".join([str(error), *native])
    lines = [ln.strip() for ln in text.splitlines() if re.search(r"error:|not supported|unsupported", ln, re.I)]
    seen: list[str] = []
    for line in lines:
        line = re.sub(r"^.*?error:\s*", "", line)
        if line and line not in seen:
            seen.append(line)
    reason = "; ".join(seen[:3]) if seen else (str(error).strip().splitlines() or [type(error).__name__])[0]
    return reason[:600]


class LiteRTRunner:
    """Run a .tflite on float inputs with LiteRT; quantizes inputs and dequantizes outputs.

    Uses one batched invoke when the model's batch dimension is dynamic, else one invoke per
    sample. A model with several inputs takes a dict keyed by input name, matched to the tensors
    through the model's signature (never by position: the converter orders inputs its own way).
    """

    def __init__(self, model: Path | bytes, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        from edgec.util import capture_native_stderr

        kwargs: dict[str, Any] = {"num_threads": threads} if threads else {}
        with capture_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate" notices
            if isinstance(model, (bytes, bytearray)):
                self.interpreter = Interpreter(model_content=bytes(model), **kwargs)
            else:
                self.interpreter = Interpreter(model_path=str(model), **kwargs)
            self.interpreter.allocate_tensors()
        from edgec import tflite_model

        parsed = tflite_model.load(model)
        #: the artifact's output names, in its output order (what ``__call__`` returns)
        self.output_names = parsed.output_names()
        details = self.interpreter.get_input_details()
        self.input = details[0]
        #: input name -> tensor index (a single input is fed whatever it is called)
        self.input_index = input_indices(parsed.signature_inputs, details)
        sig = self.input.get("shape_signature")
        self.dynamic_batch = sig is not None and len(sig) > 0 and int(sig[0]) == -1
        self._batch = int(self.input["shape"][0])

    def __call__(self, x) -> list[np.ndarray]:
        from edgec.calibration import count, take

        if isinstance(x, dict):
            x = {n: np.asarray(a, dtype=np.float32) for n, a in x.items()}
        else:
            x = np.asarray(x, dtype=np.float32)
        if self.dynamic_batch:
            return self._invoke(x)
        step = max(self._batch, 1)
        outs = [self._invoke(take(x, slice(i, i + step))) for i in range(0, count(x), step)]
        return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]

    def _feeds(self, x) -> list[tuple[int, np.ndarray]]:
        if not isinstance(x, dict):
            if len(self.input_index) != 1:
                raise EdgecError(f"the model has {len(self.input_index)} inputs "
                                 f"({', '.join(self.input_index)}); feed a dict keyed by those names")
            return [(self.input["index"], x)]
        if sorted(x) != sorted(self.input_index):
            raise EdgecError(f"the model's inputs are {', '.join(self.input_index)}; got {', '.join(x)}")
        return [(self.input_index[n], a) for n, a in x.items()]

    def _invoke(self, x) -> list[np.ndarray]:
        from edgec.calibration import count

        it = self.interpreter
        feeds = self._feeds(x)
        details = {d["index"]: d for d in it.get_input_details()}
        if self.dynamic_batch and int(self.input["shape"][0]) != count(x):
            for index, _ in feeds:
                it.resize_tensor_input(index, [count(x), *details[index]["shape"][1:]])
            it.allocate_tensors()
            self.input = it.get_input_details()[0]
            details = {d["index"]: d for d in it.get_input_details()}
        for index, arr in feeds:
            it.set_tensor(index, quantize(arr, details[index]))
        it.invoke()
        return [dequantize(it.get_tensor(d["index"]), d) for d in it.get_output_details()]


def input_indices(signature_inputs: dict[str, int], details: list[dict]) -> dict[str, int]:
    """Input name -> tensor index of a .tflite: from its signature, else from the converter's
    tensor names (``serving_default_NAME:0``), else the tensor names themselves."""
    if signature_inputs and len(signature_inputs) == len(details):
        return dict(signature_inputs)
    out = {}
    for d in details:
        m = re.fullmatch(r"(?:serving_default_)?(.+?)(?::\d+)?", str(d["name"]))
        out[m.group(1) if m else str(d["name"])] = int(d["index"])
    return out


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float -> the tensor's dtype using its (scale, zero point); a cast for float tensors."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        scale, zero = detail["quantization"]
        if scale == 0:
            return x.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    """The tensor's dtype -> float32 using its (scale, zero point)."""
    if q.dtype.kind in "iu":
        scale, zero = detail["quantization"]
        if scale:
            return (q.astype(np.float32) - zero) * scale
    return q.astype(np.float32)


def artifact_info(path: Path) -> dict[str, Any]:
    """I/O dtypes, shapes and quantization, op counts and parameter count, read from the file."""
    from edgec import tflite_model

    m = tflite_model.load(path)
    consts = [t for t in m.tensors if t.is_parameter]
    outputs = [dict(m.tensors[i].describe(), name=name) for i, name in zip(m.outputs, m.output_names(), strict=True)]
    return {
        "inputs": [m.tensors[i].describe() for i in m.inputs],
        "outputs": outputs,
        "op_counts": m.op_counts(),
        "num_ops": len(m.operators),
        "params": int(sum(t.num_params for t in consts)),
        "weight_dtypes": sorted({t.dtype for t in consts}),
        "subgraphs": m.num_subgraphs,
    }
