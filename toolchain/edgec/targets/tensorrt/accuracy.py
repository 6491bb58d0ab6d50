"""TensorRT's Q/DQ ONNX with any set of nodes left in float: no Q/DQ around them.

The int8 model is the target's own (:func:`edgec.targets.tensorrt.quantize.quantize_model`: symmetric
Q/DQ in TensorRT's placement). A node left in float reads the float tensors its QuantizeLinear ->
DequantizeLinear pairs were fed (activations and weights alike); the pairs stay for the other
consumers, and pairs nobody reads any more are removed. TensorRT then runs that node in fp16/fp32.
In this placement the Q/DQ sit on a node's inputs, never on its output, so one node left in float
is one candidate.

The per-node error runs the Q/DQ model once with a float twin of every candidate node beside it (the
same node reading the un-quantized inputs), as TFLite's NumericVerify does, under ONNX Runtime with
exact int8 accumulation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgec.targets.quant import Candidate, QuantOp, layers_named, sqnr_db
from edgec.targets.tensorrt.onnx_io import ORT_EXACT_INT8, require

log = logging.getLogger(__name__)

QDQ = ("QuantizeLinear", "DequantizeLinear")
#: nodes that pass a tensor on unchanged in scale (walked through to find the Q/DQ of an output)
_PASS_THROUGH = ("Relu", "Clip", "MaxPool", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Identity")
_FLOAT_SUFFIX = "__edgec_float"


def _producers(graph) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _float_source(name: str, producers: dict[str, Any], inits: dict[str, Any]) -> str | None:
    """The float tensor a DequantizeLinear output was quantized from (``None``: not dequantized)."""
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producers.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        return q.input[0]
    return None


def _scale(name: str, inits) -> np.ndarray | None:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name]).astype(np.float64) if name in inits else None


class TensorRTBackend:
    """A Q/DQ ONNX model (TensorRT placement) with any set of nodes left in float.

    Args:
        qdq: the int8 ModelProto with Q/DQ.
        layer_names: the Keras layers, to name the layer each node came from.
        threads: ONNX Runtime threads for the host runs.
    """

    kind = "tensorrt"
    host_latency = False

    def __init__(self, qdq, *, layer_names: list[str] | None = None, threads: int | None = None):
        require("onnx", "onnx", "accuracy control")
        self.qdq = qdq
        self.threads = threads
        self.layer_names = list(layer_names or [])
        self.plain = qdq.SerializeToString()
        self.ops = self._inventory()

    # ------------------------------------------------------------------ artifacts

    def _variant(self, float_ops: Iterable[str]):
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.qdq)
        graph = model.graph
        wanted = set(float_ops)
        producers = _producers(graph)
        inits = {i.name: i for i in graph.initializer}
        for node in graph.node:
            if (node.name or node.output[0]) not in wanted:
                continue
            for k, name in enumerate(node.input):
                source = _float_source(name, producers, inits)
                if source is not None:
                    node.input[k] = source
        _drop_unused(model)
        return model

    def build(self, float_ops: Iterable[str]):
        """The Q/DQ model (serialized) with the nodes named ``float_ops`` left in float."""
        key = frozenset(float_ops)
        if not key:
            return self.plain
        return self._variant(key).SerializeToString()

    def proto(self, float_ops: Iterable[str]):
        """:meth:`build` as a ModelProto."""
        import onnx

        return onnx.load_from_string(self.build(float_ops))

    def run(self, artifact: bytes, x: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
        from edgec.targets.tensorrt.onnx_io import OrtRunner

        runner = OrtRunner(artifact, threads=self.threads)
        return runner(x), runner.output_names

    def size(self, artifact: bytes) -> int:
        return len(artifact)

    def candidates(self) -> list[Candidate]:
        return [Candidate((o.id,), "op", o.layer) for o in self.ops]

    # ------------------------------------------------------------------ what the model holds

    def _inventory(self) -> list[QuantOp]:
        """Every non-Q/DQ node that reads a dequantized tensor, in graph order."""
        from onnx import numpy_helper

        graph = self.qdq.graph
        producers, consumers = _producers(graph), _consumers(graph)
        inits = {i.name: i for i in graph.initializer}
        shapes = _shapes(self.qdq)
        ops = []
        for index, node in enumerate(graph.node):
            if node.op_type in QDQ:
                continue
            sources = [_float_source(name, producers, inits) for name in node.input]
            if not any(sources):
                continue
            weights = [s for s in sources if s in inits]
            plain_inits = [name for name in node.input  # biases; not shape or axes constants
                           if name in inits and inits[name].data_type == 1]  # TensorProto.FLOAT
            # the node's own names name its layer: its name, output and weights (inputs are its producers')
            names = [node.name, *node.output, *weights, *plain_inits]
            q = QuantOp(id=node.name or node.output[0], index=index, op=node.op_type,
                        layers=layers_named(names, self.layer_names))
            q.params = int(sum(numpy_helper.to_array(inits[n]).size for n in [*weights, *plain_inits]))
            for name, source in zip(node.input, sources, strict=True):
                if source is None:
                    continue
                scale = _scale(producers[name].input[1], inits)
                if scale is None:
                    continue
                if source in inits:
                    q.weight_scale, q.weight_channels = (float(scale.min()), float(scale.max())), int(scale.size)
                elif q.input_scale is None:
                    q.input_scale = float(scale.reshape(-1)[0])
            q.output_scale = _output_scale(node.output[0], consumers, inits)
            q.macs = _macs(node, shapes, inits, weights)
            ops.append(q)
        return ops

    # ------------------------------------------------------------------ per-node error

    def layer_stats(self, x: np.ndarray) -> dict[str, dict[str, float | None]]:
        """Per-node error of the plain Q/DQ model on ``x``: each candidate's output against its float
        twin's (the same node on the un-quantized inputs of the same run)."""
        import onnx

        ort = require("onnxruntime", "onnxruntime", "accuracy analysis")
        model = onnx.ModelProto()
        model.CopyFrom(self.qdq)
        graph = model.graph
        producers = _producers(graph)
        inits = {i.name: i for i in graph.initializer}
        by_id = {o.id: o for o in self.ops}
        pairs = {}
        twins = []
        for node in graph.node:
            op_id = node.name or node.output[0]
            if op_id not in by_id:
                continue
            twin = onnx.NodeProto()
            twin.CopyFrom(node)
            twin.name = op_id + _FLOAT_SUFFIX
            for k, name in enumerate(twin.input):
                source = _float_source(name, producers, inits)
                if source is not None:
                    twin.input[k] = source
            del twin.output[:]
            twin.output.extend([o + _FLOAT_SUFFIX for o in node.output])
            twins.append(twin)
            pairs[op_id] = (node.output[0], node.output[0] + _FLOAT_SUFFIX)
        graph.node.extend(twins)
        del graph.output[:]
        for got, ref in pairs.values():
            graph.output.extend([onnx.helper.make_tensor_value_info(got, onnx.TensorProto.FLOAT, None),
                                 onnx.helper.make_tensor_value_info(ref, onnx.TensorProto.FLOAT, None)])
        so = ort.SessionOptions()
        for key, value in ORT_EXACT_INT8.items():
            so.add_session_config_entry(key, value)
        if self.threads:
            so.intra_op_num_threads = self.threads
        so.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        sums = {op_id: [0.0, 0.0, 0] for op_id in pairs}
        from edgec import calibration

        feed = {n: np.asarray(a, np.float32) for n, a in x.items()} if isinstance(x, dict) else \
            {graph.input[0].name: np.asarray(x, np.float32)}  # several inputs: keyed by the graph's input names
        for start in range(0, calibration.count(x), 64):
            values = dict(zip(names, session.run(None, calibration.take(feed, slice(start, start + 64))), strict=True))
            for op_id, (got, ref) in pairs.items():
                f = values[ref].astype(np.float64)
                s = sums[op_id]
                s[0] += float(np.sum(f ** 2))
                s[1] += float(np.sum((values[got] - f) ** 2))
                s[2] += int(f.size)
        stats = {}
        for op_id, (signal, noise, count) in sums.items():
            step = by_id[op_id].output_scale
            rmse = float(np.sqrt(noise / count)) if count else 0.0
            stats[op_id] = {"rmse_steps": round(rmse / step, 4) if step else None, "sqnr_db": sqnr_db(signal, noise)}
        return stats


