"""TFLite selective quantization: calibrate once, then quantize with any set of ops deny-listed.

Built on ``tf.lite.experimental.QuantizationDebugger``: it calibrates the converter (the same
converter settings as :func:`edgec.targets.tflite.convert`: one named signature, full-integer
int8 with the profile's int8/uint8 I/O) and gives the per-layer error of the int8 model, each op
fed the same input in float and in int8 (its NumericVerify ops). An artifact with ops left in
float is the calibrated model quantized by the MLIR quantizer with those ops' output tensors as
``denylisted_nodes``, exactly as the converter quantizes it otherwise (``TFLiteConverter._quantize``),
so with no op deny-listed it is the build's plain int8 model, tensor for tensor.

A deny-listed op computes in float between a DEQUANTIZE of its int8 input and a QUANTIZE of its
output: it still reads and writes the int8 tensors of its int8 neighbours. An activation tensor
leaves int8 only when its producer and all its consumers are float, so the candidates include
each such group ("tensor" candidates) besides every single op.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgec import tflite_model
from edgec.errors import EdgecError
from edgec.targets.quant import Candidate, QuantOp, layers_named, sqnr_db

log = logging.getLogger(__name__)

CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")


@contextlib.contextmanager
def quiet():
    """The quantizer prints its settings to fd 2; tf.lite.Interpreter warns it is deprecated."""
    from edgec.util import capture_native_stderr

    with capture_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def same_tensor(name: str, node: str) -> bool:
    """Whether a tensor of a quantized model is the calibrated model's ``node``: the quantizer keeps
    the name, or appends a digit when the name is taken (``StatefulPartitionedCall:0`` ->
    ``StatefulPartitionedCall:01``), as the QuantizationDebugger also assumes."""
    return name == node or re.fullmatch(re.escape(node) + r"\d+", name) is not None


def op_macs(m: tflite_model.TFLiteModel, op: tflite_model.Operator) -> int:
    """Multiply-accumulates per sample of a Conv / depthwise Conv / fully-connected op."""
    if not op.outputs or len(op.inputs) < 2 or op.inputs[1] < 0:
        return 0
    out, w = m.tensors[op.outputs[0]], m.tensors[op.inputs[1]]
    per_sample = int(np.prod(out.shape[1:])) if len(out.shape) > 1 else int(np.prod(out.shape))
    if op.op in ("CONV_2D", "CONV_3D"):
        return per_sample * int(np.prod(w.shape[1:]))
    if op.op == "DEPTHWISE_CONV_2D":
        return per_sample * int(np.prod(w.shape[1:3]))
    if op.op == "FULLY_CONNECTED":
        return per_sample * int(w.shape[-1])
    if op.op == "TRANSPOSE_CONV" and len(op.inputs) > 2:
        x = m.tensors[op.inputs[2]]
        return int(np.prod(x.shape[1:])) * int(w.shape[0]) * int(np.prod(w.shape[1:3]))
    return 0


class TFLiteBackend:
    """The int8 TFLite model of a Keras model, with any set of ops left in float.

    Args:
        model: the tf-keras (or signature) model to convert.
        calib: representative data (ranges every activation).
        io_dtype: "int8" or "uint8" model input and output (the profile's ``int8_io``).
        batch_size: a static batch (the Edge TPU needs 1); ``None`` keeps it dynamic.
        output_names: the artifact's output names in the model's order.
        threads: LiteRT threads for the host runs.
        progress: shows calibration.

    Raises:
        EdgecError: the converter rejected the model.
    """

    kind = "tflite"
    host_latency = True

    def __init__(self, model, calib, *, io_dtype: str = "int8", batch_size: int | None = None,
                 output_names: list[str] | None = None, threads: int | None = None, progress=None):
        from edgec.model_io import SignatureModel, named_function, output_specs
        from edgec.progress import Progress
        from edgec.targets.tflite.litert import converter_reason, representative_dataset
        from edgec.tfcompat import tf_and_keras
        from edgec.util import capture_native_stderr

        tf, _ = tf_and_keras()
        progress = progress or Progress(enabled=False)
        self.names = output_names or [o.name for o in output_specs(model)]
        self.threads = threads
        concrete = named_function(model, batch_size, self.names)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [concrete], model.loaded if isinstance(model, SignatureModel) else model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        self._io = {"int8": tf.int8, "uint8": tf.uint8}[io_dtype]
        converter.inference_input_type = self._io
        converter.inference_output_type = self._io
        converter.representative_dataset = representative_dataset(calib, progress)
        with progress.task("calibrate: QuantizationDebugger"), capture_native_stderr() as native, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self.debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_options=tf.lite.experimental.QuantizationDebugOptions())
            except Exception as exc:  # ConverterError, ValueError (no quantizable op), RuntimeError
                error = exc
            else:
                error = None
        if error is not None:
            raise EdgecError(f"TFLite int8 calibration failed: {converter_reason(error, native)}") from error
        self.calibrated = bytes(self.debugger.calibrated_model)
        self._per_channel_off = bool(converter._experimental_disable_per_channel)  # noqa: SLF001
        self._dense_per_channel_off = bool(
            getattr(converter, "_experimental_disable_per_channel_quantization_for_dense_layers", False))
        self._cache: dict[frozenset[str], bytes] = {}
        self.layer_names = [layer.name for layer in getattr(model, "layers", [])]
        self.plain = self.build(())
        self.ops, self._groups = self._inventory()

    # ------------------------------------------------------------------ artifacts

    def build(self, float_ops: Iterable[str]) -> bytes:
        """The int8 model with the ops whose output tensors are ``float_ops`` left in float."""
        key = frozenset(float_ops)
        if key in self._cache:
            return self._cache[key]
        from tensorflow.lite.python.convert import mlir_quantize

        with quiet():
            content = mlir_quantize(
                self.calibrated, disable_per_channel=self._per_channel_off,
                input_data_type=self._io, output_data_type=self._io,
                denylisted_nodes=sorted(key) or None,
                disable_per_channel_for_dense_layers=self._dense_per_channel_off)
        built = tflite_model.reorder_outputs(deduplicate(bytes(content)), self.names)
        if not key:  # the plain model is kept; other configurations are measured once (search.Evaluator)
            self._cache[key] = built
        return built

    def run(self, artifact: bytes, x: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
        from edgec.targets.tflite.litert import LiteRTRunner

        runner = LiteRTRunner(artifact, threads=self.threads)
        return runner(x), runner.output_names

    def size(self, artifact: bytes) -> int:
        return len(artifact)

    def candidates(self) -> list[Candidate]:
        by_id = {o.id: o for o in self.ops}
        singles = [Candidate((o.id,), "op", o.layer) for o in self.ops]
        groups = [Candidate(ids, "tensor", f"{by_id[ids[0]].layer} output (with "
                                           f"{', '.join(by_id[i].layer for i in ids[1:])})") for ids in self._groups]
        return singles + groups

    # ------------------------------------------------------------------ what the model holds

    def _inventory(self) -> tuple[list[QuantOp], list[tuple[str, ...]]]:
        """The ops that can be left in float (deny-listing changes the model), in graph order, with
        their scales, parameters and MACs read from the plain int8 model; and the tensor groups."""
        calibrated = tflite_model.load(self.calibrated)
        plain = tflite_model.load(self.plain)
        ops: list[QuantOp] = []
        for op in calibrated.operators:
            if op.op in CONVERSION_OPS or not op.outputs:
                continue
            node = calibrated.tensors[op.outputs[0]].name
            if not tflite_model.float_ops(tflite_model.load(self.build((node,)))):
                continue  # same-scale ops (pooling, reshapes) stay int8 whatever the deny-list says
            # the op's own tensors name its layer: its output and its weights (inputs are its producers')
            names = [calibrated.tensors[i].name for i in op.outputs] + \
                    [calibrated.tensors[i].name for i in op.inputs if i >= 0 and calibrated.tensors[i].is_constant]
            ops.append(self._describe(node, op, plain, layers_named(names, self.layer_names)))
        ids = {o.id for o in ops}
        consumers: dict[int, list[str]] = {}
        for op in calibrated.operators:
            for i in op.inputs:
                if i >= 0 and op.outputs:
                    consumers.setdefault(i, []).append(calibrated.tensors[op.outputs[0]].name)
        groups = []
        for op in calibrated.operators:
            if not op.outputs or calibrated.tensors[op.outputs[0]].name not in ids:
                continue
            users = consumers.get(op.outputs[0], [])
            if users and all(u in ids for u in users):
                group = (calibrated.tensors[op.outputs[0]].name, *dict.fromkeys(users))
                if len(group) > 1:
                    groups.append(group)
        return ops, groups

    def _describe(self, node: str, op, plain: tflite_model.TFLiteModel, layers: list[str]) -> QuantOp:
        match = next((p for p in plain.operators if p.outputs and p.op == op.op
                      and same_tensor(plain.tensors[p.outputs[0]].name, node)), None)
        q = QuantOp(id=node, index=op.index, op=op.op, layers=layers)
        if match is None:
            return q
        q.index = match.index
        q.params = int(sum(t.num_params for t in plain.weights(match)))
        q.macs = op_macs(plain, match)
        kernel = plain.kernel(match)
        if kernel is not None and kernel.scale:
            q.weight_scale, q.weight_channels = (min(kernel.scale), max(kernel.scale)), len(kernel.scale)
        acts = [plain.tensors[i] for i in match.inputs if i >= 0 and not plain.tensors[i].is_constant]
        if acts and acts[0].scale:
            q.input_scale = acts[0].scale[0]
        out = plain.tensors[match.outputs[0]]
        if out.scale:
            q.output_scale = out.scale[0]
        return q

    # ------------------------------------------------------------------ per-layer error

    def layer_stats(self, x: np.ndarray) -> dict[str, dict[str, float | None]]:
        """Per-op error of the plain int8 model on ``x`` from the QuantizationDebugger: each op's
        int8 output against its float output on the same (int8) input."""
        from edgec.tfcompat import tf_and_keras

        tf, _ = tf_and_keras()
        x = {n: np.asarray(a, np.float32) for n, a in x.items()} if isinstance(x, dict) else np.asarray(x, np.float32)

        def deq(q, scale, zero):
            return (q.astype(np.float32) - zero) * scale

        metrics = {
            "signal": lambda f, q, scale, zero: float(np.sum(np.square(f, dtype=np.float64))),
            "noise": lambda f, q, scale, zero: float(np.sum(np.square(f - deq(q, scale, zero), dtype=np.float64))),
            "rmse_steps": lambda f, q, scale, zero: float(np.sqrt(np.mean(np.square(f - deq(q, scale, zero))))
                                                          / scale) if scale else float("nan"),
        }
        options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics=metrics)
        with quiet():
            debug_model = self.debugger.get_debug_quantized_model()
            # a debugger on the debug model's bytes keeps every tensor, so the float value each
            # NumericVerify compares against is still there when it is read
            debugger = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=debug_model, debug_options=options,
                debug_dataset=lambda: _samples(x, debug_model))
            debugger.run()
            dump = io.StringIO()
            debugger.layer_statistics_dump(dump)
        stats: dict[str, dict[str, float | None]] = {}
        for row in csv.DictReader(io.StringIO(dump.getvalue())):
            op = next((o for o in self.ops if same_tensor(row["tensor_name"], o.id) or row["tensor_name"] == o.id), None)
            if op is None:
                continue
            rmse = float(row["rmse_steps"])
            stats[op.id] = {"rmse_steps": round(rmse, 4) if np.isfinite(rmse) else None,
                            "sqnr_db": sqnr_db(float(row["signal"]), float(row["noise"]))}
        return stats


def deduplicate(content: bytes) -> bytes:
    """Share identical read-only buffers, as the converter does after quantizing."""
    try:
        from tensorflow.lite.python.lite import _deduplicate_readonly_buffers
    except ImportError:  # a TensorFlow without the helper: the model is valid without it
        return content
    return bytes(_deduplicate_readonly_buffers(content))


def chosen_float_ops(source, float_ops: list[dict[str, Any]], chosen: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Mark the entries of ``float_ops`` (:func:`edgec.tflite_model.float_ops` of ``source``) that
    compute the ops accuracy control left in float on purpose: the ops themselves (``chosen``:
    ``{"id": output tensor name, "op": type}``) and the DEQUANTIZE / QUANTIZE that connect them to
    their int8 neighbours. Any other float op stays unmarked (an op without an int8 kernel)."""
    m = tflite_model.load(source)
    compute = {op.index for op in m.operators if op.op not in CONVERSION_OPS and op.outputs and any(
        c["op"] == op.op and same_tensor(m.tensors[op.outputs[0]].name, c["id"]) for c in chosen)}
    producer = {t: op.index for op in m.operators for t in op.outputs}
    consumers: dict[int, list[int]] = {}
    for op in m.operators:
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(t, []).append(op.index)
    marked = []
    for entry in float_ops:
        op = m.operators[entry["index"]]
        mine = op.index in compute
        if op.op == "DEQUANTIZE":
            users = [u for t in op.outputs for u in consumers.get(t, [])]
            mine = bool(users) and all(u in compute for u in users)
        elif op.op == "QUANTIZE":
            mine = all(producer.get(t) in compute for t in op.inputs if t >= 0)
        marked.append({**entry, "chosen": True} if mine else dict(entry))
    return marked


def _samples(x, model: bytes):
    """One-sample batches of ``x`` as the debugger takes them: a list in the model's input tensor
    order, several inputs matched to their tensors by name (through the signature)."""
    from edgec.calibration import count

    order = [None]
    if isinstance(x, dict):
        from ai_edge_litert.interpreter import Interpreter

        from edgec import tflite_model
        from edgec.targets.tflite.litert import input_indices

        details = Interpreter(model_content=model).get_input_details()
        by_index = {i: n for n, i in input_indices(tflite_model.load(model).signature_inputs, details).items()}
        order = [by_index[d["index"]] for d in details]
    for i in range(count(x)):
        yield [x[n][i:i + 1] for n in order] if isinstance(x, dict) else [x[i:i + 1]]
