"""ONNX for TensorRT: export (tf2onnx), checks, ONNX Runtime runs, symmetric Q/DQ quantization, inspection.

Everything heavy (tf2onnx, onnx, onnxruntime, TensorFlow) is imported inside the functions that
use it; ``pip install 'edgec[onnx]'`` brings the packages.

Q/DQ placement follows what TensorRT fuses best: Q/DQ on the activation input and the weights of
every Conv/Gemm/MatMul, on both inputs of a residual Add, none on the outputs of Conv/Gemm/Add, ReLU
kept as its own node (TensorRT fuses Conv+bias+ReLU(+Add) and re-quantizes once). Activations are
symmetric int8 (zero point 0, scale = amax/127), weights symmetric per output channel in
[-127, 127], kept as float initializers behind a QuantizeLinear -> DequantizeLinear pair (TensorRT
8.x accepts INT8 only through quantization of a float tensor), biases stay float.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError, MissingExtra

log = logging.getLogger(__name__)

OPS_TABLE = "tensorrt_onnx_ops.json"  # data file of the edgec.targets package
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

#: ONNX Runtime session option: on x86 CPUs without VNNI, ORT's U8S8 int8 GEMM kernels sum pairs of
#: u8*s8 products in int16 (vpmaddubsw) and saturate. Symmetric int8 activations are shifted to
#: uint8 with zero point 128, so ReLU outputs sit at 128..255 and saturate often. "1" selects the
#: exact U8U8 kernels. TensorRT accumulates in int32 and never saturates this way.
ORT_EXACT_INT8 = {"session.x64quantprecision": "1"}


def _require(module: str, package: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(package, "onnx", purpose) from exc


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence tf2onnx / ORT quantization INFO chatter and native stderr while they run."""
    from edgec.util import capture_native_stderr

    names = ("tf2onnx", "onnxruntime", "root")
    saved = {n: logging.getLogger(n if n != "root" else None).level for n in names}
    for n in names:
        logging.getLogger(n if n != "root" else None).setLevel(logging.ERROR)
    try:
        with capture_native_stderr():
            yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n if n != "root" else None).setLevel(lvl)


# --------------------------------------------------------------------------- export


def export_keras(model, opset: int):
    """Export a tf-keras model to an ONNX ModelProto with tf2onnx (dynamic batch dimension).

    Raises:
        EdgecError: tf2onnx cannot convert an op at this opset (the message names it).
    """
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    tf2onnx = _require("tf2onnx", "tf2onnx", "ONNX export")
    inp = model.inputs[0]
    name = model.input_names[0] if getattr(model, "input_names", None) else "input"
    spec = (tf.TensorSpec([None, *inp.shape[1:]], inp.dtype, name=name),)
    try:
        with _quiet():
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:  # tf2onnx raises ValueError/RuntimeError/its own types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgecError(f"ONNX export with tf2onnx at opset {opset} failed: {reason[:400]}") from exc
    return proto


# --------------------------------------------------------------------------- checks


@functools.lru_cache(maxsize=1)
def _ops_table() -> dict[str, Any]:
    from importlib import resources

    return json.loads(resources.files("edgec.targets").joinpath(OPS_TABLE).read_text())


def tensorrt_versions() -> list[str]:
    return sorted(_ops_table()["versions"], key=lambda v: tuple(int(p) for p in v.split(".")))


def _table_for(trt_version: str) -> tuple[str, dict[str, Any]]:
    """The op table of ``trt_version``, or of the newest listed version not above it."""
    versions = _ops_table()["versions"]
    want = tuple(int(p) for p in str(trt_version).split(".")[:2])
    candidates = [v for v in tensorrt_versions() if tuple(int(p) for p in v.split(".")) <= want]
    if not candidates:
        raise EdgecError(f"TensorRT {trt_version} is older than any version edgec knows the ONNX parser of; "
                         f"known: {', '.join(tensorrt_versions())}")
    return candidates[-1], versions[candidates[-1]]


