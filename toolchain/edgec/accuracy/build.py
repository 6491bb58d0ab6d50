"""``edgec build --accuracy-control``: the int8 artifact of a target with the fewest ops in float that
meet ``--max-accuracy-drop`` on the eval data.

The build pipeline hands this module to the targets (``BuildContext.int8``, a
:class:`edgec.targets.base.Int8Steps`); each target's int8 build calls in here instead of its plain
int8 quantization; the choice lands in the
manifest's ``accuracy_control`` (``ctx.extra``) and in the artifact record's ``float_ops_chosen``,
which the full-integer check reads to tell the ops kept float on purpose from ops without an int8
kernel.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from edgec.errors import EdgecError

log = logging.getLogger(__name__)


def _control(ctx, backend, artifact: str) -> tuple[frozenset[str], dict[str, Any]]:
    from edgec.accuracy.metric import Metric
    from edgec.accuracy.report import control_section
    from edgec.accuracy.search import Evaluator, control

    if ctx.reference is None or ctx.options.max_accuracy_drop is None:
        raise EdgecError("--accuracy-control needs --eval DATA and --max-accuracy-drop POINTS")
    metric = Metric(ctx.reference)
    evaluate = Evaluator(backend, metric, ctx.reference.data.x)
    result = control(evaluate, backend.candidates(), [o.id for o in backend.ops], ctx.options.max_accuracy_drop,
                     progress=ctx.progress)
    section = control_section(result, backend, metric, artifact)
    if backend.host_latency:  # the latency cost of each op kept in float, measured here
        from edgec.accuracy.remedies.control import float_latency_cost

        section["latency_cost"] = float_latency_cost(backend, result.chosen)
    ctx.extra["accuracy_control"] = section
    log.info("accuracy control: %d of %d ops kept in float, drop %.2f -> %.2f points (budget %g)",
             len(section["float_ops"]), len(backend.ops), section["before"]["drop_points"],
             section["after"]["drop_points"], ctx.options.max_accuracy_drop)
    chosen = [{"id": o["id"], "op": o["op"], "layer": o["layer"]} for o in section["float_ops"]]
    return result.chosen, {"float_ops_chosen": chosen}


def wanted(ctx) -> bool:
    """Whether the build asked for int8 remedies or accuracy control (else plain int8)."""
    from edgec.accuracy.remedies import Remedies

    return bool(ctx.options.accuracy_control or Remedies.from_options(ctx.options).any)


def keras_model(ctx, model=None):
    """The model a target converts, with the build's weight remedies applied
    (:func:`edgec.accuracy.remedies.apply.keras_model`)."""
    from edgec.accuracy.remedies.apply import keras_model as with_remedies

    return with_remedies(ctx, model)


def tflite_artifact(ctx, artifact: str = "model.tflite") -> tuple[bytes, dict[str, Any]]:
    """The TFLite int8 model of a build with remedies and/or accuracy control, and the artifact
    record's additions: remedies in order of cost first (:mod:`edgec.accuracy.remedies.control`),
    then the chosen ops deny-listed."""
    from edgec.accuracy.remedies import Remedies

    if Remedies.from_options(ctx.options).any or (ctx.options.accuracy_control and ctx.options.remedies):
        from edgec.accuracy.remedies.control import tflite_build

        return tflite_build(ctx, artifact)
    from edgec.targets.tflite.accuracy import TFLiteBackend

    threads = min(ctx.profile.threads or os.cpu_count() or 1, os.cpu_count() or 1)
    backend = TFLiteBackend(ctx.model, ctx.calib, io_dtype=ctx.profile.int8_io, output_names=ctx.output_names,
                            threads=threads, progress=ctx.progress)
    chosen, info = _control(ctx, backend, artifact)
    if not chosen:  # plain int8 meets the budget: the artifact a build without accuracy control writes
        from edgec.config import Precision
        from edgec.targets.tflite import convert

        return convert(ctx.model, Precision.INT8, calib=ctx.calib, io_dtype=ctx.profile.int8_io, progress=ctx.progress,
                       output_names=ctx.output_names), info
    return backend.build(chosen), info


def tensorrt_artifact(ctx, qdq, artifact: str = "model.onnx") -> tuple[Any, dict[str, Any]]:
    """The Q/DQ ONNX model (after the weight remedies in order of cost, unless --no-remedies) without
    Q/DQ around the chosen nodes, and the artifact record's additions."""
    from edgec.accuracy.remedies.tensorrt import choose
    from edgec.targets.tensorrt.accuracy import TensorRTBackend

    qdq, remedies = choose(ctx, qdq)
    layer_names = [layer.name for layer in getattr(ctx.model, "layers", [])]
    backend = TensorRTBackend(qdq, layer_names=layer_names, threads=os.cpu_count())
    chosen, info = _control(ctx, backend, artifact)
    if remedies is not None:
        section = ctx.extra["accuracy_control"]
        plain = remedies.pop("plain")
        section["before"] = {**plain.to_json(), "bytes": remedies.pop("bytes")}
        section["size_change_bytes"] = section["after"]["bytes"] - section["before"]["bytes"]
        section["size_change_share"] = round(section["size_change_bytes"] / section["before"]["bytes"], 6)
        section["remedies"] = remedies
        section["evaluations"] += len(remedies["tried"])
    return backend.proto(chosen), info
