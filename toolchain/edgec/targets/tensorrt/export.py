"""ONNX export for TensorRT (tf2onnx at the profile's opset) and the checks TensorRT's ONNX parser makes.

Every op is checked against the ONNX parser of the profile's TensorRT version
(``targets/tensorrt_onnx_ops.json`` at the top of the repository, from onnx-tensorrt's operator
matrix); zero points must be 0.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.resources import data_file
from edgec.targets.tensorrt.onnx_io import opset_of, quiet, require
from edgec.targets.tensorrt.quantize import zero_points_of

log = logging.getLogger(__name__)

OPS_TABLE = data_file("targets", "tensorrt_onnx_ops.json")


def export_onnx(model, opset: int, output_names: list[str] | None = None):
    """Export a tf-keras or signature model to an ONNX ModelProto with tf2onnx (dynamic batch
    dimension), its outputs in the model's order and named ``output_names`` (default: as the model
    names them, :func:`edgec.model_io.output_specs`).

    The model's function is frozen here rather than in tf2onnx's Keras path: every captured tensor
    (variables, resources and constants of a loaded SavedModel) becomes a constant instead of an
    extra graph input, and nested functions (tf-keras runs grouped convolutions as jit-compiled,
    non-inlinable functions) are inlined, as TensorRT's parser sees only ONNX ops. TensorFlow ops
    with no ONNX counterpart that TensorRT imports are rewritten (Erfc -> 1 - Erf).

    Raises:
        EdgecError: tf2onnx cannot convert an op at this opset (the message names it).
    """
    from edgec.model_io import SignatureModel, output_specs
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    tf2onnx = require("tf2onnx", "tf2onnx", "ONNX export")
    specs = output_specs(model)
    names = output_names or [o.name for o in specs]
    if isinstance(model, SignatureModel):
        input_names = list(model.input_names)
        call = model.__call__

        def outputs(*x):
            result = call(x[0] if len(x) == 1 else dict(zip(input_names, x, strict=True)))
            return [result[o.key] for o in specs]
    else:
        input_names = list(getattr(model, "input_names", None) or ["input"])

        def outputs(*x):
            return tf.nest.flatten(model(x[0] if len(x) == 1 else list(x), training=False))
    signature = [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=n)
                 for t, n in zip(model.inputs, input_names, strict=True)]
    _restart_tf2onnx_names()
    try:
        with quiet():
            graph_def, graph_inputs, graph_outputs = frozen_graph(tf.function(outputs), signature)
            renames = dict(zip(graph_inputs, input_names, strict=True))
            renames.update(zip(graph_outputs, names, strict=True))
            proto, _ = tf2onnx.convert.from_graph_def(
                graph_def, name=model.name, input_names=graph_inputs, output_names=graph_outputs,
                opset=opset, tensors_to_rename=renames)
    except EdgecError:
        raise
    except Exception as exc:  # tf2onnx raises ValueError/RuntimeError/its own types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgecError(f"ONNX export with tf2onnx at opset {opset} failed: {reason[:400]}") from exc
    replace_erfc(proto)
    got = [o.name for o in proto.graph.output]
    if got != names:
        raise EdgecError(f"the ONNX export's outputs are {got}, expected the model's {names}")
    extra = [i.name for i in proto.graph.input if i.name not in input_names]
    if extra:
        raise EdgecError(f"internal: the ONNX export has inputs {', '.join(extra[:5])} besides the model's "
                         f"{', '.join(input_names)} (a captured tensor was not frozen)")
    return proto


#: function attributes that keep TensorFlow's function inliner away (tf-keras' jit-compiled
#: grouped convolution sets both); the ONNX graph has no functions, so they are dropped.
_NO_INLINE_ATTRS = ("_noinline", "_XlaMustCompile", "_XlaCompile", "_XlaScope", "_XlaInternalScope")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


def frozen_graph(function, signature) -> tuple[Any, list[str], list[str]]:
    """A GraphDef of ``function`` traced at ``signature``: every captured tensor a constant, every
    nested function inlined. Returns the graph and its input and output tensor names.

    Raises:
        EdgecError: a nested function is left that TensorFlow's inliner will not inline.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tf2onnx import tf_loader

    concrete = function.get_concrete_function(*signature)
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def(add_shapes=True)
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    if any(node.op in _CALL_OPS for node in graph_def.node):
        for fn in graph_def.library.function:
            for key in _NO_INLINE_ATTRS:
                if key in fn.attr:
                    del fn.attr[key]
            for node in fn.node_def:
                for key in _NO_INLINE_ATTRS:
                    if key in node.attr:
                        del node.attr[key]
        for node in graph_def.node:
            for key in _NO_INLINE_ATTRS:
                if key in node.attr:
                    del node.attr[key]
        with tf.Graph().as_default():  # grappler's function inlining, in graph mode
            graph_def = tf_loader.tf_optimize(inputs, outputs, graph_def)
    left = sorted({node.name for node in graph_def.node if node.op in _CALL_OPS})
    if left:
        raise EdgecError(f"the model's graph keeps nested function calls TensorFlow will not inline "
                         f"({', '.join(left[:3])}); ONNX export needs a flat graph")
    return graph_def, inputs, outputs