def opset_of(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def check_for_tensorrt(model, trt_version: str) -> dict[str, Any]:
    """Run the ONNX checker and check ops/opset/zero points against TensorRT's ONNX parser.

    Returns:
        A report: checker result, opset, op counts, unknown ops (warnings).

    Raises:
        EdgecError: the checker fails, the opset is outside what the parser accepts, an op is
            unsupported, or a Q/DQ zero point is not 0.
    """
    onnx = _require("onnx", "onnx", "ONNX checks")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        raise EdgecError(f"the exported ONNX model fails the ONNX checker: {str(exc).strip()[:400]}") from exc
    table_version, table = _table_for(trt_version)
    opset = opset_of(model)
    if not table["min_opset"] <= opset <= table["max_opset"]:
        raise EdgecError(f"ONNX opset {opset} is outside what TensorRT {trt_version}'s ONNX parser accepts "
                         f"({table['min_opset']}..{table['max_opset']}); set [tensorrt] onnx_opset in the profile "
                         f"to at most {table['max_opset']}")
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    unsupported = sorted(op for op in counts if op in table["unsupported"] or
                         (table["exact"] and op not in table["supported"]))
    if unsupported:
        raise EdgecError(f"TensorRT {trt_version}'s ONNX parser does not support {', '.join(unsupported)} "
                         f"(opset {opset}); replace those layers or pick a profile with a newer TensorRT")
    unknown = sorted(op for op in counts if op not in table["supported"] and op not in table["unsupported"])
    for op in unknown:
        log.warning("operator %s is not in edgec's TensorRT %s op table; the parser may still accept it", op, table_version)
    nonzero = [t for t, zps in _zero_points(model).items() if np.any(zps != 0)]
    if nonzero:
        raise EdgecError(f"TensorRT needs every Q/DQ zero point to be 0; non-zero on {', '.join(nonzero[:5])}")
    return {"onnx_checker": "passed", "opset": opset, "tensorrt": str(trt_version), "op_table": table_version,
            "op_table_exact": table["exact"], "op_counts": dict(sorted(counts.items())), "unknown_ops": unknown}


# --------------------------------------------------------------------------- ONNX Runtime


class OrtRunner:
    """Run an .onnx model on float inputs with ONNX Runtime's CPU provider; float outputs.

    Int8 kernels run in their exact mode (see :data:`ORT_EXACT_INT8`).
    """

    def __init__(self, model: Path | bytes, threads: int | None = None):
        ort = _require("onnxruntime", "onnxruntime", "ONNX verification")
        so = ort.SessionOptions()
        for key, value in ORT_EXACT_INT8.items():
            so.add_session_config_entry(key, value)
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
        self.session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        shape = self.input.shape
        self.dynamic_batch = not isinstance(shape[0], int)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        if self.dynamic_batch:
            return [np.asarray(o, dtype=np.float32) for o in self.session.run(None, {self.input.name: x})]
        outs = [self.session.run(None, {self.input.name: x[i:i + 1]}) for i in range(len(x))]
        return [np.concatenate([np.asarray(o[k], dtype=np.float32) for o in outs]) for k in range(len(outs[0]))]


def io_spec(model, batch: int | None = 1) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of a graph: name, shape (dynamic dims -> ``batch`` on axis 0), dtype."""
    onnx = _require("onnx", "onnx", "ONNX inspection")
    inits = {i.name for i in model.graph.initializer}

    def describe(values):
        out = []
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            dims = []
            for i, d in enumerate(t.shape.dim):
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                else:
                    dims.append(batch if i == 0 else -1)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
            out.append({"name": v.name, "shape": dims, "dtype": dtype})
        return out

    return describe(model.graph.input), describe(model.graph.output)


# --------------------------------------------------------------------------- quantization


@dataclasses.dataclass
class QuantResult:
    model: Any  # onnx.ModelProto with Q/DQ
    report: dict[str, Any]


def _reader(x: np.ndarray, input_name: str, batch: int = 32):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{input_name: x[i:i + batch]} for i in range(0, len(x), batch)])

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


def prepare_for_quantization(model):
    """ORT's pre-processing (shape inference, MatMul+Add -> Gemm, BN folding) and Gemm layout."""
    onnx = _require("onnx", "onnx", "quantization")
    _require("onnxruntime", "onnxruntime", "quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgec-onnx-") as tmp, _quiet():
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx"
        onnx.save(model, src)
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        pre = onnx.load(dst)
    _gemm_weights_transposed(pre)
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
    onnx = _require("onnx", "onnx", "quantization")
    _require("onnxruntime", "onnxruntime", "quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise EdgecError(f"unknown calibration method '{method}'; valid: {', '.join(methods)}")
    extra = dict(TENSORRT_QDQ_OPTIONS)
    if overrides:
        extra["TensorQuantOverrides"] = {
            name: [{"scale": np.array(scale, np.float32), "zero_point": np.array(0, np.int8)}]
            for name, scale in overrides.items()}
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="edgec-qdq-") as tmp, _quiet():
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), _reader(np.asarray(calib_x, np.float32), input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method], extra_options=extra)
        qmodel = onnx.load(dst)
    report = qdq_report(qmodel)
    report.update(calibration=method, calibration_samples=int(len(calib_x)),
                  overridden_tensors=len(overrides or {}))
    if not report["zero_points_all_zero"]:
        raise EdgecError("internal: the quantizer produced non-zero zero points, which TensorRT rejects")
    missing = [n for n, ok in report["weights_per_channel"].items() if not ok]
    if missing:
        raise EdgecError(f"internal: weights of {', '.join(missing)} are not quantized per channel")
    return QuantResult(qmodel, report)


