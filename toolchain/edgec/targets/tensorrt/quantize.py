"""Symmetric int8 Q/DQ in TensorRT's explicit-quantization form, with ONNX Runtime's quantizer.

Placement follows what TensorRT fuses best: Q/DQ on the activation input and the weights of every
Conv/Gemm/MatMul, on both inputs of a residual Add, none on the outputs of Conv/Gemm/Add, ReLU kept
as its own node (TensorRT fuses Conv+bias+ReLU(+Add) and re-quantizes once). Activations are
symmetric int8 (zero point 0, scale = amax/127), weights symmetric per output channel in
[-127, 127], kept as float initializers behind a QuantizeLinear -> DequantizeLinear pair (TensorRT
8.x accepts INT8 only through quantization of a float tensor), biases stay float. The ranges come
from QAT where the model was trained with the target's scheme, else from calibration.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.targets.tensorrt.onnx_io import match_tensors, quiet, require, run_all_tensors

log = logging.getLogger(__name__)

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

#: ONNX Runtime quantizer options that give TensorRT's explicit-quantization layout (see module doc).
TENSORRT_QDQ_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "OpTypesToExcludeOutputQuantization": ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add"],
    "AddQDQPairToWeight": True,
    "QuantizeBias": False,
}


@dataclasses.dataclass
class QuantResult:
    model: Any  # onnx.ModelProto with Q/DQ
    report: dict[str, Any]


def _reader(x, input_names: list[str], batch: int = 32):
    """Calibration batches for ONNX Runtime: ``x`` one array (one input) or a dict keyed by the
    graph's input names (several inputs)."""
    from onnxruntime.quantization import CalibrationDataReader

    from edgec.calibration import count

    feed = {n: np.asarray(x[n], np.float32) for n in input_names} if isinstance(x, dict) \
        else {input_names[0]: np.asarray(x, np.float32)}
    n = count(x)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{k: v[i:i + batch] for k, v in feed.items()} for i in range(0, n, batch)])

        def get_next(self):
            return next(self._it, None)

    return Reader()


