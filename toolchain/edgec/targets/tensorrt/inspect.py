"""``edgec inspect model.onnx``: ops, weights, Q/DQ placement and zero points, parameters, sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.targets.tensorrt.onnx_io import io_spec, opset_of, require
from edgec.targets.tensorrt.quantize import QDQ_OPS, WEIGHTED_OPS, producers_of, unquantized_ops


def inspect_onnx(path: Path) -> dict[str, Any]:
    """Ops, weights, Q/DQ placement and zero points, parameters and sizes of an .onnx file.

    Raises:
        EdgecError: unreadable or not an ONNX model.
    """
    onnx = require("onnx", "onnx", "ONNX inspection")
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
    producers = producers_of(model)
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
            "float_ops": unquantized_ops(model) if qdq else None,
            "qdq": qdq, "totals": totals}