def _zero_points(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
            out[node.name or node.output[0]] = (numpy_helper.to_array(inits[zp]) if zp in inits
                                                else np.zeros(1, np.int8))
    return out


def _producers(model) -> dict[str, Any]:
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
    producers = _producers(model)
    zps = _zero_points(model)
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    weights = {}
    quantized_inputs = {}
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS:
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
        "weighted_inputs_quantized": quantized_inputs,
    }


# --------------------------------------------------------------------------- intermediate tensors


def float_tensors(model) -> list[str]:
    """Names of every float32 tensor a node produces (from ONNX shape inference)."""
    onnx = _require("onnx", "onnx", "ONNX inspection")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    return [o for n in model.graph.node for o in n.output if types.get(o) == onnx.TensorProto.FLOAT]


def run_all_tensors(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` on ``x`` and return every float intermediate tensor by name."""
    onnx = _require("onnx", "onnx", "ONNX inspection")
    ort = _require("onnxruntime", "onnxruntime", "ONNX inspection")
    names = float_tensors(model)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend([onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = sess.run(None, {model.graph.input[0].name: np.asarray(x, np.float32)})
    return dict(zip(names, values, strict=True))


def match_tensors(reference: dict[str, np.ndarray], onnx_values: dict[str, np.ndarray],
                  rtol: float = 1e-4) -> dict[str, list[str]]:
    """Map each reference tensor (e.g. a Keras layer output) to the ONNX tensors holding the same values.

    Values are compared sorted, so NHWC vs NCHW layouts and transposes match.
    """
    sorted_onnx = {n: np.sort(v.ravel()) for n, v in onnx_values.items()}
    out: dict[str, list[str]] = {}
    for key, ref in reference.items():
        flat = np.sort(np.asarray(ref, np.float32).ravel())
        tol = rtol * max(1.0, float(np.abs(flat).max(initial=0.0)))
        out[key] = [n for n, v in sorted_onnx.items()
                    if v.size == flat.size and np.allclose(v, flat, rtol=0, atol=tol)]
    return out


# --------------------------------------------------------------------------- inspection


def inspect_onnx(path: Path) -> dict[str, Any]:
    """Ops, weights, Q/DQ placement and zero points, parameters and sizes of an .onnx file.

    Raises:
        EdgecError: unreadable or not an ONNX model.
    """
    onnx = _require("onnx", "onnx", "ONNX inspection")
    from onnx import helper, numpy_helper

    from edgec.inspection import compressed_sizes

    path = Path(path)
    raw = path.read_bytes()
    try:
        model = onnx.load_from_string(raw)
    except Exception as exc:  # DecodeError and friends
        raise EdgecError(f"cannot read '{path}' as an ONNX model: {exc}") from exc
    if not model.graph.node:
        raise EdgecError(f"'{path}' holds no ONNX graph (is it an ONNX model?)")
    inits = {i.name: i for i in model.graph.initializer}
    producers = _producers(model)
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        shapes = {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or -1)
                           for d in v.type.tensor_type.shape.dim]
                  for v in [*inferred.graph.value_info, *inferred.graph.output]}
    except Exception:  # shape inference is a nicety here
        shapes = {}

    def params_of(node) -> list[str]:
        """Float initializers (weights, biases) a node consumes, directly or through Q -> DQ."""
        found = []
        for name in node.input:
            while name not in inits and name in producers and producers[name].op_type in QDQ_OPS:
                name = producers[name].input[0]  # follow the data input, not scale / zero point
            if name in inits and inits[name].data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                found.append(name)
        return found

    ops, qdq = [], []
    counted: set[str] = set()
    for idx, node in enumerate(model.graph.node):
        if node.op_type in QDQ_OPS:
            if node.op_type == "QuantizeLinear" or node.input[0] in inits:
                scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
                zp = (numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits
                      else np.zeros(1, np.int8))
                tensor = node.input[0]
                out = node.output[0]
                deq = [c for c in consumers.get(out, []) if c.op_type == "DequantizeLinear"]
                users = sorted({c.op_type for d in deq for c in consumers.get(d.output[0], [])}) if deq else \
                    sorted({c.op_type for c in consumers.get(out, [])})
                axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)
                qdq.append({
                    "tensor": tensor, "kind": "weight" if tensor in inits else "activation",
                    "dtype": zp.dtype.name, "per_channel": bool(scale is not None and scale.size > 1),
                    "channels": int(scale.size) if scale is not None else None,
                    "axis": int(axis) if axis is not None and scale is not None and scale.size > 1 else None,
                    "scale": float(scale.ravel()[0]) if scale is not None and scale.size == 1 else None,
                    "scale_range": [float(scale.min()), float(scale.max())] if scale is not None else None,
                    "zero_points": sorted({int(v) for v in zp.ravel()}), "consumers": users,
                })
            continue
        weights = [w for w in params_of(node) if w not in counted]
        counted.update(weights)
        arrays = [numpy_helper.to_array(inits[w]) for w in weights]
        kernel = arrays[0] if node.op_type in WEIGHTED_OPS and arrays else None
        in_quant = any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input)
        ops.append({
            "index": idx, "op": node.op_type, "name": node.name, "output": node.output[0] if node.output else None,
            "shape": shapes.get(node.output[0]) if node.output else None,
            "weight_shape": list(kernel.shape) if kernel is not None else None,
            "weight_dtype": kernel.dtype.name if kernel is not None else None,
            "params": int(sum(a.size for a in arrays)), "bytes": int(sum(a.nbytes for a in arrays)),
            "quantized_input": bool(in_quant),
            "zero_share": round(float((kernel == 0).mean()), 6) if kernel is not None and kernel.size else None,
        })
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    inputs, outputs = io_spec(model, batch=None)
    zero_points = sorted({z for q in qdq for z in q["zero_points"]})
    totals = {
        "nodes": len(model.graph.node), "ops": len(ops), "params": int(sum(r["params"] for r in ops)),
        "initializer_bytes": int(sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)),
        "qdq_tensors": len(qdq), "qdq_weights": sum(q["kind"] == "weight" for q in qdq),
        "qdq_activations": sum(q["kind"] == "activation" for q in qdq),
        "zero_points": zero_points, "file_bytes": len(raw),
        **{f"{k}_bytes": v for k, v in compressed_sizes(raw).items()},
    }
    return {"file": str(path), "format": "onnx", "opset": opset_of(model), "producer": model.producer_name,
            "inputs": inputs, "outputs": outputs, "op_counts": dict(sorted(counts.items())), "ops": ops,
            "qdq": qdq, "totals": totals}


def keras_vs_onnx(predict: Callable[[np.ndarray], list[np.ndarray]], runner: Callable, x: np.ndarray) -> float:
    """Max abs difference between two predictors' outputs on ``x``."""
    ref, got = predict(x), runner(x)
    return float(max(np.abs(r.astype(np.float64) - g.reshape(r.shape)).max() for r, g in zip(ref, got, strict=True)))


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