def _drop_unused(model) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then initializers nobody reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in QDQ and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | outputs
    keep = [i for i in graph.initializer if i.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


def _output_scale(name: str, consumers: dict[str, list[Any]], inits) -> float | None:
    """The step of the QuantizeLinear that quantizes a node's output (through ReLU, pooling and
    reshapes, which keep its scale), or None when nothing quantizes it."""
    seen = set()
    frontier = [name]
    while frontier:
        tensor = frontier.pop(0)
        if tensor in seen:
            continue
        seen.add(tensor)
        for user in consumers.get(tensor, []):
            if user.op_type == "QuantizeLinear":
                scale = _scale(user.input[1], inits)
                if scale is not None:
                    return float(scale.reshape(-1)[0])
            elif user.op_type in _PASS_THROUGH:
                frontier.extend(user.output)
    return None


def _shapes(model) -> dict[str, list[int]]:
    """Shapes of every tensor with the batch dimension set to 1 (ONNX shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [int(d.dim_value) if d.HasField("dim_value") else 1 for d in dims]
    return shapes


def _macs(node, shapes: dict[str, list[int]], inits, weights: list[str]) -> int:
    """Multiply-accumulates per sample of a Conv / Gemm / MatMul node (0 for others)."""
    from onnx import numpy_helper

    out = shapes.get(node.output[0])
    if not out or not weights:
        return 0
    w = numpy_helper.to_array(inits[weights[0]]).shape
    per_sample = int(np.prod(out[1:])) if len(out) > 1 else int(np.prod(out))
    if node.op_type == "Conv":  # weight [out, in / group, kh, kw]
        return per_sample * int(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        x = shapes.get(node.input[0]) or []
        return int(np.prod(x[1:])) * int(np.prod(w[1:])) if x else 0
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return per_sample * int(w[1] if trans_b else w[0])
    if node.op_type == "MatMul":
        return per_sample * int(w[-2]) if len(w) >= 2 else 0
    return 0


def chosen_float_ops(float_ops: list[dict[str, Any]], chosen: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Mark the entries of ``float_ops`` (:func:`edgec.targets.tensorrt.quantize.unquantized_ops`)
    whose node accuracy control left in float on purpose."""
    ids = {c["id"] for c in chosen}
    return [{**e, "chosen": True} if e.get("node") in ids else dict(e) for e in float_ops]