def replace_erfc(proto) -> int:
    """Rewrite tf2onnx's pass-through ``Erfc`` nodes (exact GELU: ``0.5 x erfc(-x/sqrt 2)``) as
    ``1 - Erf``, which ONNX and TensorRT define. Returns how many were rewritten."""
    from onnx import TensorProto, helper

    nodes = list(proto.graph.node)
    if not any(n.op_type == "Erfc" and n.domain in ("", "ai.onnx") for n in nodes):
        return 0
    one = "edgec_erfc_one"
    proto.graph.initializer.append(helper.make_tensor(one, TensorProto.FLOAT, [], [1.0]))
    rebuilt, count = [], 0
    for node in nodes:
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            rebuilt.append(node)
            continue
        erf = f"{node.output[0]}_erf"
        rebuilt.append(helper.make_node("Erf", [node.input[0]], [erf], name=f"{node.name}_erf"))
        rebuilt.append(helper.make_node("Sub", [one, erf], [node.output[0]], name=f"{node.name}_one_minus"))
        count += 1
    del proto.graph.node[:]
    proto.graph.node.extend(rebuilt)
    return count


_first_tf2onnx_name: int | None = None


def _restart_tf2onnx_names() -> None:
    """tf2onnx names the nodes it adds from a process-wide counter: set it back to where a fresh
    process starts (after tf2onnx's imports), so an export writes the same bytes in a long-running
    process (``edgec ci``, ``edgec search``, the Python API) as in a fresh one."""
    global _first_tf2onnx_name
    importlib.import_module("tf2onnx.convert")  # its imports move the counter once, in any process
    utils = importlib.import_module("tf2onnx.utils")
    if _first_tf2onnx_name is None:
        _first_tf2onnx_name = utils.INTERNAL_NAME
    utils.INTERNAL_NAME = _first_tf2onnx_name


def rename_outputs(proto, renames: dict[str, str]) -> None:
    """Rename graph outputs (and every reference to them) in place: ``{old name: new name}``."""
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames:
        return
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for value in [*proto.graph.output, *proto.graph.value_info]:
        if value.name in renames:
            value.name = renames[value.name]


@functools.lru_cache(maxsize=1)
def _ops_table() -> dict[str, Any]:
    return json.loads(OPS_TABLE.read_text())


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



def check_for_tensorrt(model, trt_version: str) -> dict[str, Any]:
    """Run the ONNX checker and check ops/opset/zero points against TensorRT's ONNX parser.

    Returns:
        A report: checker result, opset, op counts, unknown ops (warnings).

    Raises:
        EdgecError: the checker fails, the opset is outside what the parser accepts, an op is
            unsupported, or a Q/DQ zero point is not 0.
    """
    onnx = require("onnx", "onnx", "ONNX checks")
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
    nonzero = [t for t, zps in zero_points_of(model).items() if np.any(zps != 0)]
    if nonzero:
        raise EdgecError(f"TensorRT needs every Q/DQ zero point to be 0; non-zero on {', '.join(nonzero[:5])}")
    return {"onnx_checker": "passed", "opset": opset, "tensorrt": str(trt_version), "op_table": table_version,
            "op_table_exact": table["exact"], "op_counts": dict(sorted(counts.items())), "unknown_ops": unknown}


