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
from edgec.targets.tensorrt.onnx_io import _quiet, _require, opset_of
from edgec.targets.tensorrt.quantize import _zero_points

log = logging.getLogger(__name__)

OPS_TABLE = data_file("targets", "tensorrt_onnx_ops.json")


def export_onnx(model, opset: int, output_names: list[str] | None = None):
    """Export a tf-keras or signature model to an ONNX ModelProto with tf2onnx (dynamic batch
    dimension), its outputs in the model's order and named ``output_names`` (default: as the model
    names them, :func:`edgec.model_io.output_specs`).

    Raises:
        EdgecError: tf2onnx cannot convert an op at this opset (the message names it).
    """
    from edgec.model_io import SignatureModel, output_specs
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    tf2onnx = _require("tf2onnx", "tf2onnx", "ONNX export")
    inp = model.inputs[0]
    specs = output_specs(model)
    names = output_names or [o.name for o in specs]
    _restart_tf2onnx_names()
    try:
        with _quiet():
            if isinstance(model, SignatureModel):
                spec = (tf.TensorSpec([None, *inp.shape[1:]], inp.dtype, name=model.input_name),)
                func = tf.function(lambda x: [model(x)[o.key] for o in specs])
                proto, _ = tf2onnx.convert.from_function(func, input_signature=spec, opset=opset)
                produced = [o.name for o in proto.graph.output]  # the list above, in its order
                renames = dict(zip(produced, names, strict=True))
            else:
                name = model.input_names[0] if getattr(model, "input_names", None) else "input"
                spec = (tf.TensorSpec([None, *inp.shape[1:]], inp.dtype, name=name),)
                proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
                renames = {o.key: n for o, n in zip(specs, names, strict=True)}  # tf2onnx: output layer names
    except Exception as exc:  # tf2onnx raises ValueError/RuntimeError/its own types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgecError(f"ONNX export with tf2onnx at opset {opset} failed: {reason[:400]}") from exc
    rename_outputs(proto, renames)
    got = [o.name for o in proto.graph.output]
    if got != names:
        raise EdgecError(f"the ONNX export's outputs are {got}, expected the model's {names}")
    return proto


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