def _gemm_weights_transposed(model) -> None:
    """Store Gemm weights as [out, in] (transB=1) so per-channel scales run along axis 0."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits or users[node.input[1]] != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transB", 0):
            continue
        init = inits[node.input[1]]
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(init).T), init.name))
        kept = [a for a in node.attribute if a.name != "transB"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("transB", 1)])


def own_initializers(model) -> int:
    """Give every consumer of a shared initializer its own copy, in place; returns the copies made.

    tf2onnx shares one initializer among every node using the same constant (hard-swish's 3 and
    1/6, a BatchNorm's folded scale). The quantizer then puts one Q/DQ pair on it, feeding dozens
    of nodes, and ONNX Runtime's Q/DQ fusion rewrites that pair once per consumer under one name
    ("Attempt to replace the existing tensor"). With a copy each, each consumer gets its own pair,
    the layout TensorRT expects of a quantized constant.
    """
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, list[tuple[Any, int]]] = {}
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            if name in inits:
                uses.setdefault(name, []).append((node, slot))
    taken = set(inits) | {o for n in model.graph.node for o in n.output}
    copies = 0
    for name, users in uses.items():
        for index, (node, slot) in enumerate(users[1:], start=1):
            fresh = f"{name}_{index}"
            while fresh in taken:
                fresh += "_"
            taken.add(fresh)
            copy = model.graph.initializer.add()
            copy.CopyFrom(inits[name])
            copy.name = fresh
            node.input[slot] = fresh
            copies += 1
    return copies


def prepare_for_quantization(model):
    """ORT's pre-processing (shape inference, MatMul+Add -> Gemm, BN folding), Gemm layout, and one
    copy of each shared initializer per consumer (:func:`own_initializers`)."""
    onnx = require("onnx", "onnx", "quantization")
    require("onnxruntime", "onnxruntime", "quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgec-onnx-") as tmp, quiet():
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx"
        onnx.save(model, src)
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        pre = onnx.load(dst)
    _gemm_weights_transposed(pre)
    own_initializers(pre)
    return pre


def quantize_qdq(model, calib_x: np.ndarray, *, overrides: dict[str, float] | None = None,
                 method: str = "minmax") -> QuantResult:
    """Symmetric int8 Q/DQ for TensorRT with ONNX Runtime's static quantizer.

    Args:
        model: float ONNX ModelProto (from :func:`prepare_for_quantization`).
        calib_x: representative inputs; ranges of tensors not in ``overrides`` come from them.
        overrides: tensor name -> scale (zero point 0), e.g. ranges learned by QAT.
        method: "minmax", "percentile" or "entropy" calibration.

    Raises:
        EdgecError: the quantized model breaks TensorRT's rules (zero points, per-channel weights).
    """
    onnx = require("onnx", "onnx", "quantization")
    require("onnxruntime", "onnxruntime", "quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgec.calibration import count

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise EdgecError(f"unknown calibration method '{method}'; valid: {', '.join(methods)}")
    extra = dict(TENSORRT_QDQ_OPTIONS)
    if overrides:
        extra["TensorQuantOverrides"] = {
            name: [{"scale": np.array(scale, np.float32), "zero_point": np.array(0, np.int8)}]
            for name, scale in overrides.items()}
    initializers = {i.name for i in model.graph.initializer}
    input_names = [i.name for i in model.graph.input if i.name not in initializers]
    with tempfile.TemporaryDirectory(prefix="edgec-qdq-") as tmp, quiet():
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), _reader(calib_x, input_names),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method], extra_options=extra)
        qmodel = onnx.load(dst)
    report = qdq_report(qmodel)
    report.update(calibration=method, calibration_samples=count(calib_x),
                  overridden_tensors=len(overrides or {}))
    if not report["zero_points_all_zero"]:
        raise EdgecError("internal: the quantizer produced non-zero zero points, which TensorRT rejects")
    missing = [n for n, ok in report["weights_per_channel"].items() if not ok]
    if missing:
        raise EdgecError(f"internal: weights of {', '.join(missing)} are not quantized per channel")
    mixed = [n for n, ok in report["activation_matmuls"].items() if not ok]
    if mixed:
        raise EdgecError(f"internal: activation x activation {', '.join(mixed)} are not quantized per tensor "
                         "on both inputs")
    return QuantResult(qmodel, report)


def zero_points_of(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
            out[node.name or node.output[0]] = (numpy_helper.to_array(inits[zp]) if zp in inits
                                                else np.zeros(1, np.int8))
    return out


def producers_of(model) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def _weight_quant(model, node, producers, inits) -> dict[str, Any] | None:
    """How the weight input of a Conv/Gemm/MatMul node is quantized, or None when it is float."""
    from onnx import helper, numpy_helper

    if len(node.input) < 2:
        return None
    dq = producers.get(node.input[1])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    scale = numpy_helper.to_array(inits[dq.input[1]]) if dq.input[1] in inits else None
    axis = next((helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1)
    src = producers.get(dq.input[0])
    weight_name = src.input[0] if src is not None and src.op_type == "QuantizeLinear" else dq.input[0]
    weight = numpy_helper.to_array(inits[weight_name]) if weight_name in inits else None
    if weight is None:
        return None
    out_axis = 0
    if node.op_type == "MatMul":
        out_axis = weight.ndim - 1
    elif node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        out_axis = 0 if attrs.get("transB", 0) else 1
    elif node.op_type == "ConvTranspose":
        out_axis = 1
    per_channel = (scale is not None and scale.ndim == 1 and scale.size == weight.shape[out_axis] and scale.size > 1
                   and axis % weight.ndim == out_axis)
    return {"weight": weight_name, "shape": list(weight.shape), "channels": int(weight.shape[out_axis]),
            "scales": int(scale.size) if scale is not None else 0, "axis": int(axis), "per_channel": bool(per_channel),
            "stored_as": numpy_helper.to_array(inits[weight_name]).dtype.name}


def qdq_report(model) -> dict[str, Any]:
    """Where the Q/DQ nodes are and whether they satisfy TensorRT's explicit-quantization rules."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producers = producers_of(model)
    zps = zero_points_of(model)
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    weights, activation_matmuls = {}, {}
    quantized_inputs = {}
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS:
            if node.op_type == "MatMul" and not _constant_input(node.input[1], producers, inits):
                # attention's Q x K^T and P x V: two activations, each quantized per tensor
                activation_matmuls[node.name or node.output[0]] = all(
                    _per_tensor_dq(name, producers, inits) for name in node.input[:2])
                quantized_inputs[node.name or node.output[0]] = activation_matmuls[node.name or node.output[0]]
                continue
            w = _weight_quant(model, node, producers, inits)
            weights[node.name or node.output[0]] = bool(w and w["per_channel"])
            src = producers.get(node.input[0])
            quantized_inputs[node.name or node.output[0]] = bool(src is not None and src.op_type == "DequantizeLinear")
    act_dtypes = sorted({numpy_helper.to_array(inits[n.input[2]]).dtype.name for n in q_nodes
                         if len(n.input) > 2 and n.input[2] in inits})
    return {
        "quantize_nodes": len(q_nodes),
        "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in model.graph.node),
        "zero_points_all_zero": bool(all(np.all(z == 0) for z in zps.values())),
        "qdq_dtypes": act_dtypes,
        "weights_per_channel": weights,
        "activation_matmuls": activation_matmuls,
        "weighted_inputs_quantized": quantized_inputs,
    }


def _constant_input(name: str, producers, inits) -> bool:
    """Whether ``name`` is an initializer, directly or through Q/DQ nodes."""
    while name not in inits and name in producers and producers[name].op_type in QDQ_OPS:
        name = producers[name].input[0]
    return name in inits


def _per_tensor_dq(name: str, producers, inits) -> bool:
    """Whether ``name`` comes out of a DequantizeLinear with one scale."""
    from onnx import numpy_helper

    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in inits:
        return False
    return numpy_helper.to_array(inits[dq.input[1]]).size == 1




def quantize_model(model, float_proto, ranges: dict[str, tuple[float, float]], calib, progress):
    """Q/DQ ONNX of ``float_proto``: QAT ranges where QAT learned them (``model`` is the QAT model's float
    twin, ``ranges`` its layers' learned ranges), calibration on ``calib`` for the rest."""
    if calib is None:  # check() guarantees it; a direct API caller may skip check()
        raise EdgecError("precision int8 needs --calib data (or --qat with --fine-tune DATA)")
    with progress.task("quantize: prepare ONNX"):
        pre = prepare_for_quantization(float_proto)
    overrides: dict[str, float] = {}
    qat_info: dict[str, Any] = {}
    if ranges:
        from edgec.targets.tensorrt.qat import symmetric_scale
        from edgec.tfcompat import tf_and_keras

        _, keras = tf_and_keras()
        names = [n for n in ranges if n in {layer.name for layer in model.layers}]
        from edgec.calibration import take
        from edgec.model_io import model_feed

        x = take(calib.x, slice(0, 16))
        sub = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
        outs = sub(model_feed(model, x), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        values = run_all_tensors(pre, x)
        values.update(x if isinstance(x, dict) else {pre.graph.input[0].name: x})
        matches = match_tensors({n: np.asarray(o) for n, o in zip(names, outs, strict=True)}, values)
        asymmetric = []
        for name, tensors in matches.items():
            scale, symmetric = symmetric_scale(*ranges[name])
            if not symmetric:
                asymmetric.append(name)
            for tensor in tensors:
                overrides[tensor] = scale
        qat_info = {"qat_ranges": len(ranges), "qat_ranges_mapped": sum(bool(t) for t in matches.values()),
                    "unmapped_layers": sorted(n for n, t in matches.items() if not t),
                    "asymmetric_ranges_widened": sorted(asymmetric)}
        if asymmetric:
            log.warning("QAT ranges of %s are asymmetric (TF-MOT default scheme?); widened to symmetric for TensorRT; "
                        "train with the target's qat_scheme for ranges TensorRT uses as learned", ", ".join(asymmetric))
    with progress.task("quantize: symmetric int8 Q/DQ (ONNX Runtime)"):
        result = quantize_qdq(pre, calib.x, overrides=overrides)
    report = dict(result.report)
    report.update(source="qat" if ranges else "ptq", **qat_info)
    return result.model, report


def unquantized_ops(source) -> list[dict[str, Any]]:
    """Conv/Gemm/MatMul nodes of a Q/DQ model whose data input or weight is not dequantized from
    int8: TensorRT runs them in floating point. ``source``: a path or a ModelProto."""
    onnx = require("onnx", "onnx", "ONNX inspection")
    model = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    producers = producers_of(model)
    found = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in WEIGHTED_OPS:
            continue
        plain = [name for name in node.input[:2]
                 if name and (producers.get(name) is None or producers[name].op_type != "DequantizeLinear")]
        if plain:
            found.append({"index": index, "op": node.op_type, "node": node.name, "tensors": plain})
    return found
